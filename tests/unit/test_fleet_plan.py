"""Fleet rollout rules as pure logic: the input's checks, the plan (canaries, skips), start times.

The CLI's ``--dry-run`` prints the same plan the workflow records, so these rules are shared.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio import workflow

from models.fleet import (
    ApprovalRequest,
    ClusterSnapshot,
    FleetOperation,
    FleetRolloutInput,
    RolloutClusterState,
    plan_rollout,
    start_decision,
)
from models.maintenance import MaintenanceWindow
from tests.unit.test_worker_activities import registered_activities
from worker.registry import WORKFLOWS
from workflows import fleet


def snap(cluster_id: str, version: str = "1.32.4", phase: str = "Ready", **fields: Any) -> ClusterSnapshot:
    return ClusterSnapshot(cluster_id=cluster_id, kubernetes_version=version, phase=phase, **fields)


def rollout(**fields: Any) -> FleetRolloutInput:
    base: dict[str, Any] = {"operation": "upgrade", "version": "1.32.5", "cluster_ids": ["a", "b"]}
    return FleetRolloutInput.model_validate({**base, **fields})


def test_plan_puts_canaries_first_and_skipped_clusters_last_with_reasons() -> None:
    snapshots = [
        snap("at-target", version="1.32.5"),
        snap("a"),
        snap("minor-skip", version="1.30.9"),
        snap("b"),
        snap("deleting", phase="Deleting"),
        snap("broken", phase="Failed"),
        snap("c"),
        ClusterSnapshot(cluster_id="gone", found=False),
    ]
    plan = plan_rollout(FleetOperation.UPGRADE, "1.32.5", snapshots, canary=2)
    assert [(c.cluster_id, c.canary, c.state) for c in plan[:3]] == [
        ("a", True, RolloutClusterState.PENDING),
        ("b", True, RolloutClusterState.PENDING),
        ("c", False, RolloutClusterState.PENDING),
    ]
    skipped = {c.cluster_id: c.reason for c in plan[3:]}
    assert all(c.state is RolloutClusterState.SKIPPED for c in plan[3:])
    assert skipped["at-target"] == "the cluster already runs Kubernetes 1.32.5"
    assert "1.30.9 is outside the supported range" in skipped["minor-skip"] or "one minor" in skipped["minor-skip"]
    assert skipped["deleting"] == "cluster is Deleting"
    assert skipped["broken"] == "cluster is Failed"
    assert skipped["gone"] == "no cluster entity workflow runs under this id"


def test_a_minor_skip_is_named() -> None:
    plan = plan_rollout(FleetOperation.UPGRADE, "1.34.0", [snap("a", version="1.32.4")], canary=0)
    assert plan[0].state is RolloutClusterState.SKIPPED and "one minor at a time" in plan[0].reason


def test_rotations_skip_only_clusters_that_cannot_operate() -> None:
    plan = plan_rollout(FleetOperation.ROTATE_CA, None, [snap("a"), snap("b", phase="Deleting")], canary=5)
    assert [(c.cluster_id, c.state, c.canary) for c in plan] == [
        ("a", RolloutClusterState.PENDING, True),
        ("b", RolloutClusterState.SKIPPED, False),
    ]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"version": None}, "version: an upgrade needs a target version"),
        ({"operation": "rotate-ca"}, "version: applies to upgrades only"),
        ({"version": "1.32"}, "not a semantic version"),
        ({"cluster_ids": []}, "at least 1"),
        ({"cluster_ids": ["a", "a"]}, "cluster_ids: a listed more than once"),
        ({"cluster_ids": ["Not_A_Label"]}, "DNS-1123"),
        ({"parallel": 0}, "greater than or equal to 1"),
        ({"max_failures": 0}, "greater than or equal to 1"),
        ({"approve_after_canary": True}, "approve_after_canary: needs at least one canary"),
        ({"force": True}, "force: applies to certificate rotations only"),
        ({"maintenance_override": {"reason": "  "}}, "must not be empty"),
    ],
)
def test_bad_rollout_input_is_refused_with_the_field(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        rollout(**fields)
    assert words in str(info.value)


def test_an_approval_needs_a_name() -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        ApprovalRequest(by=" ")
    assert ApprovalRequest(by=" alice ", comment=" ok ").model_dump() == {"by": "alice", "comment": "ok"}


def test_start_decisions_follow_the_window_and_the_renewal_deadline() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday
    window = MaintenanceWindow(days=["sat"], start="02:00", duration=timedelta(hours=4), timezone="UTC")  # type: ignore[list-item]
    saturday = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
    soon = snap("a", maintenance_window=window, renewal_deadline=now + timedelta(hours=6))
    later = snap("b", maintenance_window=window, renewal_deadline=now + timedelta(days=5))
    assert start_decision(FleetOperation.UPGRADE, soon, now, ignore_window=False).at == saturday
    assert start_decision(FleetOperation.ROTATE_CA, soon, now, ignore_window=False).at == saturday
    assert start_decision(FleetOperation.ROTATE_CERTIFICATES, soon, now, ignore_window=False).at == now
    assert start_decision(FleetOperation.ROTATE_CERTIFICATES, later, now, ignore_window=False).at == saturday
    assert start_decision(FleetOperation.UPGRADE, soon, now, ignore_window=True).at == now


def test_the_worker_runs_the_fleet_workflow_and_every_activity_it_calls(tmp_path: Path) -> None:
    assert fleet.FLEET_WORKFLOW in {workflow._Definition.from_class(w).name for w in WORKFLOWS}  # type: ignore[union-attr]
    called = set(re.findall(r'"(fleet\.[a-z_]+)"', Path(fleet.__file__).read_text()))
    assert called == {"fleet.describe_clusters", "fleet.request_operation", "fleet.abort_upgrade"}
    assert called <= registered_activities(tmp_path)
