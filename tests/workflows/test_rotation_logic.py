"""Certificate and CA rotation as workflow logic, on the time-skipping server with a simulated PKI.

What is checked: only what is due is re-issued and only the nodes that load it restart, one at a
time, masters first, each ready before the next; a CA rotation never leaves a node presenting a
leaf that another node does not trust, and a rotation interrupted halfway converges when asked
again; a rotation that comes due during a long operation waits for it; the schedule's pause shows.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.pki.rotation_schedule import RotationSchedules
from models.cluster import ClusterPhase, OperationKind, OperationState, StepState
from models.errors import Conflict
from models.operations import RotateCaRequest, RotateCertificatesRequest
from models.pki import SignUserCertificateRequest, certificate_requests
from models.schedules import ScheduledRotationInput, SyncScheduleRequest
from models.spec import ClusterSpec
from tests.fakes_rotation import Loaded, SimulatedPki, eventually
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow
from workflows.node_rolls import restart_token
from workflows.rotate_certificates import node_serials
from workflows.scheduled_rotation import ScheduledRotationWorkflow

MASTERS = ["master-0", "master-1", "master-2"]
WORKERS = ["worker-0", "worker-1"]


def three_masters() -> ClusterSpec:
    return small_kvm(masters={"count": 3, "cpu": 2, "memory": "4Gi"})


def worker(env: WorkflowEnvironment, backend: SimulatedPki, queue: str) -> Any:
    # The schedule's request to the entity is the real activity (a Temporal update on this server).
    return build_worker(
        env.client, queue, [*backend.activities(), RotationSchedules(env.client, queue).request_rotation]
    )


def one_at_a_time(calls: list[tuple[str, str]]) -> list[str]:
    """The nodes restarted, in order; fails unless each restart is followed by a wait for that node alone."""
    order = []
    relevant = [(n, d) for n, d in calls if n in ("kvm.restart_node", "kvm.wait_nodes_ready")]
    for (name, detail), (next_name, next_detail) in itertools.pairwise(relevant):
        if name == "kvm.restart_node":
            node = detail.split(":")[0]
            assert (next_name, next_detail) == ("kvm.wait_nodes_ready", node), f"{node} not waited for alone"
            order.append(node)
    return order


async def test_nothing_due_restarts_nothing_and_forced_rolls_one_node_at_a_time(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    backend, spec, queue = SimulatedPki(), three_masters(), f"q-{uuid.uuid4()}"
    async with worker(time_skipping_env, backend, queue):
        handle = await start_entity(time_skipping_env.client, spec, queue)
        created = await wait_settled(handle)
        mark = len(backend.calls)

        idle = await handle.execute_update(ClusterWorkflow.rotate_certificates, RotateCertificatesRequest())
        assert idle.reissued == [] and idle.restarted_nodes == []
        assert "kvm.restart_node" not in backend.names()[mark:]
        status = await handle.query(ClusterWorkflow.get_status)
        rotation = status.recent[0]
        assert rotation.kind is OperationKind.ROTATE_CERTIFICATES and rotation.state is OperationState.SUCCEEDED
        assert rotation.step("reissue").state is StepState.DONE
        assert rotation.step("restart").state is StepState.SKIPPED
        assert "no node restarts" in rotation.step("restart").message
        assert status.certificates == created.certificates

        mark = len(backend.calls)
        forced = await handle.execute_update(
            ClusterWorkflow.rotate_certificates, RotateCertificatesRequest(force=True, requested_by="alice")
        )
        status = await handle.query(ClusterWorkflow.get_status)

    requests = certificate_requests(spec)
    assert sorted(forced.reissued) == sorted(r.name for r in requests)
    assert forced.restarted_nodes == MASTERS + WORKERS
    assert one_at_a_time(backend.calls[mark:]) == MASTERS + WORKERS
    # each node's token stands for exactly the serials it must load
    serials = {r.name: r.serial for r in forced.certificates}
    tokens = dict(d.split(":") for n, d in backend.calls[mark:] if n == "kvm.restart_node")
    assert tokens == {n: restart_token(node_serials(requests, serials, n)) for n in MASTERS + WORKERS}
    assert len(set(tokens.values())) == len(tokens)
    assert {n: r.serial for n, r in status.certificates.items()} == serials
    assert status.earliest_expiry == min(r.not_after for r in forced.certificates)
    assert status.recent[0].requested_by == "alice" and status.recent[0].progress.done == 5
    assert backend.violations == []


async def test_only_the_nodes_that_load_a_due_certificate_restart(time_skipping_env: WorkflowEnvironment) -> None:
    backend, spec, queue = SimulatedPki(), three_masters(), f"q-{uuid.uuid4()}"
    async with worker(time_skipping_env, backend, queue):
        handle = await start_entity(time_skipping_env.client, spec, queue)
        await wait_settled(handle)
        # Two leaves are nearly expired: the kubelet's of worker-1, and the API server's (all masters).
        for name in ("node-worker-1", "apiserver"):
            record = backend.leaves[name]
            backend.leaves[name] = record.model_copy(update={"not_after": record.not_before + timedelta(hours=1)})

        result = await handle.execute_update(ClusterWorkflow.rotate_certificates, RotateCertificatesRequest())

    assert sorted(result.reissued) == ["apiserver", "node-worker-1"]
    assert result.restarted_nodes == [*MASTERS, "worker-1"]
    assert one_at_a_time(backend.calls) == [*MASTERS, "worker-1"]


async def test_ca_rotation_keeps_every_node_trusting_every_peer(time_skipping_env: WorkflowEnvironment) -> None:
    backend, spec, queue = SimulatedPki(), three_masters(), f"q-{uuid.uuid4()}"
    async with worker(time_skipping_env, backend, queue):
        handle = await start_entity(time_skipping_env.client, spec, queue)
        await wait_settled(handle)
        mark = len(backend.calls)

        result = await handle.execute_update(ClusterWorkflow.rotate_ca, RotateCaRequest(requested_by="alice"))
        status = await handle.query(ClusterWorkflow.get_status)

    nodes = MASTERS + WORKERS
    assert result.ca_issuer_id == status.ca_issuer_id == "issuer-2" == backend.default_issuer
    assert {r.issuer_id for r in status.certificates.values()} == {"issuer-2"}
    assert backend.bundle == ["issuer-2"]
    assert all(loaded == Loaded({"issuer-2"}, {"issuer-2"}) for loaded in backend.loaded.values())
    assert backend.violations == []
    # the phases, in order: trust first, then leaves, then the old CA goes, a roll after each
    pki_calls = [(n, d) for n, d in backend.calls[mark:] if n.startswith("pki.")]
    assert pki_calls == [
        ("pki.ensure_next_issuer", "issuer-1"),
        ("pki.publish_trust_bundle", "issuer-1,issuer-2"),
        ("pki.set_default_issuer", "issuer-2"),
        ("pki.ensure_certificates", f"{len(certificate_requests(spec))} force=False"),
        ("pki.publish_trust_bundle", "issuer-2"),
    ]
    assert one_at_a_time(backend.calls[mark:]) == nodes * 3
    names = backend.names()[mark:]
    rolls = [i for i, n in enumerate(names) if n == "kvm.restart_node"]
    last_publish = len(names) - 1 - names[::-1].index("pki.publish_trust_bundle")
    assert max(rolls[:5]) < names.index("pki.set_default_issuer")  # every node trusts both before a new leaf
    assert max(rolls[5:10]) < last_publish < min(rolls[10:])  # new leaves loaded everywhere before the drop
    op = status.recent[0]
    assert op.kind is OperationKind.ROTATE_CA and op.state is OperationState.SUCCEEDED
    assert [s.name for s in op.steps] == [
        "new-ca",
        "publish-bundle",
        "roll-trust",
        "reissue",
        "roll-leaves",
        "drop-old-ca",
        "roll-final",
    ]
    assert all(s.state is StepState.DONE for s in op.steps)


def test_the_trust_check_is_not_vacuous() -> None:
    """The order a naive CA rotation takes (new leaves before the new CA is trusted) is caught."""
    backend = SimulatedPki()
    backend.loaded = {
        "master-0": Loaded(leaf_issuers={"issuer-2"}, trust={"issuer-2"}),  # restarted with a new leaf
        "worker-0": Loaded(leaf_issuers={"issuer-1"}, trust={"issuer-1"}),  # not yet
    }
    backend.check("naive")
    assert len(backend.violations) == 2


@pytest.mark.parametrize(
    ("interruption", "failed_step", "rolls_on_resume", "skipped_on_resume"),
    [
        # a node does not come back during the first roll: the trust roll resumes where it stopped
        ("kvm.wait_nodes_ready:master-1#1", "roll-trust", 3 + 5 + 5, []),
        # the bundle cannot be written when the old CA is dropped: leaves are not rolled again
        ("pki.publish_trust_bundle:issuer-2", "drop-old-ca", 5, ["publish-bundle", "roll-trust"]),
        # a node does not come back during the final roll: nothing rolls again
        ("kvm.wait_nodes_ready:worker-1#3", "roll-final", 0, ["publish-bundle", "roll-trust", "roll-leaves"]),
    ],
)
async def test_interrupted_ca_rotation_converges_when_asked_again(
    time_skipping_env: WorkflowEnvironment,
    interruption: str,
    failed_step: str,
    rolls_on_resume: int,
    skipped_on_resume: list[str],
) -> None:
    backend, spec, queue = SimulatedPki(), three_masters(), f"q-{uuid.uuid4()}"
    backend.fail_once[interruption] = ApplicationError("it broke", type=Conflict.__name__, non_retryable=True)
    async with worker(time_skipping_env, backend, queue):
        handle = await start_entity(time_skipping_env.client, spec, queue)
        created = await wait_settled(handle)

        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ClusterWorkflow.rotate_ca, RotateCaRequest())
        failed = await handle.query(ClusterWorkflow.get_status)
        rolls_before, issued_before = len(backend.restarts), backend.serial

        again = await handle.execute_update(ClusterWorkflow.rotate_ca, RotateCaRequest())
        status = await handle.query(ClusterWorkflow.get_status)

    op = failed.recent[0]
    assert failed.phase is ClusterPhase.READY and op.state is OperationState.FAILED
    assert op.step(failed_step).state is StepState.FAILED and "it broke" in op.message
    assert failed.ca_issuer_id == "issuer-1"  # recorded only once a CA rotation completes
    # asked again: the same new CA (no third), the phases done before are not repeated
    assert sorted(backend.issuers) == ["issuer-1", "issuer-2"]
    assert again.ca_issuer_id == status.ca_issuer_id == "issuer-2"
    assert len(backend.restarts) - rolls_before == rolls_on_resume
    if failed_step != "roll-trust":
        assert backend.serial == issued_before  # every leaf was already from the new CA
    else:
        assert backend.serial == issued_before + len(created.certificates)
    resumed = status.recent[0]
    assert [s.name for s in resumed.steps if s.state is StepState.SKIPPED] == skipped_on_resume
    assert all(s.state in (StepState.DONE, StepState.SKIPPED) for s in resumed.steps)
    assert {r.issuer_id for r in status.certificates.values()} == {"issuer-2"}
    assert backend.bundle == ["issuer-2"] and backend.violations == []


async def test_rotation_due_during_a_long_operation_waits_then_runs(time_skipping_env: WorkflowEnvironment) -> None:
    backend, spec, queue = SimulatedPki(), small_kvm(), f"q-{uuid.uuid4()}"
    backend.hold_ready = threading.Event()  # the create's "wait until nodes ready" takes as long as the test says
    async with worker(time_skipping_env, backend, queue):
        handle = await start_entity(time_skipping_env.client, spec, queue)
        await eventually(lambda: "kvm.wait_nodes_ready" in backend.names(), what="create to reach its wait")

        scheduled = await time_skipping_env.client.start_workflow(
            ScheduledRotationWorkflow.run,
            ScheduledRotationInput(cluster_id=spec.id),
            id=f"cert-rotation/{spec.id}-due-during-create",
            task_queue=queue,
        )
        await _update_accepted(handle)
        # accepted by the entity, but queued: the create is still the current operation
        status = await handle.query(ClusterWorkflow.get_status)
        assert status.current is not None and status.current.kind is OperationKind.CREATE
        assert backend.names().count("pki.ensure_certificates") == 1

        backend.hold_ready.set()
        result = await scheduled.result()
        status = await handle.query(ClusterWorkflow.get_status)

    names = backend.names()
    rotation_issue = len(names) - 1 - names[::-1].index("pki.ensure_certificates")
    assert rotation_issue > names.index("kvm.wait_nodes_ready")
    rotation, create = status.recent[0], status.recent[1]
    assert (rotation.kind, create.kind) == (OperationKind.ROTATE_CERTIFICATES, OperationKind.CREATE)
    assert rotation.requested_by == "schedule" and rotation.state is OperationState.SUCCEEDED
    assert rotation.started_at is not None and create.finished_at is not None
    assert rotation.started_at >= create.finished_at
    assert result.reissued == []  # issued moments ago by the create: nothing is due yet


async def _update_accepted(handle: WorkflowHandle[Any, Any]) -> None:
    async def accepted() -> bool:
        history = await handle.fetch_history()
        return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED for e in history.events)

    for _ in range(200):
        if await accepted():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the rotation request never reached the entity")


async def test_pause_shows_in_status_and_signing_waits_for_no_operation(time_skipping_env: WorkflowEnvironment) -> None:
    backend, spec, queue = SimulatedPki(), small_kvm(), f"q-{uuid.uuid4()}"
    async with worker(time_skipping_env, backend, queue):
        handle = await start_entity(time_skipping_env.client, spec, queue)
        status = await wait_settled(handle)
        assert status.next_rotation is not None

        backend.schedule_paused = True  # as 'tenantctl schedule pause' does through the Schedules API
        paused = await handle.execute_update(ClusterWorkflow.sync_schedule, SyncScheduleRequest())
        assert paused.paused and paused.next_rotation is None
        assert (await handle.query(ClusterWorkflow.get_status)).next_rotation is None
        backend.schedule_paused = False
        resumed = await handle.execute_update(ClusterWorkflow.sync_schedule, SyncScheduleRequest())
        assert not resumed.paused and resumed.next_rotation is not None

        # Signing is no operation: it is answered while a rotation holds the cluster...
        backend.hold_ready = threading.Event()
        backend.leaves["node-worker-0"] = backend.leaves["node-worker-0"].model_copy(
            update={"not_after": backend.leaves["node-worker-0"].not_before}
        )
        rotation = await handle.start_update(
            ClusterWorkflow.rotate_certificates,
            RotateCertificatesRequest(),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await eventually(lambda: "kvm.wait_nodes_ready" in backend.names()[-1:], what="the rotation's wait")
        signed = await handle.execute_update(
            ClusterWorkflow.sign_user_certificate,
            SignUserCertificateRequest(csr_pem="csr", ttl=timedelta(days=30)),
        )
        assert signed.ttl_capped
        backend.hold_ready.set()
        await rotation.result()

        # ...but refused during a CA rotation: a certificate from the outgoing CA would soon stop working.
        backend.hold_ready = threading.Event()
        ca_rotation = await handle.start_update(
            ClusterWorkflow.rotate_ca, RotateCaRequest(), wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        await eventually(lambda: "kvm.wait_nodes_ready" in backend.names()[-1:], what="the CA rotation's first roll")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ClusterWorkflow.sign_user_certificate, SignUserCertificateRequest(csr_pem="x"))
        assert "being rotated" in str(refused.value.cause)
        backend.hold_ready.set()
        await ca_rotation.result()
