"""What a drift check observes and what a reconcile did (the ``reconcile`` operation).

One observe activity per backend (the provider's host objects or AWS resources, Vault, the
rotation schedule) lists what carries the cluster's label or tag, diffs it against what the spec
implies inside the activity, and returns a ``DriftReport``: small, and empty when in sync, so an
in-sync check writes next to nothing into history.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from models.base import FrozenModel, Model
from models.spec import ClusterSpec


class DriftKind(StrEnum):
    MISSING = "missing"
    """The spec implies it; it does not exist."""
    CHANGED = "changed"
    """It exists, but a field tenantctl owns differs."""
    EXTRA = "extra"
    """It carries the cluster's label or tag, but the spec does not explain it."""


class Backend(StrEnum):
    PROVIDER = "provider"
    VAULT = "vault"
    SCHEDULE = "schedule"


class DriftItem(FrozenModel):
    kind: DriftKind
    object: str = Field(description="what differs, e.g. 'deployment/worker-1' or 'vault:role/kubelet'")
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.object}" + (f" ({self.detail})" if self.detail else "")


class DriftReport(FrozenModel):
    """What one backend's observe found; empty when that backend is in sync."""

    backend: Backend
    items: list[DriftItem] = Field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not self.items

    def of(self, kind: DriftKind) -> list[str]:
        return [i.object for i in self.items if i.kind is kind]


class ObserveInput(FrozenModel):
    """Input of every observe activity: the spec and the nodes the entity knows, with their versions."""

    spec: ClusterSpec
    nodes: dict[str, str] = Field(description="node name -> Kubernetes version it should run")


class CheckOutcome(StrEnum):
    IN_SYNC = "in sync"
    REPAIRED = "repaired"
    DRIFT = "drift found (dry run, nothing changed)"
    FAILED = "failed"
    SKIPPED = "skipped"


class DriftCheckRecord(Model):
    """The last drift check, as ``status`` shows it (also the ``DriftCheck`` search attribute)."""

    at: datetime
    outcome: CheckOutcome
    drift: list[str] = Field(default_factory=list, description="what differed, as observed")
    repaired: list[str] = Field(default_factory=list, description="the repair steps that ran")
    restarted: list[str] = Field(default_factory=list, description="nodes restarted for re-issued certificates")
    message: str = Field(default="", description="why it was skipped or failed")
