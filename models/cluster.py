"""The state of a tenant cluster as its entity workflow holds it, and the operations on it.

``ClusterStatus`` is answered by the entity's ``status`` query, carried across continue-as-new,
and rendered by ``tenantctl status``. Each child operation keeps its own ``OperationStatus``
(its ``progress`` query) and hands the entity the whole of it when the entity must know: a pause,
a resume, a failure, and in its result at the end.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import Field

from models.base import FrozenModel, Model
from models.drift import DriftCheckRecord
from models.maintenance import MaintenanceOverride
from models.node_health import NodeHealthStatus
from models.pki import CertificateRecord
from models.spec import ClusterSpec


class ClusterPhase(StrEnum):
    """The cluster's lifecycle phase; also the ``ClusterPhase`` search attribute."""

    PROVISIONING = "Provisioning"
    READY = "Ready"
    ROTATING = "Rotating"
    UPGRADING = "Upgrading"
    DELETING = "Deleting"
    SCALING = "Scaling"
    DELETED = "Deleted"
    FAILED = "Failed"
    REPAIRING = "Repairing"


class OperationKind(StrEnum):
    CREATE = "create"
    ROTATE_CERTIFICATES = "rotate-certificates"
    ROTATE_CA = "rotate-ca"
    UPGRADE = "upgrade"
    DELETE = "delete"
    RECONCILE = "reconcile"
    SCALE = "scale"
    REPAIR_NODE = "repair-node"


# The phase a cluster shows while an operation of each kind runs.
PHASE_OF_OPERATION: dict[OperationKind, ClusterPhase] = {
    OperationKind.CREATE: ClusterPhase.PROVISIONING,
    OperationKind.ROTATE_CERTIFICATES: ClusterPhase.ROTATING,
    OperationKind.ROTATE_CA: ClusterPhase.ROTATING,
    OperationKind.UPGRADE: ClusterPhase.UPGRADING,
    OperationKind.DELETE: ClusterPhase.DELETING,
    OperationKind.RECONCILE: ClusterPhase.READY,  # a check disrupts nothing; a repair says so in its steps
    OperationKind.SCALE: ClusterPhase.SCALING,
    OperationKind.REPAIR_NODE: ClusterPhase.REPAIRING,
}


class OperationState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED)


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class StepStatus(Model):
    name: str
    state: StepState = StepState.PENDING
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Progress(Model):
    """Countable progress of an operation, e.g. nodes upgraded of nodes total."""

    done: int = 0
    total: int = 0
    current: str = Field(default="", description="what is being worked on now, e.g. 'worker-2'")
    unit: str = "steps"
    phase: str = Field(default="", description="what is happening to it, e.g. 'drain' (upgrades)")


class OperationStatus(Model):
    """One operation on the cluster, as the entity knows it."""

    kind: OperationKind
    workflow_id: str
    state: OperationState = OperationState.QUEUED
    requested_by: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: list[StepStatus] = Field(default_factory=list)
    progress: Progress = Field(default_factory=Progress)
    message: str = ""
    maintenance_override: MaintenanceOverride | None = Field(
        default=None, description="run outside the maintenance window: who and why (--now --reason)"
    )

    def step(self, name: str) -> StepStatus:
        for existing in self.steps:
            if existing.name == name:
                return existing
        added = StepStatus(name=name)
        self.steps.append(added)
        return added

    def refreshed(self, live: OperationStatus) -> OperationStatus:
        """This operation as its own workflow reports it now (the entity's record lags behind:
        children do not tell it every step); who asked for it is only known to the entity."""
        if live.workflow_id != self.workflow_id:
            return self
        return live.model_copy(
            update={
                "requested_by": live.requested_by or self.requested_by,
                "maintenance_override": live.maintenance_override or self.maintenance_override,
            }
        )


class NodeRecord(FrozenModel):
    name: str
    role: str
    kubernetes_version: str


class RetryingCall(Model):
    """An activity of the running operation that failed and is being tried again (from Temporal's
    pending activities: no workflow tells this, the server keeps it)."""

    activity: str
    activity_id: str
    """Tells apart calls of one activity type (``ensure_node`` of each node)."""
    attempt: int
    last_error: str
    next_retry: datetime | None = None

    def describe(self) -> str:
        when = f"; next try {self.next_retry:%H:%M:%S} UTC" if self.next_retry else ""
        return f"{self.activity} attempt {self.attempt}: {self.last_error}{when}"


