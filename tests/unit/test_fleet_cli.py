"""``tenantctl fleet`` without a server: the selection query, the plan as printed, option checks.

Everything a user typed stays plain text on the console (a ``[red]`` in a reason is printed as is).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from models.fleet import ClusterSnapshot, FleetOperation, RolloutCluster, RolloutClusterState, plan_rollout
from models.maintenance import MaintenanceWindow
from starter.cli import app
from starter.fleet_rollouts import parse_ids, plan_table, rollout_workflow_id, selection_query


def rendered(table: object) -> str:
    console = Console(record=True, width=200, highlight=False)
    console.print(table)
    return console.export_text()


def test_selection_query_narrows_running_entities() -> None:
    assert selection_query(None, None, []) == 'WorkflowType = "Cluster" AND ExecutionStatus = "Running"'
    assert selection_query("ClusterProvider = 'kvm' OR ClusterProvider = 'aws'", "acme", ["a", "b"]) == (
        'WorkflowType = "Cluster" AND ExecutionStatus = "Running" AND ClusterOwner = "acme" '
        "AND ClusterId IN (\"a\", \"b\") AND (ClusterProvider = 'kvm' OR ClusterProvider = 'aws')"
    )


@pytest.mark.parametrize("owner", ['acme" OR ClusterOwner = "other', "a'b", "x)"])
def test_names_that_would_change_the_query_are_refused(owner: str) -> None:
    with pytest.raises(typer.BadParameter, match="not a cluster id or owner name"):
        selection_query(None, owner, [])


def test_ids_and_rollout_ids() -> None:
    assert parse_ids(" a, b,,c ") == ["a", "b", "c"]
    assert parse_ids(None) == []
    assert rollout_workflow_id("upgrade-20261201-211500-ab12") == "fleet/upgrade-20261201-211500-ab12"
    assert rollout_workflow_id("fleet/upgrade-1") == "fleet/upgrade-1"


def test_the_plan_shows_canaries_skips_with_reasons_and_windows() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    window = MaintenanceWindow(days=["sat"], start="02:00", duration=timedelta(hours=4), timezone="Europe/Berlin")  # type: ignore[list-item]
    snapshots = [
        ClusterSnapshot(cluster_id="a", kubernetes_version="1.32.4", phase="Ready"),
        ClusterSnapshot(cluster_id="b", kubernetes_version="1.32.4", phase="Ready", maintenance_window=window),
        ClusterSnapshot(cluster_id="c", kubernetes_version="1.32.5", phase="Ready"),
        ClusterSnapshot(cluster_id="d", kubernetes_version="1.32.4", phase="Deleting"),
    ]
    planned = plan_rollout(FleetOperation.UPGRADE, "1.32.5", snapshots, canary=1)
    text = rendered(plan_table(FleetOperation.UPGRADE, planned, {s.cluster_id: s for s in snapshots}, now, False))
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert "canary" in lines["a"] and "starts when a slot is free" in lines["a"]
    assert "waiting for the maintenance window, opens at 2026-12-05 01:00 UTC" in lines["b"]
    assert "sat 02:00 Europe/Berlin for 4h" in lines["b"]
    assert "skipped: the cluster already runs Kubernetes 1.32.5" in lines["c"]
    assert "skipped: cluster is Deleting" in lines["d"]
    overridden = rendered(plan_table(FleetOperation.UPGRADE, planned, {s.cluster_id: s for s in snapshots}, now, True))
    assert "opens at" not in overridden


def test_user_text_in_the_plan_is_not_markup() -> None:
    planned = [RolloutCluster(cluster_id="a", state=RolloutClusterState.SKIPPED, reason="[red]boom[/] [bold]x")]
    assert "skipped: [red]boom[/] [bold]x" in rendered(
        plan_table(FleetOperation.ROTATE_CA, planned, {}, datetime.now(UTC), False)
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["fleet", "upgrade", "--version", "1.32.5", "--now"], "--now needs --reason"),
        (["fleet", "rotate", "--reason", "because"], "--reason goes with --now"),
        (["fleet", "rotate", "--approval-timeout", "soon"], "is not a duration"),
        (["fleet", "rotate", "--ca", "--force"], "--force applies to leaf rotations"),
        (["fleet", "upgrade", "--version", "1.32.5", "--parallel", "0"], "--parallel"),
    ],
)
def test_bad_options_are_refused_before_anything_connects(args: list[str], words: str) -> None:
    result = CliRunner().invoke(app, args, env={"TENANTCTL_TEMPORAL_ADDRESS": "127.0.0.1:9", "COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert words in result.output


def test_the_approval_timeout_option_defaults_to_the_models_default() -> None:
    """The CLI module spells the default as text so that ``--help`` imports no model."""
    from models.durations import format_duration, parse_duration
    from models.fleet import DEFAULT_APPROVAL_TIMEOUT
    from starter.fleet_commands import DEFAULT_APPROVAL_TIMEOUT_TEXT

    assert parse_duration(DEFAULT_APPROVAL_TIMEOUT_TEXT) == DEFAULT_APPROVAL_TIMEOUT
    assert format_duration(DEFAULT_APPROVAL_TIMEOUT) == DEFAULT_APPROVAL_TIMEOUT_TEXT
