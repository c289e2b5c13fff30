"""Inputs and results of the workflows and of the cluster entity's updates.

One input and one result model per workflow and per update; new fields get defaults so running
workflows keep decoding their histories.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from models.base import FrozenModel, Model
from models.cluster import ClusterPhase, ClusterStatus, NodeRecord, OperationStatus
from models.durations import Duration
from models.maintenance import Maintenance, MaintenanceOverride
from models.node_health import NodeRepair
from models.pki import CaResult, CertificateRecord
from models.schedules import RotationScheduleResult
from models.spec import Certificates, ClusterSpec, DriftCheck

DEFAULT_MAX_HISTORY_EVENTS = 4000
"""The entity continues-as-new past this many events (well before Temporal's 51,200 limit)."""


# --- the cluster entity ---------------------------------------------------------------------------
class ClusterInput(Model):
    """Start (or continue-as-new) input of the cluster entity workflow."""

    spec: ClusterSpec
    status: ClusterStatus | None = Field(default=None, description="carried across continue-as-new")
    max_history_events: int = Field(default=DEFAULT_MAX_HISTORY_EVENTS, ge=50)
    requested_by: str = ""


class ClusterReport(FrozenModel):
    """The entity's final result, once the cluster is deleted."""

    cluster_id: str
    phase: ClusterPhase
    created_at: datetime | None
    deleted_at: datetime | None
    operations: list[OperationStatus] = Field(default_factory=list)
    teardown: TeardownResult | None = None


# --- create ---------------------------------------------------------------------------------------
class ProvisionInput(FrozenModel):
    spec: ClusterSpec


class ProvisionResult(FrozenModel):
    ca: CaResult
    certificates: list[CertificateRecord]
    nodes: list[NodeRecord]
    schedule: RotationScheduleResult | None = Field(
        default=None, description="the rotation schedule, when the runbook made it (None: older runbooks)"
    )
    operation: OperationStatus | None = Field(
        default=None, description="the operation's final status, steps and all (None: older runbooks)"
    )


# --- certificate rotation -----------------------------------------------------------------------
class RotateCertificatesRequest(FrozenModel):
    force: bool = Field(default=False, description="re-issue every leaf, due or not")
    requested_by: str = Field(default="", description="'schedule' or the user's name, for the record")
    in_window: bool = Field(
        default=False,
        description="run in the maintenance window when one opens before the renewal deadline, else on time "
        "(scheduled and fleet rotations; a person's 'tenantctl rotate' runs at once)",
    )


class RotateCertificatesInput(FrozenModel):
    spec: ClusterSpec
    nodes: list[str]
    force: bool = False


class RotateCertificatesResult(FrozenModel):
    certificates: list[CertificateRecord] = Field(default_factory=list)
    reissued: list[str] = Field(default_factory=list)
    restarted_nodes: list[str] = Field(default_factory=list)
    operation: OperationStatus | None = Field(
        default=None, description="the operation's final status, steps and all (None: older runbooks)"
    )


class RotateCaRequest(FrozenModel):
    requested_by: str = ""
    maintenance_override: MaintenanceOverride | None = Field(
        default=None, description="run now, outside the maintenance window (who and why are recorded)"
    )


class RotateCaInput(FrozenModel):
    spec: ClusterSpec
    nodes: list[str]
    old_issuer_id: str


class RotateCaResult(FrozenModel):
    ca_issuer_id: str
    certificates: list[CertificateRecord] = Field(default_factory=list)
    restarted_nodes: list[str] = Field(default_factory=list)
    operation: OperationStatus | None = Field(
        default=None, description="the operation's final status, steps and all (None: older runbooks)"
    )


# --- rolling upgrade ---------------------------------------------------------------------------
PositiveDuration = Annotated[Duration, Field(gt=timedelta(0))]


class UpgradeRequest(FrozenModel):
    version: str
    requested_by: str = ""
    node_ready_timeout: PositiveDuration | None = Field(
        default=None, description="how long one node may take to become ready before the upgrade pauses"
    )
    drain_timeout: PositiveDuration | None = Field(
        default=None, description="how long one node's drain may take before the upgrade pauses"
    )
    maintenance_override: MaintenanceOverride | None = Field(
        default=None, description="run now, outside the maintenance window (who and why are recorded)"
    )


class UpgradeInput(FrozenModel):
    spec: ClusterSpec = Field(description="the spec at the current version")
    target_version: str
    nodes: list[NodeRecord]
    node_ready_timeout: PositiveDuration | None = Field(default=None, description="None: the policy's default")
    drain_timeout: PositiveDuration | None = Field(default=None, description="None: the policy's default")


class UpgradeOutcome(StrEnum):
    COMPLETED = "completed"
    ABORTED = "aborted"


class UpgradeResult(FrozenModel):
    outcome: UpgradeOutcome
    from_version: str
    to_version: str
    kubernetes_version: str = Field(description="the version every node runs now")
    nodes: list[NodeRecord] = Field(default_factory=list)
    certificates: list[CertificateRecord] = Field(default_factory=list)
    operation: OperationStatus | None = Field(
        default=None, description="the operation's final status, steps and all (None: older runbooks)"
    )


class UpgradeAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


class UpgradeControl(FrozenModel):
    action: UpgradeAction
    reason: str = ""


class UpgradeControlResult(FrozenModel):
    workflow_id: str
    action: UpgradeAction
    queued: bool = Field(default=False, description="the upgrade aborted was still queued: it never started")


class NodeUpgradeState(StrEnum):
    PENDING = "pending"
    UPGRADING = "upgrading"
    DONE = "done"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"


class NodeUpgrade(Model):
    """One entry of an upgrade plan: a node and what replaces it.

    Masters are upgraded in place (``replacement == node``: etcd member identity and data stay);
    workers are replaced by fresh VMs with new names. Entries of one ``batch`` go together (a
    worker batch is ``max_surge + max_unavailable`` wide).
    """

    node: str
    role: str
    replacement: str
    batch: int
    from_version: str
    state: NodeUpgradeState = NodeUpgradeState.PENDING
    phase: str = Field(default="", description="the step in progress or next, e.g. 'drain'")

    @property
    def label(self) -> str:
        return self.node if self.replacement == self.node else f"{self.node} -> {self.replacement}"


class UpgradePlan(Model):
    """What an upgrade does, computed once from its input (the ``plan`` query of RollingUpgrade)."""

    cluster_id: str
    from_version: str
    to_version: str
    max_surge: int
    max_unavailable: int
    nodes: list[NodeUpgrade] = Field(default_factory=list)


# --- teardown ------------------------------------------------------------------------------------
class RunningOperationPolicy(StrEnum):
    WAIT = "wait"
    CANCEL = "cancel"


class DeleteRequest(FrozenModel):
    running_operation: RunningOperationPolicy = RunningOperationPolicy.WAIT
    requested_by: str = ""


class TeardownInput(FrozenModel):
    spec: ClusterSpec
    nodes: list[str] = Field(default_factory=list, description="nodes known to the entity")


class TeardownResult(FrozenModel):
    removed: list[str] = Field(default_factory=list, description="'kind/name' of everything removed")
    revoked_certificates: int = 0
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    operation: OperationStatus | None = Field(
        default=None, description="the operation's final status, steps and all (None: older runbooks)"
    )


# --- configuration changes ---------------------------------------------------------------------
class ConfigureRequest(FrozenModel):
    """Spec changes that need no operation: certificate timing and deletion protection."""

    certificates: Certificates | None = None
    deletion_protection: bool | None = None
    requested_by: str = ""
    drift_check: DriftCheck | None = Field(default=None, description="the periodic drift check (pause, interval)")
    maintenance: Maintenance | None = Field(default=None, description="new maintenance settings (None: unchanged)")
    node_repair: NodeRepair | None = Field(default=None, description="node auto-repair (None: unchanged)")


class ConfigureResult(FrozenModel):
    changed: list[str] = Field(default_factory=list, description="dotted spec fields that changed")
    spec: ClusterSpec


# --- scaling the worker pool ---------------------------------------------------------------------
class ScaleRequest(FrozenModel):
    workers: int = Field(description="the worker count wanted")
    requested_by: str = ""
    node_ready_timeout: PositiveDuration | None = Field(
        default=None, description="how long new workers may take to become ready before the scale pauses"
    )
    drain_timeout: PositiveDuration | None = Field(
        default=None, description="how long one worker's drain may take before the scale pauses"
    )


class ScaleInput(FrozenModel):
    spec: ClusterSpec = Field(description="the spec before the scale (its worker count is the old one)")
    nodes: list[NodeRecord]
    workers: int
    node_ready_timeout: PositiveDuration | None = Field(default=None, description="None: the policy's default")
    drain_timeout: PositiveDuration | None = Field(default=None, description="None: the policy's default")


class ScaleResult(FrozenModel):
    outcome: UpgradeOutcome = Field(description="completed, or aborted by the operator (nodes as they are now)")
    workers: int = Field(description="the worker count the cluster has now")
    nodes: list[NodeRecord] = Field(default_factory=list, description="every node the cluster has now")
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    certificates: list[CertificateRecord] = Field(default_factory=list)
    operation: OperationStatus | None = None
