"""What ``tenantctl apply`` would change on a live cluster: the field diff and the operations.

Pure: the spec the entity holds and the spec in the file in, the plan out. Fields that cannot
change on a live cluster are refused (each named with its old and new value) before anything
starts; the rest map to entity operations run one at a time, in a safe order: settings first
(certificate timing, deletion protection, maintenance, the periodic drift check, node
auto-repair), then a scale-down (fewer workers to replace), then the upgrade, then a scale-up
(new workers come up at the new version).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from models.base import FrozenModel
from models.spec import ClusterSpec

IMMUTABLE_PREFIXES = (
    "id",
    "provider",
    "base_domain",
    "masters.count",
    "networking.",
    "aws.region",
    "aws.availability_zones",
    "aws.vpc_cidr",
)
"""Fields a live cluster keeps for life: its names, its network, its etcd membership."""
SETTINGS_PREFIXES = ("certificates.", "deletion_protection", "maintenance", "drift_check.", "node_repair.")


class FieldChange(FrozenModel):
    field: str = Field(description="dotted path, e.g. 'workers.count'")
    old: Any = None
    new: Any = None

    def describe(self) -> str:
        return f"{self.field}: {_shown(self.old)} -> {_shown(self.new)}"


class ApplyStep(StrEnum):
    CONFIGURE = "configure"
    SCALE = "scale"
    UPGRADE = "upgrade"


class PlannedOperation(FrozenModel):
    step: ApplyStep
    description: str
    workers: int | None = None
    version: str | None = None


class ApplyPlan(FrozenModel):
    changes: list[FieldChange] = Field(default_factory=list)
    refusals: list[str] = Field(default_factory=list, description="one line per field that cannot change")
    operations: list[PlannedOperation] = Field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return not self.changes


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values; lists are leaves (zones, weekdays compare as a whole)."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat or ({prefix[:-1]: {}} if prefix else {})
    return {prefix[:-1]: data}


def diff(live: ClusterSpec, wanted: ClusterSpec) -> list[FieldChange]:
    old, new = flatten(live.model_dump(mode="json")), flatten(wanted.model_dump(mode="json"))
    return [
        FieldChange(field=path, old=old.get(path), new=new.get(path))
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path)
    ]


def _is(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p.rstrip(".") or path.startswith(p if p.endswith(".") else f"{p}.") for p in prefixes)


def plan_apply(live: ClusterSpec, wanted: ClusterSpec) -> ApplyPlan:
    changes = diff(live, wanted)
    refusals = []
    for change in changes:
        if _is(change.field, IMMUTABLE_PREFIXES):
            refusals.append(f"{change.describe()}: cannot change on a live cluster")
        elif not (_is(change.field, SETTINGS_PREFIXES) or change.field in ("workers.count", "kubernetes_version")):
            refusals.append(f"{change.describe()}: apply cannot change this field on a live cluster yet")
    if live.maintenance is not None and wanted.maintenance is None:
        refusals.append("maintenance: apply cannot remove maintenance settings yet; set the window you want instead")
    if refusals:
        return ApplyPlan(changes=changes, refusals=refusals)
    operations: list[PlannedOperation] = []
    settings = [c.field for c in changes if _is(c.field, SETTINGS_PREFIXES)]
    if settings:
        what = []
        if any(f.startswith("certificates.") for f in settings):
            what.append("certificate timing (rotation schedule, then certificates at the next rotation)")
        if "deletion_protection" in settings:
            what.append(f"deletion protection {'on' if wanted.deletion_protection else 'off'}")
        if any(_is(f, ("maintenance",)) for f in settings):
            what.append("maintenance settings")
        if any(f.startswith("drift_check.") for f in settings):
            what.append("periodic drift check")
        if any(f.startswith("node_repair.") for f in settings):
            what.append("node auto-repair")
        operations.append(PlannedOperation(step=ApplyStep.CONFIGURE, description="configure " + "; ".join(what)))
    old_workers, new_workers = live.workers.count, wanted.workers.count
    scale = PlannedOperation(
        step=ApplyStep.SCALE,
        description=f"scale workers {old_workers} -> {new_workers}",
        workers=new_workers,
    )
    if new_workers < old_workers:
        operations.append(scale)
    if wanted.kubernetes_version != live.kubernetes_version:
        operations.append(
            PlannedOperation(
                step=ApplyStep.UPGRADE,
                description=f"upgrade Kubernetes {live.kubernetes_version} -> {wanted.kubernetes_version}",
                version=wanted.kubernetes_version,
            )
        )
    if new_workers > old_workers:
        operations.append(scale)
    return ApplyPlan(changes=changes, operations=operations)


def _shown(value: Any) -> str:
    text = "(unset)" if value is None else str(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
