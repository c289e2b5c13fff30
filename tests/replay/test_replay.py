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

from tests.history_checks import assert_no_private_key, assert_replays
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
