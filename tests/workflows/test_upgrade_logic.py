"""Rolling upgrades as workflow logic, on the time-skipping server with an in-memory fleet.

What is checked: the plan (masters in place, one at a time, then workers replaced with surge and
unavailable honoured); a node that never becomes ready or a drain a budget blocks pauses the
upgrade naming the node, and resume carries on from the failed step; an explicit pause stops
after the current node; abort rolls every touched node back in reverse order, also from inside a
wait; a paused rollback resumes or is stopped by a second abort; a teardown that cancels the
upgrade does not roll back; refused requests change nothing; and the workflow replays at every
step (no workflow cache) without re-upgrading a finished node.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase, ClusterStatus, NodeRecord, OperationKind, OperationState, StepState
from models.operations import (
    ClusterReport,
    DeleteRequest,
    NodeUpgradeState,
    RunningOperationPolicy,
    UpgradeAction,
    UpgradeControl,
    UpgradeOutcome,
    UpgradePlan,
    UpgradeRequest,
    UpgradeResult,
)
from models.spec import ClusterSpec
from starter.clusters import live_operation
from tests.fakes_upgrade import FakeFleet
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows import search_attributes as sa
from workflows.cluster import ClusterWorkflow
from workflows.rolling_upgrade import RollingUpgradeWorkflow, batches, plan_upgrade

OLD = "1.32.4"
PATCH = "1.32.5"
MINOR = "1.33.0"
MASTERS = ["master-0", "master-1", "master-2"]
NODE_CALLS = (
    "tenant.cordon_node",
    "tenant.drain_node",
    "kvm.ensure_node",
    "kvm.ensure_node_absent",
    "kvm.wait_nodes_ready",
    "tenant.wait_node_registered",
    "tenant.uncordon_node",
    "tenant.check_health",
    "pki.ensure_certificates",
    "kvm.list_nodes",
    "tenant.remove_node",
    "pki.ensure_node_certificates_absent",
)


def three_by_three(surge: int = 1, unavailable: int = 0) -> ClusterSpec:
    return small_kvm(
        masters={"count": 3, "cpu": 2, "memory": "4Gi"},
        workers={"count": 3, "cpu": 2, "memory": "4Gi", "max_surge": surge, "max_unavailable": unavailable},
    )


async def created(env: WorkflowEnvironment, spec: ClusterSpec, queue: str) -> WorkflowHandle[Any, Any]:
    handle = await start_entity(env.client, spec, queue)
    status = await wait_settled(handle)
    assert status.phase is ClusterPhase.READY
    return handle


async def start_upgrade(handle: WorkflowHandle[Any, Any], version: str, **request: Any) -> Any:
    return await handle.start_update(
        ClusterWorkflow.upgrade,
        UpgradeRequest(version=version, requested_by="test", **request),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )


async def status_when(
    handle: WorkflowHandle[Any, Any],
    predicate: Callable[[ClusterStatus], bool],
    what: str,
    live_from: Client | None = None,
) -> ClusterStatus:
    """The entity's status once ``predicate`` holds; with ``live_from``, the running operation as
    ``tenantctl status`` shows it (its own progress), else as the entity has it (pauses, outcome)."""
    status: ClusterStatus | None = None
    for _ in range(600):
        status = await handle.query(ClusterWorkflow.get_status)
        if live_from is not None and status.current is not None:
            status.current = await live_operation(live_from, status.current)
        if predicate(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {status}")


def paused(status: ClusterStatus) -> bool:
    return status.current is not None and status.current.state is OperationState.PAUSED


async def control(handle: WorkflowHandle[Any, Any], action: UpgradeAction) -> None:
    await handle.execute_update(ClusterWorkflow.control_upgrade, UpgradeControl(action=action, reason="test"))


async def plan_of(env: WorkflowEnvironment, status: ClusterStatus) -> UpgradePlan:
    assert status.current is not None
    child = env.client.get_workflow_handle(status.current.workflow_id)
    plan: UpgradePlan = await child.query(RollingUpgradeWorkflow.get_plan)
    return plan


SIDE_BY_SIDE = {"kvm.wait_nodes_ready", "tenant.wait_node_registered"}
"""A node's two waits (provider and tenant view) run together: either may start first."""


