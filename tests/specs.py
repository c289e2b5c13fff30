"""Cluster specs for tests, derived from the shipped examples."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from models.spec import ClusterSpec, parse_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str = "kvm-cluster.yaml", **changes: Any) -> ClusterSpec:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    # Periodic drift checks stay off unless a test asks for them: test servers are shared by the
    # session, and an entity a test leaves behind would keep scheduling checks that no worker runs
    # (on the time-skipping server such pending work stops time skipping for every later test).
    data.setdefault("drift_check", {"paused": True})
    data.update(changes)
    return parse_spec(data, name)


def unique_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def small_kvm(**changes: Any) -> ClusterSpec:
    """A 1-master/2-worker KVM cluster with a fresh id."""
    base: dict[str, Any] = {
        "id": unique_id(),
        "masters": {"count": 1, "cpu": 2, "memory": "4Gi"},
        "workers": {"count": 2, "cpu": 2, "memory": "4Gi"},
    }
    base.update(changes)
    return example("kvm-cluster.yaml", **base)
