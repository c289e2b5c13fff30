"""Fleet rollouts: one operation (upgrade, certificate or CA rotation) over many clusters.

The fleet workflow (``workflows/fleet.py``) asks each cluster's entity for the operation and waits
for its outcome, so a rollout never races a manual operation on the same cluster. These are its
input, result, updates, status and the pure planning rules the CLI's ``--dry-run`` shares.
New fields get defaults so running rollouts keep decoding their histories.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from models.base import FrozenModel, Model
from models.cluster import ClusterPhase, ClusterStatus
from models.durations import Duration, format_duration
from models.maintenance import (
    MaintenanceOverride,
    MaintenanceWindow,
    StartDecision,
    decide_start,
    format_instant,
)
from models.spec import ClusterId
from models.versions import KubernetesVersion, upgrade_refusal

DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=24)
MAX_PARALLEL = 50


def _name(value: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError("must not be empty")
    if len(text) > 200:
        raise ValueError(f"must be at most 200 characters (got {len(text)})")
    return text


def _comment(value: str) -> str:
    if len(value) > 2000:
        raise ValueError(f"must be at most 2000 characters (got {len(value)})")
    return value.strip()


PersonName = Annotated[str, AfterValidator(_name)]
Comment = Annotated[str, AfterValidator(_comment)]
PositiveDuration = Annotated[Duration, Field(gt=timedelta(0))]


class FleetOperation(StrEnum):
    UPGRADE = "upgrade"
    ROTATE_CERTIFICATES = "rotate-certificates"
    ROTATE_CA = "rotate-ca"


# Phases in which an entity takes no new operation (it refuses them, or is gone).
UNOPERABLE_PHASES = (ClusterPhase.DELETING, ClusterPhase.DELETED, ClusterPhase.FAILED)


def fleet_workflow_id(operation: FleetOperation, started: datetime, suffix: str = "") -> str:
    """``fleet/upgrade-20261201-211500`` (``suffix`` keeps two rollouts of one second apart)."""
    return f"fleet/{operation}-{started.strftime('%Y%m%d-%H%M%S')}{f'-{suffix}' if suffix else ''}"


# --- what the rollout knows about each cluster -------------------------------------------------------
class ClusterSnapshot(FrozenModel):
    """One cluster as the rollout plans with it (read from the entity's ``status`` at start)."""

    cluster_id: str
    found: bool = Field(default=True, description="False: no entity workflow answers for this id")
    owner: str = ""
    provider: str = ""
    kubernetes_version: str = ""
    phase: str = ""
    current_operation: str = ""
    maintenance_window: MaintenanceWindow | None = None
    renewal_deadline: datetime | None = Field(
        default=None, description="latest start for a leaf rotation: earliest expiry minus one rotation interval"
    )

    @classmethod
    def from_status(cls, status: ClusterStatus) -> ClusterSnapshot:
        spec = status.spec
        deadline = None
        if status.earliest_expiry is not None:
            deadline = status.earliest_expiry - spec.certificates.rotation_interval
        return cls(
            cluster_id=status.cluster_id,
            owner=spec.owner,
            provider=str(spec.provider),
            kubernetes_version=status.kubernetes_version,
            phase=str(status.phase),
            current_operation=str(status.current.kind) if status.current else "",
            maintenance_window=spec.maintenance.window if spec.maintenance else None,
            renewal_deadline=deadline,
        )


class RolloutClusterState(StrEnum):
    PENDING = "pending"
    WAITING_WINDOW = "waiting-window"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    SKIPPED = "skipped"
    NOT_STARTED = "not-started"

    @property
    def finished(self) -> bool:
        return self in (
            RolloutClusterState.SUCCEEDED,
            RolloutClusterState.FAILED,
            RolloutClusterState.ABORTED,
            RolloutClusterState.SKIPPED,
            RolloutClusterState.NOT_STARTED,
        )


class RolloutCluster(Model):
    """One cluster of the plan and how far it got."""

    cluster_id: str
    canary: bool = False
    state: RolloutClusterState = RolloutClusterState.PENDING
    reason: str = Field(default="", description="why it was skipped, failed, waits or was not started")
    from_version: str = ""
    kubernetes_version: str = ""
    window_opens_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


def skip_reason(operation: FleetOperation, version: str | None, snapshot: ClusterSnapshot) -> str | None:
    """Why a cluster cannot take the operation, or None when it can."""
    if not snapshot.found:
        return "no cluster entity workflow runs under this id"
    if snapshot.phase in UNOPERABLE_PHASES:
        return f"cluster is {snapshot.phase}"
    if operation is FleetOperation.UPGRADE and version is not None:
        return upgrade_refusal(snapshot.kubernetes_version, version)
    return None


def plan_rollout(
    operation: FleetOperation, version: str | None, snapshots: list[ClusterSnapshot], canary: int
) -> list[RolloutCluster]:
    """The rollout's order: the first ``canary`` eligible clusters, then the other eligible ones,
    then the skipped ones with their reason (kept in the plan, so the record shows why)."""
    eligible: list[RolloutCluster] = []
    skipped: list[RolloutCluster] = []
    for snap in snapshots:
        reason = skip_reason(operation, version, snap)
        entry = RolloutCluster(cluster_id=snap.cluster_id, from_version=snap.kubernetes_version)
        if reason is None:
            entry.kubernetes_version = snap.kubernetes_version
            eligible.append(entry)
        else:
            entry.state, entry.reason = RolloutClusterState.SKIPPED, reason
            skipped.append(entry)
    for entry in eligible[:canary]:
        entry.canary = True
    return eligible + skipped


def start_decision(
    operation: FleetOperation, snapshot: ClusterSnapshot, instant: datetime, ignore_window: bool
) -> StartDecision:
    """When the rollout may start the operation on this cluster.

    Upgrades and CA rotations wait for the cluster's window. A leaf rotation waits only for a
    window that opens before its renewal deadline, so no certificate expires while it waits.
    """
    window = None if ignore_window else snapshot.maintenance_window
    deadline = snapshot.renewal_deadline if operation is FleetOperation.ROTATE_CERTIFICATES else None
    if operation is FleetOperation.ROTATE_CERTIFICATES and deadline is not None and deadline <= instant:
        return StartDecision(at=instant, reason="renewal deadline reached: runs now")
    return decide_start(window, instant, deadline)


# --- the rollout's input, updates and result ----------------------------------------------------------
class FleetRolloutInput(FrozenModel):
    operation: FleetOperation
    version: KubernetesVersion | None = Field(default=None, description="target version (upgrades only)")
    force: bool = Field(default=False, description="certificate rotations: re-issue every leaf, due or not")
    cluster_ids: list[ClusterId] = Field(min_length=1, description="the clusters selected, in order")
    selection: str = Field(default="", description="the query that selected them, for the record")
    parallel: int = Field(default=1, ge=1, le=MAX_PARALLEL, description="clusters in flight at most")
    max_failures: int = Field(default=1, ge=1, description="failures after which no new cluster starts")
    canary: int = Field(default=0, ge=0, description="clusters that go first")
    approve_after_canary: bool = False
    approval_timeout: PositiveDuration = Field(default=DEFAULT_APPROVAL_TIMEOUT)
    maintenance_override: MaintenanceOverride | None = None
    requested_by: str = ""
    node_ready_timeout: PositiveDuration | None = Field(
        default=None, description="upgrades: a node not ready within this pauses its cluster's upgrade"
    )
    max_history_events: int | None = Field(
        default=None, ge=20, description="continue-as-new past this many events (None: when Temporal suggests it)"
    )
    carried: FleetCarry | None = Field(default=None, description="the rollout so far, across continue-as-new")

    @model_validator(mode="after")
    def _consistent(self) -> FleetRolloutInput:
        if self.operation is FleetOperation.UPGRADE and self.version is None:
            raise ValueError("version: an upgrade needs a target version")
        if self.operation is not FleetOperation.UPGRADE and self.version is not None:
            raise ValueError(f"version: applies to upgrades only, not {self.operation}")
        if self.node_ready_timeout is not None and self.operation is not FleetOperation.UPGRADE:
            raise ValueError("node_ready_timeout: applies to upgrades only")
        if self.force and self.operation is not FleetOperation.ROTATE_CERTIFICATES:
            raise ValueError("force: applies to certificate rotations only")
        repeated = sorted({c for c in self.cluster_ids if self.cluster_ids.count(c) > 1})
        if repeated:
            raise ValueError(f"cluster_ids: {', '.join(repeated)} listed more than once")
        if self.approve_after_canary and self.canary < 1:
            raise ValueError("approve_after_canary: needs at least one canary (canary >= 1)")
        return self


class ApprovalDecision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class ApprovalRequest(FrozenModel):
    """``fleet approve ID --by NAME [--comment ...]`` (and ``fleet reject``)."""

    by: PersonName = Field(description="who decides")
    comment: Comment = ""


class ApprovalRecord(FrozenModel):
    decision: ApprovalDecision
    by: str
    at: datetime
    comment: str = ""


class FleetAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


class FleetControl(FrozenModel):
    action: FleetAction
    by: str = ""
    reason: Comment = ""


class FleetState(StrEnum):
    RUNNING = "running"
    WAITING_APPROVAL = "waiting-approval"
    PAUSED = "paused"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self in (FleetState.SUCCEEDED, FleetState.FAILED, FleetState.ABORTED)


class FleetStatus(Model):
    """The rollout as its workflow holds it: the ``status`` query and, once done, the result."""

    rollout_id: str
    operation: FleetOperation
    version: str | None = None
    state: FleetState = FleetState.RUNNING
    message: str = ""
    selection: str = ""
    parallel: int = 1
    max_failures: int = 1
    approve_after_canary: bool = False
    requested_by: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    clusters: list[RolloutCluster] = Field(default_factory=list)
    approval: ApprovalRecord | None = None
    maintenance_override: MaintenanceOverride | None = None
    max_in_flight: int = Field(default=0, description="most clusters ever in flight at once")
    log: list[str] = Field(default_factory=list, description="who paused, resumed, aborted or approved, and when")

    def in_state(self, *states: RolloutClusterState) -> list[RolloutCluster]:
        return [c for c in self.clusters if c.state in states]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for cluster in self.clusters:
            found[cluster.state.value] = found.get(cluster.state.value, 0) + 1
        return found


class FleetCarry(Model):
    """What a rollout carries across continue-as-new: its status (plan, every cluster's state, log,
    approval) and what it decided with. Nothing is in flight when it continues, so no cluster is
    asked twice."""

    status: FleetStatus
    snapshots: list[ClusterSnapshot] = Field(default_factory=list)
    paused: bool = False
    stop_reason: str | None = None
    aborted: bool = False
    failures: list[str] = Field(default_factory=list, description="ids of the clusters that failed, in order")
    runs: int = Field(default=1, description="runs of this rollout so far (this one included)")


class FleetControlResult(FrozenModel):
    action: FleetAction
    state: FleetState
    message: str = ""


class FleetRolloutResult(FrozenModel):
    status: FleetStatus


# --- requests to the cluster entities (activity input and output) ---------------------------------------
class DescribeClustersInput(FrozenModel):
    cluster_ids: list[str]


class DescribeClustersResult(FrozenModel):
    clusters: list[ClusterSnapshot]


class ClusterOperationRequest(FrozenModel):
    cluster_id: str
    operation: FleetOperation
    version: str | None = None
    force: bool = False
    request_id: str = Field(description="update id: a retried request is the same update, run once")
    requested_by: str = ""
    node_ready_timeout: PositiveDuration | None = None
    maintenance_override: MaintenanceOverride | None = Field(
        default=None, description="the rollout's --now --reason: the entity runs it outside the window, on the record"
    )


class ClusterOperationOutcome(FrozenModel):
    cluster_id: str
    succeeded: bool
    aborted: bool = Field(default=False, description="an upgrade that was aborted and rolled back")
    paused: bool = Field(default=False, description="an upgrade that paused and waits for an operator")
    message: str = ""
    kubernetes_version: str = ""


class AbortClusterInput(FrozenModel):
    cluster_id: str
    reason: str = ""


class AbortClusterResult(FrozenModel):
    cluster_id: str
    sent: bool
    message: str = ""


# --- what people read ---------------------------------------------------------------------------------
def describe_operation(operation: FleetOperation, version: str | None) -> str:
    return f"upgrade to Kubernetes {version}" if operation is FleetOperation.UPGRADE else str(operation)


def render_details(status: FleetStatus) -> str:
    """Markdown for the Temporal UI's current details of the fleet workflow."""
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status.counts().items()))
    lines = [
        f"**fleet {describe_operation(status.operation, status.version)}** — **{status.state}**",
        f"{len(status.clusters)} clusters: {counts}; at most {status.parallel} at once, "
        f"stops after {status.max_failures} failure(s)",
    ]
    if status.message:
        lines.append(f"message: {status.message}")
    if status.maintenance_override:
        lines.append(f"maintenance windows overridden: {status.maintenance_override.reason}")
    for cluster in status.clusters:
        if cluster.state is RolloutClusterState.SKIPPED:
            continue
        mark = " (canary)" if cluster.canary else ""
        detail = f": {cluster.reason}" if cluster.reason else ""
        lines.append(f"- {cluster.cluster_id}{mark} {cluster.state}{detail}")
    return "\n".join(lines)


def window_wait_reason(opens_at: datetime) -> str:
    return f"waiting for the maintenance window, opens at {format_instant(opens_at)}"


def approval_wait_message(timeout: timedelta) -> str:
    return f"canaries done; waiting for 'tenantctl fleet approve' (aborts after {format_duration(timeout)})"


FleetRolloutInput.model_rebuild()
