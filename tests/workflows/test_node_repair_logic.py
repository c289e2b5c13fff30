"""Node auto-repair logic on the time-skipping server (activities replaced by name: ``FakeFleet``).

A node in ``RepairFleet.down`` is NotReady in the tenant API until its VM is created again or
restarted with a new restart token (what a reboot does to a hung kubelet). Each test checks what the
entity decided and when, in the server's skipped time.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from models.cluster import ClusterStatus, OperationKind, OperationState
from models.node_health import NodeRepair
from models.operations import ConfigureRequest
from models.spec import ClusterSpec
from tests.fakes_repair import RepairFleet
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import WORKFLOWS, build_worker, sandbox_runner
from workflows.cluster import ClusterWorkflow, render_status

CHECK = timedelta(minutes=1)
AFTER = timedelta(minutes=5)
SETTINGS: dict[str, Any] = {"drift_check": {"interval": "1m"}, "node_repair": {"unhealthy_after": "5m"}}


async def _status(handle: WorkflowHandle[Any, Any]) -> ClusterStatus:
    status: ClusterStatus = await handle.query(ClusterWorkflow.get_status)
    return status


async def _until_settled(handle: WorkflowHandle[Any, Any]) -> ClusterStatus:
    """Let running activities (real time) finish: the status once no operation runs."""
    for _ in range(200):
        status = await _status(handle)
        if status.current is None:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"an operation kept running: {status.current}")


def _repairs(status: ClusterStatus) -> list[str]:
    return [op.message or op.requested_by for op in status.recent if op.kind is OperationKind.REPAIR_NODE]


async def _run(
    env: WorkflowEnvironment, spec: ClusterSpec, backend: RepairFleet
) -> tuple[WorkflowHandle[Any, Any], Any]:
    queue = f"q-{uuid.uuid4()}"
    worker = build_worker(env.client, queue, backend.activities())
    await worker.__aenter__()
    handle = await start_entity(env.client, spec, queue)
    await wait_settled(handle)
    return handle, worker


async def _end(handle: WorkflowHandle[Any, Any], worker: Any) -> None:
    await handle.terminate("the test is over")  # its checks would go on: pending timers stop time skipping
    await worker.__aexit__(None, None, None)


async def test_worker_unhealthy_longer_than_the_setting_is_replaced(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend = time_skipping_env, RepairFleet()
    spec = small_kvm(**SETTINGS)
    handle, worker = await _run(env, spec, backend)
    try:
        backend.down.add("worker-1")
        await env.sleep(AFTER - timedelta(seconds=30))  # first seen within a check; not due yet
        status = await _until_settled(handle)
        assert "worker-1" in status.node_health.unhealthy and "worker-1" in status.nodes
        assert not _repairs(status)
        await env.sleep(CHECK + timedelta(seconds=45))  # the setting plus one check interval, from going bad
        status = await _until_settled(handle)
        assert sorted(status.nodes) == ["master-0", "worker-0", "worker-2"], status.nodes
        op = status.recent[0]
        assert op.kind is OperationKind.REPAIR_NODE and op.state is OperationState.SUCCEEDED, op
        assert op.message == "worker-1 replaced by worker-2"
        assert [s.name for s in op.steps] == ["plan", "add", "drain", "remove"]
        # surge: the new worker is created before the old one goes, and the old one's certificates go with it
        calls = backend.repair_calls()
        created = calls.index(("kvm.ensure_node", f"worker-2@{spec.kubernetes_version}"))
        removed = calls.index(("kvm.ensure_node_absent", "worker-1"))
        assert created < removed < calls.index(("pki.ensure_node_certificates_absent", "worker-1"))
        assert "node-worker-1" not in status.certificates and "node-worker-2" in status.certificates
        assert status.node_health.unhealthy == {} and status.node_health.last_repair == "worker-1 replaced by worker-2"
        assert status.spec.workers.count == 2
        # both histories replay on the current code (determinism of the new paths)
        converter, runner = pydantic_data_converter, sandbox_runner()
        replayer = Replayer(workflows=WORKFLOWS, data_converter=converter, workflow_runner=runner)
        for workflow_id in (handle.id, op.workflow_id):
            history = await env.client.get_workflow_handle(workflow_id).fetch_history()
            replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            assert replayed.replay_failure is None, f"{workflow_id}: {replayed.replay_failure}"
    finally:
        await _end(handle, worker)


async def test_node_that_recovers_before_the_setting_is_not_repaired(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend = time_skipping_env, RepairFleet()
    spec = small_kvm(**SETTINGS)
    handle, worker = await _run(env, spec, backend)
    try:
        backend.down.add("worker-0")
        await env.sleep(timedelta(minutes=3))
        status = await _until_settled(handle)
        assert "worker-0" in status.node_health.unhealthy
        backend.down.discard("worker-0")
        await env.sleep(timedelta(minutes=10))
        status = await _until_settled(handle)
        assert sorted(status.nodes) == ["master-0", "worker-0", "worker-1"]
        assert not _repairs(status) and status.node_health.unhealthy == {}
        assert ("kvm.ensure_node_absent", "worker-0") not in backend.repair_calls()
    finally:
        await _end(handle, worker)


async def test_three_of_six_unhealthy_repairs_nothing_and_says_why(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend = time_skipping_env, RepairFleet()
    spec = small_kvm(
        masters={"count": 3, "cpu": 2, "memory": "4Gi"}, workers={"count": 3, "cpu": 2, "memory": "4Gi"}, **SETTINGS
    )
    handle, worker = await _run(env, spec, backend)
    try:
        calls_before = len(backend.repair_calls())
        backend.down |= {"worker-0", "worker-1", "worker-2"}
        await env.sleep(timedelta(minutes=15))
        status = await _until_settled(handle)
        assert not _repairs(status) and len(backend.repair_calls()) == calls_before
        held = status.node_health.held
        assert "short-circuited: 3 of 6 nodes unhealthy (worker-0, worker-1, worker-2)" in held, held
        assert "max_unhealthy 40%" in held
        assert sorted(status.node_health.unhealthy) == ["worker-0", "worker-1", "worker-2"]
        # the UI's current details (what render_status makes of the status) carry the same line
        assert "node auto-repair: short-circuited: 3 of 6 nodes unhealthy" in render_status(status)
        # one recovers: 2 of 6 is within the share. The two failed 15 minutes ago, but the others may
        # just be slower to come back: they are due unhealthy_after from the lift, then repaired one at a time
        backend.down.discard("worker-2")
        await env.sleep(timedelta(minutes=3))
        status = await _until_settled(handle)
        assert not _repairs(status) and len(backend.repair_calls()) == calls_before
        assert "short-circuit lifted at" in status.node_health.held, status.node_health.held
        assert "worker-0, worker-1 due 5m from then" in status.node_health.held
        await env.sleep(timedelta(minutes=4))
        status = await _until_settled(handle)
        await env.sleep(timedelta(minutes=3))
        status = await _until_settled(handle)
        repaired = sorted(_repairs(status))
        assert repaired == ["worker-0 replaced by worker-3", "worker-1 replaced by worker-4"], repaired
    finally:
        await _end(handle, worker)


async def test_masters_are_restarted_one_at_a_time(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend = time_skipping_env, RepairFleet()
    spec = small_kvm(
        masters={"count": 5, "cpu": 2, "memory": "4Gi"}, workers={"count": 3, "cpu": 2, "memory": "4Gi"}, **SETTINGS
    )
    handle, worker = await _run(env, spec, backend)
    try:
        start = len(backend.calls)
        backend.down |= {"master-1", "master-3"}  # 3 of 5 healthy: quorum holds, repairs may run
        await env.sleep(AFTER + CHECK * 3)
        status = await _until_settled(handle)
        repairs = [op for op in status.recent if op.kind is OperationKind.REPAIR_NODE]  # newest first
        assert [op.message for op in repairs] == ["master-3 restarted in place", "master-1 restarted in place"]
        assert all(op.state is OperationState.SUCCEEDED for op in repairs)
        assert [s.name for s in repairs[0].steps] == ["plan", "restart", "wait-ready"]
        assert sorted(status.nodes) == sorted(spec.node_names())  # restarted in place, none replaced
        # the second master is touched only once the first is Ready again
        version = spec.kubernetes_version
        calls = [c for c in backend.calls[start:] if c[0] in ("kvm.ensure_node", "tenant.wait_node_registered")]
        first = calls.index(("kvm.ensure_node", f"master-1@{version}"))
        ready = calls.index(("tenant.wait_node_registered", f"master-1@{version}"), first)
        second = calls.index(("kvm.ensure_node", f"master-3@{version}"))
        assert first < ready < second
        assert repairs[1].finished_at is not None and repairs[0].started_at is not None
        assert repairs[1].finished_at <= repairs[0].started_at
        assert status.node_health.last_repair == "master-3 restarted in place"
    finally:
        await _end(handle, worker)


async def test_no_master_is_repaired_without_quorum(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend = time_skipping_env, RepairFleet()
    spec = small_kvm(
        masters={"count": 3, "cpu": 2, "memory": "4Gi"}, workers={"count": 6, "cpu": 2, "memory": "4Gi"}, **SETTINGS
    )
    handle, worker = await _run(env, spec, backend)
    try:
        calls_before = len(backend.node_calls("kvm.ensure_node"))
        backend.down |= {"master-0", "master-1"}  # 2 of 9 nodes (within the share), but 1 of 3 masters healthy
        await env.sleep(AFTER + CHECK * 3)
        status = await _until_settled(handle)
        assert not _repairs(status)
        assert len(backend.node_calls("kvm.ensure_node")) == calls_before
        held = status.node_health.held
        assert "master master-0 not repaired: only 1 of 3 masters are healthy" in held, held
        assert "master master-1 not repaired" in held and "quorum" in held
    finally:
        await _end(handle, worker)


async def test_a_replacement_that_never_becomes_ready_is_removed_and_the_old_worker_stays(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, backend = time_skipping_env, RepairFleet()
    spec = small_kvm(**SETTINGS)
    handle, worker = await _run(env, spec, backend)
    try:
        backend.down.add("worker-1")
        backend.never_ready.add("worker-2")  # the replacement does not come up
        await env.sleep(AFTER + CHECK + timedelta(seconds=15))
        status = await _until_settled(handle)
        failed = status.recent[0]
        assert failed.kind is OperationKind.REPAIR_NODE and failed.state is OperationState.FAILED, failed
        assert "replacement worker-2 of unhealthy worker-1 did not become Ready" in failed.message
        assert sorted(status.nodes) == ["master-0", "worker-0", "worker-1"]  # nothing lost, nothing doubled
        assert "worker-2" not in backend.host_versions()
        assert ("pki.ensure_node_certificates_absent", "worker-2") in backend.repair_calls()
        assert status.node_health.last_repair.startswith("worker-1: failed: ")
        # tried again only once it has been unhealthy for the setting again: no churn meanwhile
        assert status.node_health.unhealthy["worker-1"].since > status.created_at  # type: ignore[operator]
        tries = [c for c in backend.repair_calls() if c[0] == "kvm.ensure_node" and c[1].startswith("worker-2")]
        assert len(tries) == 1
        backend.never_ready.discard("worker-2")
        await env.sleep(AFTER + CHECK)
        status = await _until_settled(handle)
        assert status.recent[0].message == "worker-1 replaced by worker-2", status.recent[0]
        assert sorted(status.nodes) == ["master-0", "worker-0", "worker-2"]
    finally:
        await _end(handle, worker)


async def test_paused_repair_reports_and_resumes_through_configure(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend = time_skipping_env, RepairFleet()
    spec = small_kvm(**SETTINGS)
    handle, worker = await _run(env, spec, backend)
    try:
        paused = NodeRepair(unhealthy_after=AFTER, paused=True)
        result = await handle.execute_update(ClusterWorkflow.configure, ConfigureRequest(node_repair=paused))
        assert result.changed == ["node_repair"]
        backend.down.add("worker-0")
        await env.sleep(AFTER + CHECK * 3)
        status = await _until_settled(handle)
        assert not _repairs(status) and "worker-0 unhealthy for" in status.node_health.held
        assert "node_repair is paused" in status.node_health.held
        resumed = paused.model_copy(update={"paused": False})
        await handle.execute_update(ClusterWorkflow.configure, ConfigureRequest(node_repair=resumed))
        await env.sleep(CHECK + timedelta(seconds=5))  # long due: repaired at the next look
        status = await _until_settled(handle)
        assert _repairs(status) == ["worker-0 replaced by worker-2"]
    finally:
        await _end(handle, worker)
