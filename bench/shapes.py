"""The floor's shapes: how many activities each operation runs, in which waves, for 3 masters + 3 workers.

A *wave* is the set of activities one workflow task schedules together (they run concurrently);
waves run one after another. The floor runs the same waves with activities that do nothing, in one
child workflow started by a parent, so ``product / floor`` is the cost of everything the product
does beyond Temporal's own minimum for that shape.

Where the shapes come from (``python -m bench.shapes`` prints the waves of every recording):

- create: the issue's definition, 14 activities in waves 1,1,1,1,1,1,5,1,1,1 and one child workflow.
- teardown, from ``create-delete--TeardownCluster.json`` (1 master + 2 workers): schedule absent,
  list nodes, every node absent at once, endpoint absent, certificates absent, foundation absent,
  revoke, PKI absent, list what remains; with six nodes the node wave is 6 wide.
- forced rotation, from ``rotate-forced--RotateCertificates.json``: issue every certificate (one
  activity), then per node one restart and one wait for it to be ready, node after node.
- patch upgrade, from ``upgrade--RollingUpgrade.json`` (3 + 3; that recording's one drain refused
  and resumed is left out): list nodes and check health; per master cordon, drain, ensure node, wait
  ready, wait registered, uncordon, check health; per worker issue its certificates, ensure the new
  node, wait ready, wait registered, cordon and drain the old one, remove it, check health; then
  list nodes and check health again.
- drift check of an in-sync cluster, from ``workflows/reconcile.py``: the three observe activities
  side by side, and nothing else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MASTERS = 3
WORKERS = 3
NODES = MASTERS + WORKERS

MASTER_UPGRADE_STEPS = 7  # cordon, drain, ensure_node, wait ready, wait registered, uncordon, health
WORKER_UPGRADE_STEPS = 8  # certificates, ensure_node, wait ready, wait registered, cordon, drain, absent, health


@dataclass(frozen=True)
class Shape:
    """One operation of the floor: the width of each wave, in order."""

    operation: str
    waves: tuple[int, ...]

    @property
    def activities(self) -> int:
        return sum(self.waves)

    def as_dict(self) -> dict[str, Any]:
        return {"operation": self.operation, "waves": list(self.waves), "activities": self.activities}


CREATE = Shape("create", (1, 1, 1, 1, 1, 1, 5, 1, 1, 1))
TEARDOWN = Shape("teardown", (1, 1, NODES, 1, 1, 1, 1, 1, 1))
FORCED_ROTATION = Shape("forced rotation", (1, *(1, 1) * NODES))
PATCH_UPGRADE = Shape(
    "patch upgrade",
    (1, 1, *(1,) * (MASTER_UPGRADE_STEPS * MASTERS), *(1,) * (WORKER_UPGRADE_STEPS * WORKERS), 1, 1),
)
SHAPES: dict[str, Shape] = {s.operation: s for s in (CREATE, TEARDOWN, FORCED_ROTATION, PATCH_UPGRADE)}
DRIFT_CHECK = Shape("drift check", (3,))
"""An in-sync drift check: one observe activity per backend (provider, Vault, schedule) at once, no repair."""


def waves_from_events(events: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """The activity waves of one workflow history (events as in Temporal's JSON export).

    Every ``ACTIVITY_TASK_SCHEDULED`` belongs to the workflow task completed just before it; a workflow
    task that schedules no activity makes no wave.
    """
    waves: list[list[str]] = []
    current: list[str] = []
    for event in events:
        kind = str(event.get("eventType", "")).removeprefix("EVENT_TYPE_")
        if kind == "WORKFLOW_TASK_COMPLETED":
            if current:
                waves.append(current)
            current = []
        elif kind == "ACTIVITY_TASK_SCHEDULED":
            attributes = event.get("activityTaskScheduledEventAttributes", {})
            current.append(str(attributes.get("activityType", {}).get("name", "?")))
    if current:
        waves.append(current)
    return waves


def history_events(path: Path) -> list[dict[str, Any]]:
    """The events of a recording in ``tests/histories`` (``{"history": {"events": [...]}}``)."""
    document = json.loads(path.read_text())
    events: list[dict[str, Any]] = document["history"]["events"]
    return events


def main(paths: list[str]) -> None:
    histories = Path(__file__).resolve().parents[1] / "tests" / "histories"
    for path in [Path(p) for p in paths] or sorted(histories.glob("*.json")):
        waves = waves_from_events(history_events(path))
        widths = ",".join(str(len(w)) for w in waves)
        print(f"{path.name}: {sum(len(w) for w in waves)} activities in waves {widths or '-'}")  # noqa: T201
        for wave in waves:
            print(f"    {len(wave)} x {', '.join(sorted(set(wave)))}")  # noqa: T201
    for shape in SHAPES.values():
        print(f"floor {shape.operation}: {shape.activities} activities in waves {shape.waves}")  # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1:])
