"""Replay every recorded history in tests/histories against the current workflow code.

A failure here means a change would break workflows already running in production: guard the
new behaviour with ``workflow.patched(...)`` instead. Record new histories with
``python -m tests.replay.record`` (see that module).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from models.cluster import FLEET_MEMO_KEYS
from tests.history_checks import assert_no_private_key, assert_replays
from workflows.cluster import FLEET_MEMO_PATCH
from workflows.journal import OPERATION_SNAPSHOTS_PATCH

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def test_histories_are_recorded() -> None:
    assert HISTORIES, "no recorded histories in tests/histories"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replays_against_current_code(path: Path) -> None:
    data = json.loads(path.read_text())
    history = WorkflowHistory.from_json(data["workflow_id"], data["history"])
    await assert_replays(history)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_history_holds_no_private_key(path: Path) -> None:
    data = json.loads(path.read_text())
    assert_no_private_key(WorkflowHistory.from_json(data["workflow_id"], data["history"]))


OPERATIONS = {
    "ProvisionCluster",
    "TeardownCluster",
    "RotateCertificates",
    "RotateCa",
    "RollingUpgrade",
    "ScaleCluster",
    "ReconcileCluster",
}


def _patches(history: WorkflowHistory) -> set[str]:
    found = set()
    for event in history.events:
        if event.HasField("marker_recorded_event_attributes"):
            for payload in event.marker_recorded_event_attributes.details["patch-data"].payloads:
                found.add(json.loads(payload.data)["id"])
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in HISTORIES if "-before-" not in p.stem and p.stem.split("--")[1].split("-")[0] in OPERATIONS],
    ids=lambda p: p.stem,
)
def test_operations_keep_their_steps_to_themselves(path: Path) -> None:
    """Runbooks of today tell the entity of pauses and resumes only: no signal per step."""
    data = json.loads(path.read_text())
    history = WorkflowHistory.from_json(data["workflow_id"], data["history"])
    assert OPERATION_SNAPSHOTS_PATCH in _patches(history)
    signals = [e for e in history.events if e.HasField("signal_external_workflow_execution_initiated_event_attributes")]
    paused_and_resumed = 2 if "upgrade" in path.stem else 0  # the recorded upgrades pause once
    assert len(signals) == paused_and_resumed, path.name


def _memo_upserts(history: WorkflowHistory) -> list[dict[str, str]]:
    upserts = []
    for event in history.events:
        if event.HasField("workflow_properties_modified_event_attributes"):
            fields = event.workflow_properties_modified_event_attributes.upserted_memo.fields
            upserts.append({key: json.loads(payload.data) for key, payload in fields.items()})
    return upserts


def test_both_memo_shapes_replay_and_the_new_one_carries_the_fleet_values() -> None:
    """The entity before FLEET_MEMO_PATCH published the list's four values; the one recorded after
    also what the fleet metrics read, including a node that went unhealthy and came back."""
    by_stem = {p.stem: p for p in HISTORIES}
    old, new = (
        WorkflowHistory.from_json(data["workflow_id"], data["history"])
        for data in (
            json.loads(by_stem[f"node-repair-lift{infix}--Cluster"].read_text()) for infix in ("-before-fleet-memo", "")
        )
    )
    assert FLEET_MEMO_PATCH not in _patches(old) and FLEET_MEMO_PATCH in _patches(new)
    assert all(not set(FLEET_MEMO_KEYS) & set(memo) for memo in _memo_upserts(old))
    published = _memo_upserts(new)
    assert set(FLEET_MEMO_KEYS) <= set(published[0])
    assert any(memo.get("unhealthy_nodes") not in (None, "0") for memo in published), published