class QueuedOperation(Model):
    """A disruptive operation accepted by the entity and not started yet: it waits for the
    cluster's maintenance window, or behind the operation that runs now (issue 15)."""

    kind: OperationKind
    request_id: str = Field(description="the update's id: 'upgrade abort' and retried requests find it by it")
    requested_by: str = ""
    detail: str = Field(default="", description="what it will do, e.g. 'to Kubernetes 1.32.5'")
    queued_at: datetime
    window_opens_at: datetime | None = Field(default=None, description="set while it waits for the window")
    deadline: datetime | None = Field(default=None, description="leaf rotations: runs by then, window or not")
    message: str = Field(default="", description="why it waits, e.g. 'waiting for the maintenance window, ...'")
    maintenance_override: MaintenanceOverride | None = None

    def describe(self) -> str:
        what = f"{self.kind}{f' {self.detail}' if self.detail else ''}"
        by = f" (requested by {self.requested_by})" if self.requested_by else ""
        return f"{what}{by}: {self.message or 'queued'}"


class ClusterStatus(Model):
    """Everything the control plane knows about one cluster; the answer to the ``status`` query."""

    cluster_id: str
    spec: ClusterSpec
    phase: ClusterPhase = ClusterPhase.PROVISIONING
    kubernetes_version: str = Field(description="version every node runs (the spec's once an upgrade ends)")
    message: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    current: OperationStatus | None = None
    recent: list[OperationStatus] = Field(default_factory=list, description="last finished operations")
    operations_started: int = Field(default=0, description="sequence number that names child workflows")
    certificates: dict[str, CertificateRecord] = Field(default_factory=dict)
    ca_issuer_id: str = ""
    nodes: dict[str, NodeRecord] = Field(default_factory=dict)
    earliest_expiry: datetime | None = Field(default=None, description="first not-after of any leaf")
    next_rotation: datetime | None = None
    last_check: DriftCheckRecord | None = Field(default=None, description="the last drift check (issue 12)")
    next_check: datetime | None = Field(default=None, description="when the periodic drift check runs next")
    retrying: list[RetryingCall] = Field(
        default_factory=list,
        description="calls of the running operation being tried again: filled in by the CLI from the server's "
        "pending activities (the entity never sets it), so that `status -o json` stays a ClusterStatus",
    )
    node_health: NodeHealthStatus = Field(
        default_factory=NodeHealthStatus, description="unhealthy nodes and node auto-repair (issue 12)"
    )
    queued: list[QueuedOperation] = Field(
        default_factory=list, description="accepted operations not started yet (maintenance window, or behind another)"
    )

    def record_certificates(self, records: list[CertificateRecord]) -> None:
        """Merge issued certificates; the earliest expiry follows them."""
        for record in records:
            self.certificates[record.name] = record
        self.earliest_expiry = min((c.not_after for c in self.certificates.values()), default=None)


def blocked_operations(status: ClusterStatus) -> list[tuple[str, str]]:
    """(kind, state) of what waits for a person: the running operation when it is paused, or, when
    nothing runs, the last finished operation when it failed."""
    blocked: list[tuple[str, str]] = []
    current = status.current
    if current is not None and current.state is OperationState.PAUSED:
        blocked.append((current.kind.value, current.state.value))
    finished = [op for op in status.recent if op.finished_at is not None]
    if current is None and finished:
        last = max(finished, key=lambda op: op.finished_at or datetime.min.replace(tzinfo=UTC))
        if last.state is OperationState.FAILED:
            blocked.append((last.kind.value, last.state.value))
    return blocked


FLEET_MEMO_KEYS: tuple[str, ...] = ("blocked", "unhealthy_nodes", "repair_held")
"""The entity memo's values the fleet metrics read (with the search attributes and earliest_expiry)."""


def fleet_memo(status: ClusterStatus) -> dict[str, str]:
    """What the fleet metrics read of a cluster, as memo strings: its blocked operations
    (``kind:state``, comma-separated), how many nodes are unhealthy, and whether repair holds back."""
    unhealthy = status.node_health.unhealthy
    return {
        "blocked": ",".join(f"{kind}:{state}" for kind, state in blocked_operations(status)),
        "unhealthy_nodes": str(len(unhealthy)),
        "repair_held": "yes" if unhealthy and status.node_health.held else "",
    }


def blocked_from_memo(text: str) -> tuple[tuple[str, str], ...]:
    """The (kind, state) pairs ``fleet_memo`` wrote."""
    pairs = (item.partition(":") for item in text.split(","))
    return tuple((kind, state) for kind, sep, state in pairs if sep)


class ProgressReport(FrozenModel):
    """A step delta sent by signal to the cluster entity by operations started before children
    reported whole ``OperationStatus`` snapshots; still decoded for those."""

    workflow_id: str
    step: str | None = None
    step_state: StepState | None = None
    message: str = ""
    progress: Progress | None = None
    paused: bool | None = None
