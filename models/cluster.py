"""The state of a tenant cluster as its entity workflow holds it, and the operations on it.

``ClusterStatus`` is answered by the entity's ``status`` query, carried across continue-as-new,
and rendered by ``tenantctl status``. Child operations report their steps into it by signal.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from models.base import FrozenModel, Model
from models.pki import CertificateRecord
from models.spec import ClusterSpec


class ClusterPhase(StrEnum):
    """The cluster's lifecycle phase; also the ``ClusterPhase`` search attribute."""

    PROVISIONING = "Provisioning"
    READY = "Ready"
    ROTATING = "Rotating"
    UPGRADING = "Upgrading"
    DELETING = "Deleting"
    DELETED = "Deleted"
    FAILED = "Failed"


class OperationKind(StrEnum):
    CREATE = "create"
    ROTATE_CERTIFICATES = "rotate-certificates"
    ROTATE_CA = "rotate-ca"
    UPGRADE = "upgrade"
    DELETE = "delete"


# The phase a cluster shows while an operation of each kind runs.
PHASE_OF_OPERATION: dict[OperationKind, ClusterPhase] = {
    OperationKind.CREATE: ClusterPhase.PROVISIONING,
    OperationKind.ROTATE_CERTIFICATES: ClusterPhase.ROTATING,
    OperationKind.ROTATE_CA: ClusterPhase.ROTATING,
    OperationKind.UPGRADE: ClusterPhase.UPGRADING,
    OperationKind.DELETE: ClusterPhase.DELETING,
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

    def step(self, name: str) -> StepStatus:
        for existing in self.steps:
            if existing.name == name:
                return existing
        added = StepStatus(name=name)
        self.steps.append(added)
        return added


class NodeRecord(FrozenModel):
    name: str
    role: str
    kubernetes_version: str


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

    def record_certificates(self, records: list[CertificateRecord]) -> None:
        """Merge issued certificates; the earliest expiry follows them."""
        for record in records:
            self.certificates[record.name] = record
        self.earliest_expiry = min((c.not_after for c in self.certificates.values()), default=None)


class ProgressReport(FrozenModel):
    """A child operation's report to its cluster entity (sent by signal)."""

    workflow_id: str
    step: str | None = None
    step_state: StepState | None = None
    message: str = ""
    progress: Progress | None = None
    paused: bool | None = None
