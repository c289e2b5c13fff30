"""Issue 15 end to end: fleet rollouts over small clusters on the real local stack, through
``tenantctl fleet`` as an operator runs it: ``--dry-run`` starts nothing; ``--parallel 2 --canary 1
--approve-after-canary`` upgrades the canary, waits for ``fleet approve``, then the rest, never more
than two upgrades at once (from the upgrade workflows' own start and close times); every cluster
ends at the target version.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.client import Client

from devstack.kube_emulator import NEVER_READY, READY_DELAY
from models.cluster import ClusterPhase, ClusterStatus
from models.fleet import FleetState, FleetStatus, RolloutClusterState
from models.naming import kvm_namespace
from starter.clusters import get_status
from tests.e2e.conftest import Stack, WorkerProcess, stack_settings, wait_for, write_spec
from tests.specs import example, small_kvm, unique_id
from worker.clients import connect_temporal
from workflows.cluster import ClusterWorkflow

pytestmark = pytest.mark.stack

OLD, TARGET = "1.32.4", "1.32.5"


def fleet_status(stack: Stack, rollout_id: str) -> FleetStatus:
    return FleetStatus.model_validate_json(stack.cli("fleet", "status", rollout_id, "-o", "json").stdout)


async def entity_status(client: Client, cluster_id: str) -> ClusterStatus:
    status: ClusterStatus = await client.get_workflow_handle(f"cluster/{cluster_id}").query(ClusterWorkflow.get_status)
    return status


async def create_clusters(
    stack: Stack, client: Client, tmp_path: Path, owner: str, count: int, aws: int = 0, **spec_fields: Any
) -> list[str]:
    """``count`` small KVM clusters (1 master, 1 worker), then ``aws`` small AWS ones, all Ready."""
    ids = []
    for number in range(count + aws):
        cluster_id = unique_id(f"f{chr(ord('a') + number)}")  # fa-..., fb-...: the plan keeps this order
        # periodic drift checks are operations too: off here, where the tests count each entity's operations
        small = {
            "id": cluster_id, "owner": owner, "kubernetes_version": OLD, "drift_check": {"paused": True},
            **spec_fields,
        }  # fmt: skip
        if number < count:
            spec = small_kvm(**small, workers={"count": 1, "cpu": 2, "memory": "4Gi"})
        else:
            spec = example(
                "aws-cluster.yaml", **small, deletion_protection=False,
                masters={"count": 1}, workers={"count": 1, "instance_type": "m5.large"},
            )  # fmt: skip
        stack.cli("create", "-f", str(write_spec(tmp_path, spec)))
        ids.append(spec.id)

    async def all_ready() -> bool:
        phases = [(await entity_status(client, cid)).phase for cid in ids]
        assert ClusterPhase.FAILED not in phases, phases
        return all(p is ClusterPhase.READY for p in phases)

    await wait_for(all_ready, "the clusters to be Ready", timeout=180)
    return sorted(ids)


async def upgrade_intervals(client: Client, owner: str) -> list[tuple[datetime, datetime]]:
    intervals = []
    async for execution in client.list_workflows(f'WorkflowType = "RollingUpgrade" AND ClusterOwner = "{owner}"'):
        assert execution.close_time is not None, f"{execution.id} still running"
        intervals.append((execution.start_time, execution.close_time))
    return intervals


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, delta in edges:
        current += delta
        peak = max(peak, current)
    return peak


async def test_canary_approval_and_a_capped_rollout(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    client = await connect_temporal(stack_settings(local_stack))
    owner = f"fleet-{uuid.uuid4().hex[:6]}"
    ids = await create_clusters(local_stack, client, tmp_path, owner, 4, aws=2)

    # --dry-run prints the plan, canary first, and starts nothing.
    dry = local_stack.cli(
        "fleet", "upgrade", "--version", TARGET, "--owner", owner, "--parallel", "2", "--canary", "1", "--dry-run"
    )
    assert "dry run: nothing was started" in dry.stdout
    assert all(cid in dry.stdout for cid in ids) and "canary" in dry.stdout
    assert [(await entity_status(client, cid)).operations_started for cid in ids] == [1] * 6  # the creates
    skipped = local_stack.cli("fleet", "upgrade", "--version", "1.34.0", "--owner", owner, "--dry-run")
    assert skipped.stdout.count("skipped: minor upgrades go one minor at a time") == 6

    started = time.monotonic()
    run = local_stack.cli(
        "fleet", "upgrade", "--version", TARGET, "--owner", owner,
        "--parallel", "2", "--canary", "1", "--approve-after-canary",
    )  # fmt: skip
    match = re.search(r"started rollout (fleet/\S+)", run.stdout)
    assert match, run.stdout
    rollout_id = match.group(1)

    async def waiting_for_approval() -> bool:
        return fleet_status(local_stack, rollout_id).state is FleetState.WAITING_APPROVAL

    await wait_for(waiting_for_approval, "the canary to finish", timeout=180)
    status = fleet_status(local_stack, rollout_id)
    canary = status.clusters[0]
    assert canary.canary and canary.state is RolloutClusterState.SUCCEEDED
    assert [c.state for c in status.clusters[1:]] == [RolloutClusterState.PENDING] * 5
    assert (await entity_status(client, canary.cluster_id)).kubernetes_version == TARGET
    assert [(await entity_status(client, c.cluster_id)).kubernetes_version for c in status.clusters[1:]] == [OLD] * 5
    listed = json.loads(local_stack.cli("fleet", "list", "-o", "json").stdout)
    assert {"id": rollout_id, "state": "waiting-approval"}.items() <= next(
        r for r in listed if r["id"] == rollout_id
    ).items()

    # A name is required; the approval records who and what they said ([markup] stays text).
    refused = local_stack.cli("fleet", "approve", rollout_id, "--by", " ", check=False)
    assert refused.returncode == 1 and "must not be empty" in refused.stderr
    local_stack.cli("fleet", "approve", rollout_id, "--by", "alice", "--comment", "canary [bold]ok[/]")

    async def finished() -> bool:
        return fleet_status(local_stack, rollout_id).state.finished

    await wait_for(finished, "the rollout to finish", timeout=240)
    wall = time.monotonic() - started
    final = fleet_status(local_stack, rollout_id)
    assert final.state is FleetState.SUCCEEDED, final
    assert final.approval is not None and (final.approval.by, final.approval.comment) == ("alice", "canary [bold]ok[/]")
    assert final.max_in_flight == 2
    for cid in ids:
        entity = await entity_status(client, cid)
        assert entity.kubernetes_version == entity.spec.kubernetes_version == TARGET
        assert entity.recent[0].requested_by.startswith(f"fleet {rollout_id}")
    intervals = await upgrade_intervals(client, owner)
    assert len(intervals) == 6 and most_at_once(intervals) == 2
    shown = local_stack.cli("fleet", "status", rollout_id).stdout
    assert "approved by alice" in shown and "canary [bold]ok[/]" in shown
    history = await client.get_workflow_handle(rollout_id).fetch_history()
    print(f"\nfleet rollout of 6 clusters (4 KVM, 2 AWS): {wall:.1f}s wall, fleet history {len(history.events)} events")  # noqa: T201

    # Nothing left to upgrade: a second rollout skips every cluster, and reports it.
    again = local_stack.cli("fleet", "upgrade", "--version", TARGET, "--owner", owner, "--dry-run")
    assert again.stdout.count(f"skipped: the cluster already runs Kubernetes {TARGET}") == 6


def never_ready(stack: Stack, cluster_id: str, node: str, key: str = NEVER_READY, value: str = "true") -> None:
    """Mark a node's VM so it never becomes ready again (or, with READY_DELAY, slowly: the emulator's annotations)."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(stack.state_dir / "kubeconfig"), client_configuration=configuration)
    with k8s.ApiClient(configuration) as api:
        k8s.AppsV1Api(api).patch_namespaced_deployment(
            node, kvm_namespace(cluster_id), {"metadata": {"annotations": {key: value}}}
        )