def per_node(fleet: FakeFleet, since: int) -> list[tuple[str, str]]:
    """The node calls in start order, with calls that run side by side in a canonical order."""
    calls = [(n, d) for n, d in fleet.calls[since:] if n in NODE_CALLS]
    if {n for n, _ in calls[:2]} == {"kvm.list_nodes", "tenant.check_health"}:
        calls[:2] = sorted(calls[:2])  # plan and preflight read side by side
    ordered: list[tuple[str, str]] = []
    run: list[tuple[str, str]] = []
    for call in [*calls, ("", "")]:
        if call[0] in SIDE_BY_SIDE:
            run.append(call)
            continue
        ordered += sorted(run)
        run = []
        ordered.append(call)
    return ordered[:-1]


def master_procedure(node: str, version: str) -> list[tuple[str, str]]:
    return [
        ("tenant.drain_node", node),  # cordons, then evicts
        ("kvm.ensure_node", f"{node}@{version}"),
        ("kvm.wait_nodes_ready", node),
        ("tenant.wait_node_registered", f"{node}@{version}"),
        ("tenant.uncordon_node", node),
    ]


def removal(node: str) -> list[tuple[str, str]]:
    """The one node-removal path: drain, VM, Node object, then the node's certificates."""
    return [
        ("tenant.drain_node", node),
        ("kvm.ensure_node_absent", node),
        ("tenant.remove_node", node),
        ("pki.ensure_node_certificates_absent", node),
    ]


