"""Issue 15 end to end: a fleet upgrade over small KVM clusters on the real local stack, through
``tenantctl fleet`` as an operator runs it: ``--dry-run`` starts nothing; ``--parallel 2 --canary 1
--approve-after-canary`` upgrades the canary, waits for ``fleet approve``, then the rest, never more
than two upgrades at once (from the upgrade workflows' own start and close times); every cluster
ends at the target version.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.client import Client

from models.cluster import ClusterPhase, ClusterStatus
from models.fleet import FleetState, FleetStatus, RolloutClusterState
from tests.e2e.conftest import Stack, WorkerProcess, stack_settings, wait_for, write_spec
from tests.specs import small_kvm
from worker.clients import connect_temporal
from workflows.cluster import ClusterWorkflow

pytestmark = pytest.mark.stack

OLD, TARGET = "1.32.4", "1.32.5"


def fleet_status(stack: Stack, rollout_id: str) -> FleetStatus:
    return FleetStatus.model_validate_json(stack.cli("fleet", "status", rollout_id, "-o", "json").stdout)


async def entity_status(client: Client, cluster_id: str) -> ClusterStatus:
    status: ClusterStatus = await client.get_workflow_handle(f"cluster/{cluster_id}").query(ClusterWorkflow.get_status)
    return status


async def create_clusters(stack: Stack, client: Client, tmp_path: Path, owner: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        spec = small_kvm(owner=owner, kubernetes_version=OLD, workers={"count": 1, "cpu": 2, "memory": "4Gi"})
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
    ids = await create_clusters(local_stack, client, tmp_path, owner, 3)

    # --dry-run prints the plan, canary first, and starts nothing.
    dry = local_stack.cli(
        "fleet", "upgrade", "--version", TARGET, "--owner", owner, "--parallel", "2", "--canary", "1", "--dry-run"
    )
    assert "dry run: nothing was started" in dry.stdout
    assert all(cid in dry.stdout for cid in ids) and "canary" in dry.stdout
    assert [(await entity_status(client, cid)).operations_started for cid in ids] == [1, 1, 1]  # the creates
    skipped = local_stack.cli("fleet", "upgrade", "--version", "1.34.0", "--owner", owner, "--dry-run")
    assert skipped.stdout.count("skipped: minor upgrades go one minor at a time") == 3

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
    assert [c.state for c in status.clusters[1:]] == [RolloutClusterState.PENDING] * 2
    assert (await entity_status(client, canary.cluster_id)).kubernetes_version == TARGET
    assert [(await entity_status(client, c.cluster_id)).kubernetes_version for c in status.clusters[1:]] == [OLD] * 2
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
    assert len(intervals) == 3 and most_at_once(intervals) == 2
    shown = local_stack.cli("fleet", "status", rollout_id).stdout
    assert "approved by alice" in shown and "canary [bold]ok[/]" in shown
    history = await client.get_workflow_handle(rollout_id).fetch_history()
    print(f"\nfleet rollout of 3 clusters: {wall:.1f}s wall, fleet history {len(history.events)} events")  # noqa: T201

    # Nothing left to upgrade: a second rollout skips every cluster, and reports it.
    again = local_stack.cli("fleet", "upgrade", "--version", TARGET, "--owner", owner, "--dry-run")
    assert again.stdout.count(f"skipped: the cluster already runs Kubernetes {TARGET}") == 3


def test_a_selection_that_matches_nothing_starts_nothing(local_stack: Stack) -> None:
    result = local_stack.cli("fleet", "rotate", "--owner", f"nobody-{uuid.uuid4().hex[:6]}", check=False)
    assert result.returncode == 1
    assert "no running cluster matches the selection" in result.stderr
    bad = local_stack.cli("fleet", "rotate", "--where", "ClusterOwner = = 'x'", check=False)
    assert bad.returncode == 1 and "not valid" in bad.stderr, bad.stderr