async def test_a_failed_upgrade_spends_the_budget_and_the_rest_does_not_start(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    client = await connect_temporal(stack_settings(local_stack))
    owner = f"fleet-{uuid.uuid4().hex[:6]}"
    ids = await create_clusters(local_stack, client, tmp_path, owner, 3)
    never_ready(local_stack, ids[0], "master-0")
    run = local_stack.cli(
        "fleet", "upgrade", "--version", TARGET, "--owner", owner, "--parallel", "1", "--max-failures", "1",
        "--node-ready-timeout", "5s", "--watch", check=False, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    rollout_id = re.search(r"started rollout (fleet/\S+)", run.stdout).group(1)  # type: ignore[union-attr]
    final = fleet_status(local_stack, rollout_id)
    assert final.state is FleetState.FAILED
    failed = final.clusters[0]
    assert failed.cluster_id == ids[0] and failed.state is RolloutClusterState.FAILED
    assert "master-0" in failed.reason and "paused" in failed.reason
    assert [c.state for c in final.clusters[1:]] == [RolloutClusterState.NOT_STARTED] * 2
    assert all(ids[0] in c.reason and "failure budget spent" in c.reason for c in final.clusters[1:])
    assert f"failure budget spent (1 of 1): {ids[0]}" in final.message
    shown = " ".join(local_stack.cli("fleet", "status", rollout_id).stdout.split())
    assert shown.count("not-started") == 2 and ids[0] in shown
    assert [(await entity_status(client, cid)).operations_started for cid in ids[1:]] == [1, 1]  # never asked
    assert "rollout failed" in run.stdout


async def test_a_rollout_waits_for_a_window_opening_shortly(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    client = await connect_temporal(stack_settings(local_stack))
    owner = f"fleet-{uuid.uuid4().hex[:6]}"
    # Windows start on the minute: the next one a minute or two away (creating the cluster takes some).
    opens = (datetime.now(UTC) + timedelta(seconds=120)).replace(second=0, microsecond=0)
    window = {"days": [opens.strftime("%a").lower()], "start": opens.strftime("%H:%M"), "duration": "1h"}
    ids = await create_clusters(local_stack, client, tmp_path, owner, 1, maintenance={"window": window})
    plan = local_stack.cli("fleet", "upgrade", "--version", TARGET, "--owner", owner, "--dry-run").stdout
    assert "waiting for the maintenance window" in plan and f"{opens:%H:%M} UTC" in plan, plan
    run = local_stack.cli("fleet", "upgrade", "--version", TARGET, "--owner", owner)
    rollout_id = re.search(r"started rollout (fleet/\S+)", run.stdout).group(1)  # type: ignore[union-attr]
    seen: list[FleetStatus] = []

    async def waiting() -> bool:
        seen.append(fleet_status(local_stack, rollout_id))
        return seen[-1].clusters[0].state is RolloutClusterState.WAITING_WINDOW

    await wait_for(waiting, "the rollout to wait for the window", timeout=30)
    assert seen[-1].message == f"{ids[0]}: waiting for the maintenance window, opens at {opens:%Y-%m-%d %H:%M} UTC"
    assert (await entity_status(client, ids[0])).operations_started == 1

    async def finished() -> bool:
        return fleet_status(local_stack, rollout_id).state.finished

    await wait_for(finished, "the rollout to finish", timeout=240)
    final = fleet_status(local_stack, rollout_id)
    assert final.state is FleetState.SUCCEEDED
    started = final.clusters[0].started_at
    assert started is not None and opens <= started < opens + timedelta(seconds=30)
    assert (await entity_status(client, ids[0])).kubernetes_version == TARGET


async def test_a_worker_killed_mid_rollout_loses_no_cluster_and_starts_none_twice(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    client = await connect_temporal(stack_settings(local_stack))
    owner = f"fleet-{uuid.uuid4().hex[:6]}"
    ids = await create_clusters(local_stack, client, tmp_path, owner, 3)
    run = local_stack.cli("fleet", "upgrade", "--version", TARGET, "--owner", owner, "--parallel", "2")
    rollout_id = re.search(r"started rollout (fleet/\S+)", run.stdout).group(1)  # type: ignore[union-attr]

    async def two_upgrading() -> bool:
        running = [(await entity_status(client, cid)).current for cid in ids]
        return sum(1 for op in running if op is not None and op.kind == "upgrade") == 2

    await wait_for(two_upgrading, "two upgrades in flight", timeout=60)
    worker_process.kill()
    await asyncio.sleep(2)
    worker_process.start()

    async def finished() -> bool:
        return fleet_status(local_stack, rollout_id).state.finished

    await wait_for(finished, "the rollout to finish", timeout=300)
    final = fleet_status(local_stack, rollout_id)
    assert final.state is FleetState.SUCCEEDED, final
    for cid in ids:
        entity = await entity_status(client, cid)
        assert entity.kubernetes_version == TARGET
        assert entity.operations_started == 2  # the create and exactly one upgrade
    assert len(await upgrade_intervals(client, owner)) == 3


def started_rollout(output: str) -> str:
    match = re.search(r"started rollout (fleet/\S+)", output)
    assert match, output
    return match.group(1)


async def until_state(stack: Stack, rollout_id: str, wanted: set[FleetState], timeout: float = 240) -> FleetStatus:
    async def reached() -> bool:
        return fleet_status(stack, rollout_id).state in wanted

    await wait_for(reached, f"rollout {rollout_id} to be {wanted}", timeout=timeout)
    return fleet_status(stack, rollout_id)


async def upgrading(client: Client, cluster_id: str) -> bool:
    op = (await entity_status(client, cluster_id)).current
    return op is not None and op.kind == "upgrade"


async def test_pause_then_resume(local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path) -> None:
    client = await connect_temporal(stack_settings(local_stack))
    owner = f"fleet-{uuid.uuid4().hex[:6]}"
    ids = await create_clusters(local_stack, client, tmp_path, owner, 2)
    rollout_id = started_rollout(local_stack.cli("fleet", "upgrade", "--version", TARGET, "--owner", owner).stdout)
    await wait_for(lambda: upgrading(client, ids[0]), f"{ids[0]} to upgrade", timeout=60)
    paused = local_stack.cli("fleet", "pause", rollout_id, "--reason", "[bold]incident[/] 42")
    assert "no new one starts" in paused.stdout
    status = await until_state(local_stack, rollout_id, {FleetState.PAUSED})

    async def first_done() -> bool:
        return fleet_status(local_stack, rollout_id).clusters[0].state is RolloutClusterState.SUCCEEDED

    await wait_for(first_done, f"{ids[0]} to finish", timeout=120)
    await asyncio.sleep(3)  # room for a wrong start
    status = fleet_status(local_stack, rollout_id)
    assert status.state is FleetState.PAUSED and status.clusters[1].state is RolloutClusterState.PENDING
    assert (await entity_status(client, ids[1])).operations_started == 1
    assert any("[bold]incident[/] 42" in line for line in status.log)
    again = local_stack.cli("fleet", "pause", rollout_id, check=False)
    assert again.returncode == 1 and "already paused" in again.stderr
    local_stack.cli("fleet", "resume", rollout_id)
    final = await until_state(local_stack, rollout_id, {FleetState.SUCCEEDED, FleetState.FAILED, FleetState.ABORTED})
    assert final.state is FleetState.SUCCEEDED
    assert [(await entity_status(client, cid)).kubernetes_version for cid in ids] == [TARGET, TARGET]


async def test_reject_after_the_canary(local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path) -> None:
    client = await connect_temporal(stack_settings(local_stack))
    owner = f"fleet-{uuid.uuid4().hex[:6]}"
    ids = await create_clusters(local_stack, client, tmp_path, owner, 2)
    run = local_stack.cli(
        "fleet", "upgrade", "--version", TARGET, "--owner", owner, "--canary", "1", "--approve-after-canary"
    )
    rollout_id = started_rollout(run.stdout)
    await until_state(local_stack, rollout_id, {FleetState.WAITING_APPROVAL})
    local_stack.cli("fleet", "reject", rollout_id, "--by", "carol", "--comment", "error rate up")
    final = await until_state(local_stack, rollout_id, {FleetState.ABORTED, FleetState.SUCCEEDED, FleetState.FAILED})
    assert final.state is FleetState.ABORTED and "rejected by carol: error rate up" in final.message
    assert final.clusters[1].state is RolloutClusterState.NOT_STARTED
    assert (await entity_status(client, ids[1])).operations_started == 1  # never asked
    assert (await entity_status(client, ids[0])).kubernetes_version == TARGET  # the canary stays upgraded


async def test_abort_rolls_the_upgrade_in_flight_back(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    client = await connect_temporal(stack_settings(local_stack))
    owner = f"fleet-{uuid.uuid4().hex[:6]}"
    ids = await create_clusters(local_stack, client, tmp_path, owner, 2)
    never_ready(local_stack, ids[0], "master-0", READY_DELAY, "10")  # its roll takes 10 s: time to abort
    rollout_id = started_rollout(local_stack.cli("fleet", "upgrade", "--version", TARGET, "--owner", owner).stdout)

    async def rolling() -> bool:
        op = (await get_status(client, ids[0])).current  # the running operation's own progress
        return op is not None and op.kind == "upgrade" and op.progress.total > 0

    await wait_for(rolling, f"{ids[0]} to roll its nodes", timeout=60)
    local_stack.cli("fleet", "abort", rollout_id, "--reason", "bad image")
    final = await until_state(local_stack, rollout_id, {FleetState.ABORTED, FleetState.SUCCEEDED, FleetState.FAILED})
    assert final.state is FleetState.ABORTED, final
    first = final.clusters[0]
    assert first.state is RolloutClusterState.ABORTED and f"rolled back to Kubernetes {OLD}" in first.reason
    assert final.clusters[1].state is RolloutClusterState.NOT_STARTED
    entity = await entity_status(client, ids[0])
    assert entity.kubernetes_version == entity.spec.kubernetes_version == OLD
    assert (await entity_status(client, ids[1])).operations_started == 1


def test_a_selection_that_matches_nothing_starts_nothing(local_stack: Stack) -> None:
    result = local_stack.cli("fleet", "rotate", "--owner", f"nobody-{uuid.uuid4().hex[:6]}", check=False)
    assert result.returncode == 1
    assert "no running cluster matches the selection" in result.stderr
    bad = local_stack.cli("fleet", "rotate", "--where", "ClusterOwner = = 'x'", check=False)
    assert bad.returncode == 1 and "not valid" in bad.stderr, bad.stderr