def without_health(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [c for c in calls if c[0] != "tenant.check_health"]


def ensured(fleet: FakeFleet, since: int = 0) -> list[str]:
    return [d for n, d in fleet.calls[since:] if n == "kvm.ensure_node"]


# --- the plan (pure) ----------------------------------------------------------------------------------
def test_plan_masters_in_place_workers_replaced_in_batches() -> None:
    spec = small_kvm(
        masters={"count": 3, "cpu": 2, "memory": "4Gi"},
        workers={"count": 3, "cpu": 2, "memory": "4Gi", "max_surge": 2, "max_unavailable": 1},
    )
    nodes = [NodeRecord(name=n, role=n.split("-")[0], kubernetes_version=OLD) for n in spec.node_names()]
    nodes += [NodeRecord(name="worker-7", role="worker", kubernetes_version=OLD)]  # from an earlier upgrade
    plan = plan_upgrade(spec, list(reversed(nodes)), "v1.33.0")
    assert plan.to_version == MINOR and plan.from_version == OLD
    assert [(e.node, e.replacement, e.batch) for e in plan.nodes] == [
        ("master-0", "master-0", 0),
        ("master-1", "master-1", 1),
        ("master-2", "master-2", 2),
        ("worker-0", "worker-8", 3),
        ("worker-1", "worker-9", 3),
        ("worker-2", "worker-10", 3),
        ("worker-7", "worker-11", 4),
    ]
    assert [len(b) for b in batches(plan.nodes)] == [1, 1, 1, 3, 1]
    # the same input gives the same plan: a resumed or repeated upgrade finds its replacements
    assert plan_upgrade(spec, nodes, MINOR) == plan


# --- the happy paths ------------------------------------------------------------------------------------
async def test_patch_upgrade_runs_masters_in_place_then_surges_workers(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        before = await handle.query(ClusterWorkflow.get_status)
        mark = len(fleet.calls)
        update = await start_upgrade(handle, PATCH)
        result: UpgradeResult = await update.result()
        status = await wait_settled(handle)
        description = await handle.describe()

    assert result.outcome is UpgradeOutcome.COMPLETED and result.kubernetes_version == PATCH
    assert (result.from_version, result.to_version) == (OLD, PATCH)
    health = ("tenant.check_health", "")
    expected: list[tuple[str, str]] = [("kvm.list_nodes", ""), health]  # plan, preflight
    for master in MASTERS:
        expected += [*master_procedure(master, PATCH), health]
    for old, new in (("worker-0", "worker-3"), ("worker-1", "worker-4"), ("worker-2", "worker-5")):
        expected += [
            ("pki.ensure_certificates", "1"),
            ("kvm.ensure_node", f"{new}@{PATCH}"),
            ("kvm.wait_nodes_ready", new),
            ("tenant.wait_node_registered", f"{new}@{PATCH}"),
            *removal(old),
            health,
        ]
    expected += [("kvm.list_nodes", ""), health]  # verify
    calls = [(n, "" if n == "tenant.check_health" else d) for n, d in per_node(fleet, mark)]
    assert calls == expected
    # each gate expects the nodes that exist at that point: the new worker, not the one it replaced
    gates = [d for n, d in fleet.calls[mark:] if n == "tenant.check_health"]
    assert gates[4] == "master-0,master-1,master-2,worker-3,worker-1,worker-2"

    final = {n: PATCH for n in [*MASTERS, "worker-3", "worker-4", "worker-5"]}
    assert fleet.host_versions() == final and fleet.tenant_versions() == final
    assert not any(n.unschedulable for n in fleet.tenant.values())
    assert sorted(fleet.evicted) == sorted(f"worker-{w}-workload-{i}" for w in range(3) for i in range(3))
    assert [r.name for r in result.nodes] == [*MASTERS, "worker-3", "worker-4", "worker-5"]
    # the replaced workers' credentials do not outlive them: every serial revoked, key pairs deleted
    for gone in ("worker-0", "worker-1", "worker-2"):
        assert fleet.issued[f"node-{gone}"] and set(fleet.issued[f"node-{gone}"]) <= fleet.revoked
        assert f"secret/cert-node-{gone}" not in fleet.objects
    for kept in ("worker-3", "worker-4", "worker-5", "master-0"):
        assert f"secret/cert-node-{kept}" in fleet.objects
        assert not set(fleet.issued[f"node-{kept}"]) & fleet.revoked

    # the entity: version, spec, nodes, certificates of replaced workers gone, search attribute
    assert status.phase is ClusterPhase.READY
    assert status.kubernetes_version == PATCH and status.spec.kubernetes_version == PATCH
    assert sorted(status.nodes) == sorted(final)
    assert "node-worker-0" in before.certificates and "node-worker-0" not in status.certificates
    assert "node-worker-3" in status.certificates
    assert status.earliest_expiry == min(c.not_after for c in status.certificates.values())
    upgrade = status.recent[0]
    assert upgrade.kind is OperationKind.UPGRADE and upgrade.state is OperationState.SUCCEEDED
    assert [s.name for s in upgrade.steps] == ["plan", "masters", "workers", "verify"]
    assert all(s.state is StepState.DONE for s in upgrade.steps)
    assert upgrade.progress.done == upgrade.progress.total == 6
    assert description.typed_search_attributes.get(sa.KUBERNETES_VERSION) == PATCH


async def test_minor_upgrade_with_max_unavailable_removes_before_it_adds(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(surge=0, unavailable=1), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        mark = len(fleet.calls)
        result: UpgradeResult = await (await start_upgrade(handle, MINOR)).result()

    assert result.outcome is UpgradeOutcome.COMPLETED
    workers = [
        c for c in without_health(per_node(fleet, mark)) if "worker" in c[1] or c[0] == "pki.ensure_certificates"
    ]
    expected: list[tuple[str, str]] = []
    for old, new in (("worker-0", "worker-3"), ("worker-1", "worker-4"), ("worker-2", "worker-5")):
        expected += [
            ("pki.ensure_certificates", "1"),
            *removal(old),
            ("kvm.ensure_node", f"{new}@{MINOR}"),
            ("kvm.wait_nodes_ready", new),
            ("tenant.wait_node_registered", f"{new}@{MINOR}"),
        ]
    assert workers == expected
    assert fleet.host_versions() == {n: MINOR for n in [*MASTERS, "worker-3", "worker-4", "worker-5"]}


async def test_surge_of_two_brings_two_up_before_any_goes(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(surge=2), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        mark = len(fleet.calls)
        await (await start_upgrade(handle, PATCH)).result()

    workers, peak = 3, 3
    for name, detail in per_node(fleet, mark):
        if name == "kvm.ensure_node" and detail.startswith("worker-"):
            workers += 1
        elif name == "kvm.ensure_node_absent":
            workers -= 1
        peak = max(peak, workers)
        assert workers >= 3, "a surge-only upgrade never runs fewer workers than the spec's count"
    assert peak == 5
    created_order = [d for n, d in per_node(fleet, mark) if n in ("kvm.ensure_node", "kvm.ensure_node_absent")]
    # a batch's two replacements are created side by side, then the two old workers go
    assert sorted(created_order[3:5]) == [f"worker-3@{PATCH}", f"worker-4@{PATCH}"]
    assert created_order[5:] == ["worker-0", "worker-1", f"worker-5@{PATCH}", "worker-2"]


async def test_refused_requests_change_nothing(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        before = await handle.query(ClusterWorkflow.get_status)
        mark = len(fleet.calls)
        refusals = {
            "1.34.0": "minor upgrades go one minor at a time",
            "1.32.3": "downgrades are not supported",
            "1.32.4": "already runs",
            "1.36.0": "outside the supported range",
            "2.0.0": "outside the supported range",
            "banana": "is not a semantic version",
        }
        for version, why in refusals.items():
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                # a validator's refusal is known as soon as the request returns: no operation started
                await (await start_upgrade(handle, version)).result()
            assert why in str(refused.value.cause), version
        with pytest.raises(WorkflowUpdateFailedError) as no_upgrade:
            await control(handle, UpgradeAction.RESUME)
        assert "no upgrade" in str(no_upgrade.value.cause)
        after = await handle.query(ClusterWorkflow.get_status)
    assert fleet.calls[mark:] == []
    assert after.operations_started == before.operations_started and after.current is None
    assert after.kubernetes_version == OLD and after.recent == before.recent


# --- pauses ---------------------------------------------------------------------------------------------
async def test_node_never_ready_pauses_naming_it_and_resume_completes(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        fleet.break_on_roll.add("master-1")  # its new version never comes up
        mark = len(fleet.calls)
        update = await start_upgrade(handle, MINOR, node_ready_timeout=timedelta(seconds=5))
        status = await status_when(handle, paused, "the upgrade to pause")
        op = status.current
        assert op is not None
        assert "master-1" in op.message and "wait-ready" in op.message and "not ready" in op.message
        assert f"tenantctl upgrade resume {spec.id}" in op.message
        assert (op.progress.done, op.progress.total, op.progress.current, op.progress.phase) == (
            1,
            6,
            "master-1",
            "wait-ready",
        )
        assert status.phase is ClusterPhase.UPGRADING
        plan = await plan_of(time_skipping_env, status)
        assert [e.state for e in plan.nodes[:3]] == [
            NodeUpgradeState.DONE,
            NodeUpgradeState.UPGRADING,
            NodeUpgradeState.PENDING,
        ]
        # nothing moves while paused
        calls = len(fleet.calls)
        await asyncio.sleep(0.3)
        assert len(fleet.calls) == calls

        fleet.never_ready.clear()
        fleet.break_on_roll.clear()
        await control(handle, UpgradeAction.RESUME)
        result: UpgradeResult = await update.result()
        status = await wait_settled(handle)

    assert result.outcome is UpgradeOutcome.COMPLETED and status.kubernetes_version == MINOR
    # the retried step and what follows ran; nothing finished ran twice
    upgrades = Counter(d for d in ensured(fleet, mark))
    assert all(count == 1 for count in upgrades.values()), upgrades
    waits = [d for n, d in fleet.calls[mark:] if n == "kvm.wait_nodes_ready"]
    assert waits.count("master-1") == 2 and waits.count("master-0") == 1
    assert status.recent[0].state is OperationState.SUCCEEDED


async def test_unhealthy_cluster_pauses_before_anything_is_touched(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        fleet.never_ready.add("worker-2")  # broken before the upgrade starts
        mark = len(fleet.calls)
        update = await start_upgrade(handle, PATCH)
        status = await status_when(handle, paused, "the upgrade to pause")
        assert status.current is not None
        assert "preflight (nothing touched yet) failed: worker-2: Ready=False" in status.current.message
        await control(handle, UpgradeAction.ABORT)
        result: UpgradeResult = await update.result()
    assert result.outcome is UpgradeOutcome.ABORTED and result.kubernetes_version == OLD
    assert ensured(fleet, mark) == [] and fleet.host_versions() == {n: OLD for n in spec.node_names()}


async def test_blocked_drain_pauses_naming_pods_and_resume_completes(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(blocked_drains={"worker-1"}), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        update = await start_upgrade(handle, PATCH, drain_timeout=timedelta(seconds=3))
        status = await status_when(handle, paused, "the upgrade to pause on the drain")
        assert status.current is not None
        message = status.current.message
        assert "worker-1" in message and "(drain)" in message and "disruption budget" in message
        assert "worker-1-workload-0" in message
        fleet.blocked_drains.clear()
        await control(handle, UpgradeAction.RESUME)
        result: UpgradeResult = await update.result()
    assert result.outcome is UpgradeOutcome.COMPLETED
    assert fleet.host_versions() == {n: PATCH for n in [*MASTERS, "worker-3", "worker-4", "worker-5"]}


async def test_pause_stops_after_the_current_node(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        release = fleet.hold("tenant.drain_node:master-0")
        update = await start_upgrade(handle, PATCH)
        await asyncio.to_thread(fleet.reached["tenant.drain_node:master-0"].wait, 10)
        await status_when(
            handle,
            lambda s: s.current is not None and s.current.progress.phase == "drain",
            "drain",
            live_from=time_skipping_env.client,
        )
        await control(handle, UpgradeAction.PAUSE)
        release.set()
        status = await status_when(handle, paused, "the upgrade to pause")
        assert status.current is not None
        assert "paused by the operator after master-0" in status.current.message
        plan = await plan_of(time_skipping_env, status)
        assert [e.state for e in plan.nodes[:2]] == [NodeUpgradeState.DONE, NodeUpgradeState.PENDING]
        assert not [d for _, d in fleet.calls if "master-1" in d and "@" + PATCH in d]
        await control(handle, UpgradeAction.RESUME)
        result: UpgradeResult = await update.result()
    assert result.outcome is UpgradeOutcome.COMPLETED


# --- abort and rollback ---------------------------------------------------------------------------------
async def test_abort_rolls_back_every_touched_node_in_reverse_order(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        fleet.never_ready.add("worker-4")  # the second replacement worker never comes up
        update = await start_upgrade(handle, MINOR, node_ready_timeout=timedelta(seconds=5))
        status = await status_when(handle, paused, "the upgrade to pause")
        assert status.current is not None and "worker-4" in status.current.message
        mark = len(fleet.calls)
        await control(handle, UpgradeAction.ABORT)  # worker-4 is still broken: the rollback removes it
        result: UpgradeResult = await update.result()
        status = await wait_settled(handle)

    assert result.outcome is UpgradeOutcome.ABORTED and result.kubernetes_version == OLD
    # reverse order: the pair in progress, the finished pair, then the masters last to first
    assert ensured(fleet, mark) == [
        f"worker-1@{OLD}",
        f"worker-0@{OLD}",
        f"master-2@{OLD}",
        f"master-1@{OLD}",
        f"master-0@{OLD}",
    ]
    removed = [d for n, d in fleet.calls[mark:] if n == "kvm.ensure_node_absent"]
    assert removed == ["worker-4", "worker-3"]
    rollback = without_health(per_node(fleet, mark))
    assert rollback.index(("kvm.ensure_node", f"worker-0@{OLD}")) < rollback.index(
        ("kvm.ensure_node_absent", "worker-3")
    )
    original = {n: OLD for n in spec.node_names()}
    assert fleet.host_versions() == original and fleet.tenant_versions() == original
    assert not any(n.unschedulable for n in fleet.tenant.values())

    assert status.phase is ClusterPhase.READY and status.kubernetes_version == OLD
    assert status.spec.kubernetes_version == OLD and sorted(status.nodes) == sorted(original)
    aborted = status.recent[0]
    assert aborted.state is OperationState.CANCELLED and f"rolled back to Kubernetes {OLD}" in aborted.message
    steps = {s.name: s.state for s in aborted.steps}
    assert steps == {
        "plan": StepState.DONE,
        "masters": StepState.DONE,
        "workers": StepState.FAILED,
        "verify": StepState.SKIPPED,
        "rollback": StepState.DONE,
    }
    assert aborted.progress.unit == "nodes rolled back" and aborted.progress.done == aborted.progress.total == 5


async def test_abort_cancels_a_running_wait(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        release = fleet.hold("kvm.wait_nodes_ready:master-1")
        try:
            update = await start_upgrade(handle, PATCH)
            await asyncio.to_thread(fleet.reached["kvm.wait_nodes_ready:master-1"].wait, 10)
            await control(handle, UpgradeAction.ABORT)
            # the wait is still blocked: the rollback did not wait for it
            result: UpgradeResult = await asyncio.wait_for(update.result(), timeout=30)
            assert not release.is_set()
        finally:
            release.set()
    assert result.outcome is UpgradeOutcome.ABORTED
    assert fleet.host_versions() == {n: OLD for n in spec.node_names()}


async def test_paused_rollback_resumes_or_stops_on_a_second_abort(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        fleet.break_on_roll.add("master-1")
        update = await start_upgrade(handle, PATCH, node_ready_timeout=timedelta(seconds=5))
        await status_when(handle, paused, "the upgrade to pause")
        await control(handle, UpgradeAction.ABORT)
        # master-1 does not come back at the old version either: the rollback pauses on it
        status = await status_when(
            handle, lambda s: paused(s) and "rollback paused" in (s.current.message if s.current else ""), "rollback"
        )
        assert status.current is not None and "master-1" in status.current.message
        fleet.never_ready.clear()
        fleet.break_on_roll.clear()
        await control(handle, UpgradeAction.RESUME)
        result: UpgradeResult = await update.result()
        assert result.outcome is UpgradeOutcome.ABORTED
        assert fleet.host_versions() == {n: OLD for n in spec.node_names()}

        # again, and this time the operator stops the rollback
        fleet.break_on_roll.add("master-0")
        update = await start_upgrade(handle, PATCH, node_ready_timeout=timedelta(seconds=5))
        await status_when(handle, paused, "the upgrade to pause")
        await control(handle, UpgradeAction.ABORT)
        await status_when(
            handle, lambda s: paused(s) and "rollback paused" in (s.current.message if s.current else ""), "rollback"
        )
        await control(handle, UpgradeAction.ABORT)
        with pytest.raises(WorkflowUpdateFailedError) as stopped:
            await update.result()
        status = await wait_settled(handle)
    assert "stopped by a second abort at master-0" in str(stopped.value.cause)
    assert status.recent[0].state is OperationState.FAILED and status.phase is ClusterPhase.READY
    assert status.kubernetes_version == OLD


async def test_delete_cancels_a_paused_upgrade_without_rollback(time_skipping_env: WorkflowEnvironment) -> None:
    fleet, spec, queue = FakeFleet(), three_by_three(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        handle = await created(time_skipping_env, spec, queue)
        fleet.break_on_roll.add("master-1")
        update = await start_upgrade(handle, PATCH, node_ready_timeout=timedelta(seconds=5))
        await status_when(handle, paused, "the upgrade to pause")
        mark = len(fleet.calls)
        await handle.execute_update(
            ClusterWorkflow.delete, DeleteRequest(running_operation=RunningOperationPolicy.CANCEL)
        )
        report: ClusterReport = await handle.result()
        with pytest.raises(WorkflowUpdateFailedError) as cancelled:
            await update.result()
    assert "cancelled" in str(cancelled.value.cause)
    assert not [d for d in ensured(fleet, mark)], "a cancelled upgrade rolls nothing back"
    assert report.phase is ClusterPhase.DELETED and fleet.node_versions == {}
    upgrade = next(op for op in report.operations if op.kind is OperationKind.UPGRADE)
    assert upgrade.state is OperationState.CANCELLED


# --- a new worker ------------------------------------------------------------------------------------------
async def test_a_new_worker_resumes_where_the_old_one_stopped(time_skipping_env: WorkflowEnvironment) -> None:
    """The worker that ran the first half is gone; a fresh one replays the histories and carries on
    without upgrading a finished node again.

    The first worker keeps no workflow cache (every task is a replay, which also proves each step
    replays deterministically), because the time-skipping server never moves tasks off a stopped
    worker's sticky queue; a small cluster keeps those replays quick. The real SIGKILL is in tests/e2e.
    """
    fleet, spec, queue = FakeFleet(), small_kvm(), f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, fleet.activities(), max_cached_workflows=0):
        handle = await created(time_skipping_env, spec, queue)
        fleet.break_on_roll.add("worker-2")  # the first replacement: master-0 is done by then
        mark = len(fleet.calls)
        update = await start_upgrade(handle, PATCH, node_ready_timeout=timedelta(seconds=5))
        status = await status_when(handle, paused, "the upgrade to pause")
        assert status.current is not None and "worker-2" in status.current.message
    fleet.never_ready.clear()
    fleet.break_on_roll.clear()
    async with build_worker(time_skipping_env.client, queue, fleet.activities()):
        await control(handle, UpgradeAction.RESUME)
        result: UpgradeResult = await update.result()
    assert result.outcome is UpgradeOutcome.COMPLETED
    final = ["master-0", "worker-2", "worker-3"]
    assert sorted(ensured(fleet, mark)) == sorted(f"{n}@{PATCH}" for n in final)
    assert fleet.host_versions() == {n: PATCH for n in final} == fleet.tenant_versions()
