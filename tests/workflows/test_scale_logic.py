"""Scaling the worker pool as workflow logic, on the time-skipping server with an in-memory fleet.

Up: new workers at the next free index, certificates before VMs, then Ready. Down: newest first,
one at a time, through the node-removal path (drain, VM, Node, certificates revoked and deleted).
Refused requests change nothing and say why; a drain a budget blocks pauses naming the node and
its pods, and resume finishes the scale.
"""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase, NodeRecord, OperationKind, OperationState
from models.operations import DeleteRequest, ScaleRequest, ScaleResult, UpgradeAction, UpgradeOutcome
from models.spec import ClusterSpec
from tests.fakes_upgrade import FakeFleet
from tests.workflows.helpers import wait_settled
from tests.workflows.test_upgrade_logic import control, created, paused, status_when
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow
from workflows.scale import plan_scale

OLD = "1.32.4"


def pool(workers: int = 3) -> ClusterSpec:
    from tests.specs import small_kvm

    return small_kvm(
        masters={"count": 1, "cpu": 2, "memory": "4Gi"},
        workers={"count": workers, "cpu": 2, "memory": "4Gi"},
    )


def per_node(fleet: FakeFleet, since: int, *names: str) -> list[tuple[str, str]]:
    return [(n, d) for n, d in fleet.calls[since:] if n in names]


def test_plan_next_free_index_and_newest_first() -> None:
    spec = pool()
    nodes = [
        NodeRecord(name=n, role=n.split("-")[0], kubernetes_version=OLD) for n in ("master-0", "worker-3", "worker-7")
    ]
    assert plan_scale(spec, nodes, 4).add == ["worker-8", "worker-9"]
    assert plan_scale(spec, nodes, 1).remove == ["worker-7"]
    assert plan_scale(spec, [], 5).add == ["worker-3", "worker-4"]  # from the spec's names
    assert plan_scale(spec, [], 1).remove == ["worker-2", "worker-1"]


async def test_scale_up_certificates_then_vms_then_ready(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), pool(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        mark = len(fleet.calls)
        result: ScaleResult = await handle.execute_update(ClusterWorkflow.scale, ScaleRequest(workers=5))
        status = await wait_settled(handle)

    assert result.outcome is UpgradeOutcome.COMPLETED and result.workers == 5
    assert result.added == ["worker-3", "worker-4"] and result.removed == []
    calls = [n for n, _ in fleet.calls[mark:]]
    assert calls.index("pki.ensure_certificates") < calls.index("kvm.ensure_node") < calls.index("kvm.wait_nodes_ready")
    assert sorted(fleet.host_versions()) == ["master-0", *(f"worker-{i}" for i in range(5))]
    assert all(fleet.tenant[f"worker-{i}"].ready for i in range(5))
    assert status.spec.workers.count == 5 and status.phase is ClusterPhase.READY
    assert {"node-worker-3", "node-worker-4"} <= set(status.certificates)
    assert status.recent[0].kind is OperationKind.SCALE and status.recent[0].state is OperationState.SUCCEEDED


async def test_scale_down_newest_first_through_the_removal_path(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), pool(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        mark = len(fleet.calls)
        result: ScaleResult = await handle.execute_update(ClusterWorkflow.scale, ScaleRequest(workers=1))
        status = await wait_settled(handle)

    assert result.removed == ["worker-2", "worker-1"] and result.workers == 1
    names = ("tenant.drain_node", "kvm.ensure_node_absent", "tenant.remove_node", "pki.ensure_node_certificates_absent")
    expected = [(n, node) for node in ("worker-2", "worker-1") for n in names]
    assert per_node(fleet, mark, *names) == expected  # one at a time, each the whole way
    assert sorted(fleet.host_versions()) == ["master-0", "worker-0"]
    assert sorted(fleet.tenant) == ["master-0", "worker-0"]
    for gone in ("worker-1", "worker-2"):
        assert set(fleet.issued[f"node-{gone}"]) <= fleet.revoked
        assert f"secret/cert-node-{gone}" not in fleet.objects
        assert f"node-{gone}" not in status.certificates
    assert not set(fleet.issued["node-worker-0"]) & fleet.revoked
    assert status.spec.workers.count == 1 and sorted(status.nodes) == ["master-0", "worker-0"]


@pytest.mark.parametrize(
    ("workers", "reason"),
    [(0, "workers.count"), (201, "workers.count"), (3, "already has 3 workers")],
)
async def test_refused_scale_changes_nothing(time_skipping_env: WorkflowEnvironment, workers: int, reason: str) -> None:
    fleet, spec, queue = FakeFleet(), pool(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        before = await handle.query(ClusterWorkflow.get_status)
        mark = len(fleet.calls)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ClusterWorkflow.scale, ScaleRequest(workers=workers))
        after = await handle.query(ClusterWorkflow.get_status)
    assert reason in str(refused.value.cause)
    assert fleet.calls[mark:] == [] and after.spec == before.spec and after.recent == before.recent


async def test_scale_refused_while_deleting(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), pool(), f"q-{uuid.uuid4()}"
    fleet.hold("kvm.ensure_node_absent:worker-0")
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        delete = await handle.start_update(
            ClusterWorkflow.delete,
            DeleteRequest(requested_by="test"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await status_when(handle, lambda s: s.phase is ClusterPhase.DELETING, "the teardown to start")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ClusterWorkflow.scale, ScaleRequest(workers=5))
        fleet.holds["kvm.ensure_node_absent:worker-0"].set()
        await delete.result()
    assert "deleting" in str(refused.value.cause) or "being deleted" in str(refused.value.cause)
    assert not any(d.startswith("worker-3") for n, d in fleet.calls if n == "kvm.ensure_node")


async def test_blocked_drain_pauses_naming_node_and_pods_then_resume_finishes(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fleet, spec, queue = FakeFleet(drain_refusals={"worker-2": 1}), pool(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        update = await handle.start_update(
            ClusterWorkflow.scale,
            ScaleRequest(workers=2),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        status = await status_when(handle, paused, "the scale to pause")
        assert status.current is not None
        message = status.current.message
        assert "scale paused at worker-2 (drain)" in message and "worker-2-workload-0" in message
        assert "tenantctl upgrade resume" in message
        assert "worker-2" in fleet.host_versions()  # nothing removed while paused
        await control(handle, UpgradeAction.RESUME)
        result: ScaleResult = await update.result()
    assert result.outcome is UpgradeOutcome.COMPLETED and result.removed == ["worker-2"]
    assert "worker-2" not in fleet.host_versions() and set(fleet.issued["node-worker-2"]) <= fleet.revoked
