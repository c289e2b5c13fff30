"""Drift check and repair as workflow logic (time-skipping server, activities replaced by name).

An in-sync check runs the three observes and nothing else, restarts nothing and leaves no line in
``recent``; drift is repaired through the create's ensure steps (a re-issued certificate rolls the
nodes one at a time); a dry run changes nothing; a check asked for during another operation waits
for it and says so; a paused periodic check does not run.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from models.cluster import OperationKind
from models.drift import CheckOutcome
from models.operations import ConfigureRequest, RotateCertificatesRequest
from models.provider import EnsureResult, NodeRef
from models.reconcile import ReconcileRequest
from models.spec import DriftCheck
from tests.fakes import FakeBackends, typed_activity
from tests.fakes_rotation import eventually
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow

OBSERVES = ["kvm.observe", "pki.observe", "schedule.observe"]


async def _events(handle: Any) -> int:
    return len((await handle.fetch_history()).events)


async def test_in_sync_check_observes_only_and_restarts_nothing(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend, queue = time_skipping_env, FakeBackends(), f"q-{uuid.uuid4()}"
    spec = small_kvm(drift_check={"paused": True})  # on demand only: the counts below are this check's
    async with build_worker(env.client, queue, backend.activities()):
        handle = await start_entity(env.client, spec, queue)
        before_status = await wait_settled(handle)
        before, calls_before = await _events(handle), len(backend.calls)

        result = await handle.execute_update(ClusterWorkflow.reconcile, ReconcileRequest(requested_by="test"))
        after_status = await handle.query(ClusterWorkflow.get_status)
        added = await _events(handle) - before

    assert result.in_sync and result.drift == [] and result.repaired == [] and result.restarted == []
    assert sorted(n for n, _ in backend.calls[calls_before:]) == sorted(OBSERVES)  # three reads, no write
    assert after_status.last_check is not None and after_status.last_check.outcome is CheckOutcome.IN_SYNC
    assert [op.kind for op in after_status.recent] == [op.kind for op in before_status.recent]  # no line
    assert after_status.certificates == before_status.certificates
    print(f"\nin-sync check: {len(OBSERVES)} activities, {added} events added to the entity's history")  # noqa: T201
    # the update (accepted, completed), the child (5), its workflow tasks, and the memo 'tenantctl list'
    # reads (one WorkflowPropertiesModified: the last check's time changed)
    assert added <= 18


async def test_drift_is_reported_by_a_dry_run_and_repaired_by_the_create_steps(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, backend, queue = time_skipping_env, FakeBackends(), f"q-{uuid.uuid4()}"
    spec = small_kvm(drift_check={"paused": True})
    async with build_worker(env.client, queue, backend.activities()):
        handle = await start_entity(env.client, spec, queue)
        await wait_settled(handle)
        backend.objects -= {"deployment/worker-1", "secret/cert-apiserver"}
        backend.schedules.clear()
        backend.objects.add("configmap/stray")
        start = len(backend.calls)

        dry = await handle.execute_update(ClusterWorkflow.reconcile, ReconcileRequest(dry_run=True))
        assert sorted(str(i) for i in dry.drift) == [
            "extra configmap/stray",
            "missing deployment/worker-1",
            f"missing schedule/cert-rotation/{spec.id}",
            "missing secret/cert-apiserver",
        ]
        assert sorted(n for n, _ in backend.calls[start:]) == sorted(OBSERVES)  # a dry run only looks
        status = await handle.query(ClusterWorkflow.get_status)
        assert status.last_check is not None and status.last_check.outcome is CheckOutcome.DRIFT

        start = len(backend.calls)
        fixed = await handle.execute_update(ClusterWorkflow.reconcile, ReconcileRequest(requested_by="test"))
        calls = backend.calls[start:]
        again = await handle.execute_update(ClusterWorkflow.reconcile, ReconcileRequest())
        status = await handle.query(ClusterWorkflow.get_status)

    names = [n for n, _ in calls]
    assert ("kvm.ensure_node", "worker-1") in calls and names.count("kvm.ensure_node") == 1
    assert "pki.ensure_certificates" in names and "schedule.ensure_rotation_schedule" in names
    assert "kvm.ensure_foundation" not in names and "kvm.ensure_endpoint" not in names  # only what differs
    assert fixed.repaired and "node worker-1" in fixed.repaired and "rotation schedule" in fixed.repaired
    # the fake re-issues every key pair it is asked for: each node restarts, one at a time
    rolls = [(n, d) for n, d in calls if n in ("kvm.restart_node", "kvm.wait_nodes_ready")]
    assert [n for n, _ in rolls] == ["kvm.restart_node", "kvm.wait_nodes_ready"] * len(spec.node_names())
    assert fixed.restarted == spec.node_names()
    # the extra object is reported, never deleted; everything else is back
    assert [str(i) for i in again.drift] == ["extra configmap/stray"] and again.repaired == []
    assert status.recent[0].kind is OperationKind.RECONCILE  # a repair is an operation in the record
    assert status.last_check is not None and status.last_check.outcome is CheckOutcome.DRIFT


async def test_a_check_waits_behind_a_running_operation_and_says_so(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend, queue = time_skipping_env, FakeBackends(), f"q-{uuid.uuid4()}"
    release, restarting = threading.Event(), threading.Event()

    @typed_activity("kvm.restart_node", NodeRef, EnsureResult)
    def slow_restart(arg: NodeRef) -> EnsureResult:
        backend._record("kvm.restart_node", arg.node)
        restarting.set()
        release.wait(30)
        return EnsureResult()

    activities: list[Callable[..., Any]] = [
        fn for fn in backend.activities() if getattr(fn, "__name__", "") != "restart_node"
    ]
    spec = small_kvm(drift_check={"paused": True})
    async with build_worker(env.client, queue, [*activities, slow_restart]):
        handle = await start_entity(env.client, spec, queue)
        await wait_settled(handle)
        rotation = await handle.start_update(
            ClusterWorkflow.rotate_certificates,
            RotateCertificatesRequest(force=True),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await eventually(restarting.is_set, what="the rotation to restart a node")
        check = await handle.start_update(
            ClusterWorkflow.reconcile, ReconcileRequest(), wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        await asyncio.sleep(0.3)
        assert "kvm.observe" not in backend.names()  # queued: nothing observed while the rotation runs
        release.set()
        await rotation.result()
        result = await check.result()
        status = await handle.query(ClusterWorkflow.get_status)

    assert result.waited_for.startswith(f"{OperationKind.ROTATE_CERTIFICATES} (")
    assert result.in_sync
    first_observe = backend.names().index("kvm.observe")
    assert all(n != "kvm.restart_node" for n in backend.names()[first_observe:])
    assert status.last_check is not None and status.last_check.outcome is CheckOutcome.IN_SYNC


async def test_periodic_check_runs_every_interval_and_pauses(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend, queue = time_skipping_env, FakeBackends(), f"q-{uuid.uuid4()}"
    spec = small_kvm(drift_check={"interval": "5m"})
    async with build_worker(env.client, queue, backend.activities()):
        handle = await start_entity(env.client, spec, queue)
        await wait_settled(handle)
        status = await handle.query(ClusterWorkflow.get_status)
        assert status.next_check is not None
        await env.sleep(timedelta(minutes=16))
        checks = backend.names().count("kvm.observe")
        assert checks == 3, backend.names()
        status = await handle.query(ClusterWorkflow.get_status)
        assert status.last_check is not None and status.last_check.outcome is CheckOutcome.IN_SYNC
        assert status.last_check.drift == [] and status.next_check is not None

        await handle.execute_update(
            ClusterWorkflow.configure,
            ConfigureRequest(drift_check=DriftCheck(interval=timedelta(minutes=5), paused=True)),
        )
        await env.sleep(timedelta(minutes=30))
        assert backend.names().count("kvm.observe") == checks  # paused: no check
        assert (await handle.query(ClusterWorkflow.get_status)).next_check is None
