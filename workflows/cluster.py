"""The cluster entity: one long-lived workflow per tenant cluster (id ``cluster/<id>``).

It owns the desired spec and the status, answers the ``status`` query, and runs one operation at a
time as a child workflow (create, certificate rotation, CA rotation, upgrade, delete), in the order
requests arrive: a rotation that comes due during an upgrade waits for it instead of racing it.
Updates are validated before they are accepted, so a refused request leaves no trace and changes
nothing. The entity continues-as-new (carrying its status) before its history grows large, and
completes with a final report once the cluster is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError

from models.cluster import (
    PHASE_OF_OPERATION,
    ClusterPhase,
    ClusterStatus,
    NodeRecord,
    OperationKind,
    OperationState,
    OperationStatus,
    ProgressReport,
    QueuedOperation,
    StepState,
    fleet_memo,
)
from models.drift import CheckOutcome, DriftCheckRecord, DriftReport
from models.errors import InvalidInput, innermost_message
from models.maintenance import MaintenanceOverride, StartDecision, decide_start, leaf_rotation_deadline
from models.naming import node_role, operation_workflow_id
from models.node_health import decide, look_decision, observed_unhealthy, tracked
from models.node_repair import NodeRepairInput, NodeRepairResult
from models.operations import (
    ClusterInput,
    ClusterReport,
    ConfigureRequest,
    ConfigureResult,
    DeleteRequest,
    ProvisionInput,
    ProvisionResult,
    RotateCaInput,
    RotateCaRequest,
    RotateCaResult,
    RotateCertificatesInput,
    RotateCertificatesRequest,
    RotateCertificatesResult,
    RunningOperationPolicy,
    ScaleInput,
    ScaleRequest,
    ScaleResult,
    TeardownInput,
    TeardownResult,
    UpgradeAction,
    UpgradeControl,
    UpgradeControlResult,
    UpgradeInput,
    UpgradeOutcome,
    UpgradeRequest,
    UpgradeResult,
)
from models.pki import SignedUserCertificate, SignUserCertificateRequest
from models.provider import NodesResult
from models.reconcile import IfBusy, ReconcileInput, ReconcileRequest, ReconcileResult
from models.schedules import RotationScheduleResult, SyncScheduleRequest, SyncScheduleResult
from models.spec import ClusterSpec, describe_validation_error
from models.tenant import HealthResult
from models.versions import upgrade_refusal
from workflows import activity_stubs as act
from workflows import metric_names, policies
from workflows import search_attributes as sa
from workflows.journal import render_operation
from workflows.names import (
    CLUSTER_WORKFLOW,
    LEGACY_PROGRESS_SIGNAL,
    NODE_REPAIR_WORKFLOW,
    OPERATION_SIGNAL,
    PROVISION_WORKFLOW,
    RECONCILE_WORKFLOW,
    ROTATE_CA_WORKFLOW,
    ROTATE_CERTIFICATES_WORKFLOW,
    SCALE_WORKFLOW,
    TEARDOWN_WORKFLOW,
    UPGRADE_CONTROL_SIGNAL,
    UPGRADE_WORKFLOW,
)
from workflows.side_by_side import together

ResultT = TypeVar("ResultT", bound=BaseModel)

RECENT_OPERATIONS_KEPT = 10
DRIFT_CHECK_PATCH = "entity-periodic-drift-check"
"""Entities started before drift checks waited without a timer; their histories replay that way."""
NODE_REPAIR_PATCH = "entity-node-auto-repair"
"""Entities whose periodic check ran before node auto-repair only checked for drift; they replay that way."""
IN_PLACE_CHECK_PATCH = "entity-periodic-check-observes-in-place"
"""Periodic checks of entities from before this patch started a reconcile child every time; newer
ones first observe from the entity (the observes as its own activities) and start the child only when
something differs (the in-sync check costs no child workflow)."""
PENDING_UPGRADES_PATCH = "entity-refuses-a-second-upgrade"
"""Upgrade handlers from before it kept no record of their target: their histories replay that way."""
_CONTROLLED = (OperationKind.UPGRADE, OperationKind.SCALE)
"""Operations that pause on a failure and take the upgrade's resume/abort controls."""
MAINTENANCE_WINDOW_PATCH = "entity-maintenance-window"
"""Upgrades and CA rotations (and window-minded leaf rotations) queue for the maintenance window
without holding the operation lock; entities from before ran them in arrival order at once."""
LIST_MEMO_PATCH = "entity-list-memo"
"""The memo 'tenantctl list' reads (current operation, earliest expiry, last drift check)."""
FLEET_MEMO_PATCH = "entity-fleet-memo"
"""The memo also carries what the fleet metrics read (blocked operations, unhealthy nodes, repair
held), so that a worker's metrics come from one visibility listing instead of a status query per
cluster; entities from before published the list's four values only and replay that way."""
HOLD_LIFT_PATCH = "entity-node-repair-grace-after-short-circuit"
"""Nodes held by a node-repair short-circuit are due ``unhealthy_after`` from when it lifted; entities
from before repaired them at once (as soon as fewer were unhealthy) and replay that way."""


class _WindowClosed(Exception):
    """Raised under the lock when a queued operation's turn comes after its window closed again."""


class Refused(ApplicationError):
    """A request the entity cannot run in its current state (fails the update, not the workflow)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type=InvalidInput.__name__, non_retryable=True)


@workflow.defn(name=CLUSTER_WORKFLOW)
class ClusterWorkflow:
    @workflow.init
    def __init__(self, input: ClusterInput) -> None:
        spec = input.spec
        now = workflow.now()
        self.status = input.status or ClusterStatus(
            cluster_id=spec.id,
            spec=spec,
            kubernetes_version=spec.kubernetes_version,
            created_at=now,
            updated_at=now,
        )
        self._max_history_events = input.max_history_events
        self._lock = asyncio.Lock()
        self._child: workflow.ChildWorkflowHandle[Any, Any] | None = None
        self._deleting = False
        self._teardown: TeardownResult | None = None
        self._published: tuple[str, str] | None = None
        self._published_check: CheckOutcome | None = None
        self._timer_setting: tuple[object, ...] | None = None
        self._watching_nodes = False  # the periodic check with node auto-repair runs
        self._node_look: tuple[NodesResult, HealthResult] | str | None = None
        # Targets of the upgrade requests accepted and not finished (running or queued), oldest
        # first. Empty at continue-as-new: the entity waits for every handler to finish first.
        self._pending_upgrades: list[str] = []
        self._published_memo: dict[str, str] | None = None
        self._queued_runs: dict[str, asyncio.Task[Any]] = {}
        self._aborted_queued: dict[str, str] = {}  # request id -> why it was aborted before it started
        self._started_queued: set[str] = set()
        self.status.queued = []  # carried across continue-as-new only empty: their updates ended with the run

    # --- the entity's life ------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: ClusterInput) -> ClusterReport:
        self._publish()
        if input.status is None:
            # A failed create is recorded as phase Failed; the entity stays up so it can be deleted.
            with contextlib.suppress(ApplicationError):
                await self._create(input.requested_by)
        if workflow.patched(DRIFT_CHECK_PATCH):
            await self._check_periodically()
        else:  # an entity from before drift checks: it only waits
            await workflow.wait_condition(self._should_stop)
        # Updates in flight (queued operations) finish before the entity completes or continues.
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.status.phase is ClusterPhase.DELETED:
            return ClusterReport(
                cluster_id=self.status.cluster_id,
                phase=self.status.phase,
                created_at=self.status.created_at,
                deleted_at=self.status.updated_at,
                operations=self.status.recent,
                teardown=self._teardown,
            )
        workflow.logger.info("continuing as new after %d events", workflow.info().get_current_history_length())
        workflow.continue_as_new(
            ClusterInput(spec=self.status.spec, status=self.status, max_history_events=self._max_history_events)
        )

    def _should_stop(self) -> bool:
        # An operation waiting for its maintenance window keeps the entity from continuing as new
        # (its update would end with the run): the periodic checks go on meanwhile, a window wait
        # must not delay them.
        long_history = self._history_is_long() and not any(q.window_opens_at for q in self.status.queued)
        return self.status.phase is ClusterPhase.DELETED or long_history

    async def _check_periodically(self) -> None:
        """The periodic drift check: a durable timer per interval, until deleted or continuing as new.

        A change of the setting (pause, interval) wakes the timer and starts a new one. A check due
        while another operation runs is skipped (and says so): the next one comes soon enough.
        """
        if workflow.patched(NODE_REPAIR_PATCH):
            await self._check_and_repair_periodically()
            return
        while not self._should_stop():
            if await self._check_is_due():
                with contextlib.suppress(ApplicationError):
                    await self._reconcile(ReconcileRequest(requested_by="periodic drift check", if_busy=IfBusy.SKIP))

    async def _check_and_repair_periodically(self) -> None:
        """The periodic check with node auto-repair: each check looks at drift, then at node health.

        Besides the check's own timer, the entity wakes when an unhealthy node comes due for repair
        (``unhealthy_after`` after it was first seen), so a node is repaired within the setting plus
        one check interval of going bad.
        """
        self._watching_nodes = True
        while not self._should_stop():
            due = await self._next_due()
            if due == "check":
                with contextlib.suppress(ApplicationError):
                    await self._reconcile(ReconcileRequest(requested_by="periodic drift check", if_busy=IfBusy.SKIP))
            if due is not None:
                await self._watch_nodes()

    async def _next_due(self) -> str | None:
        """Wait for the next check ("check") or node repair coming due ("repair"); None when woken by a
        change of setting or state. One durable timer, to whichever comes first."""
        spec, checkable = self.status.spec, self._checkable()
        setting = (spec.drift_check, spec.node_repair)
        checking = checkable and not spec.drift_check.paused
        now = workflow.now()
        if not checking:
            self.status.next_check = None
        elif self.status.next_check is None or self._timer_setting != setting:
            self.status.next_check = now + spec.drift_check.interval
        self._timer_setting = setting
        wake = self.status.next_check
        repair_due = self._repair_due() if checking else None
        if wake is not None and repair_due is not None and repair_due < wake:
            wake = repair_due
        if wake is not None and wake <= now:
            return self._due_now(now)
        try:
            await workflow.wait_condition(
                lambda: (
                    self._should_stop()
                    or (self.status.spec.drift_check, self.status.spec.node_repair) != setting
                    or self._checkable() != checkable
                ),
                timeout=(wake - now) if wake is not None else None,
                timeout_summary="next drift check" if wake == self.status.next_check else "node repair due",
            )
        except TimeoutError:
            return self._due_now(workflow.now())
        return None

    def _due_now(self, now: datetime) -> str:
        if self.status.next_check is not None and self.status.next_check <= now:
            self.status.next_check = None  # the next one is counted from the end of this one
            return "check"
        return "repair"

    def _repair_due(self) -> datetime | None:
        health = self.status.node_health
        if not health.unhealthy:
            return None
        setting, now = self.status.spec.node_repair, workflow.now()
        return decide(self._node_names(), health.unhealthy, setting, now, health.hold_lifted_at).next_due

    async def _watch_nodes(self) -> None:
        """Observe node health (one activity per backend) and repair what is due, one node at a time.

        Skipped while another operation runs (an upgrade or a scale makes nodes unready on purpose):
        the next check looks again.
        """
        for _ in range(len(self._node_names()) + 1):  # each round repairs one node; bounded
            if self._lock.locked() or not self._checkable():
                return
            node, reason = await self._observe_nodes()
            if node is None:
                return
            if not await self._repair_node(node, reason):
                return

    async def _observe_nodes(self) -> tuple[str | None, str]:
        spec, nodes, health = self.status.spec, self._node_names(), self.status.node_health
        look, self._node_look = self._node_look, None  # taken beside this check's drift look, if any
        if look is None:
            look = await self._look_at_nodes()
        if isinstance(look, str):
            health.note = f"node health not observed: {look}"
            self._publish()
            return None, ""
        machines, tenant = look
        now = workflow.now()
        health.unhealthy = tracked(health.unhealthy, observed_unhealthy(nodes, machines, tenant), now)
        health.observed_at = now
        decision = look_decision(health, nodes, spec.node_repair, now, lambda: workflow.patched(HOLD_LIFT_PATCH))
        health.held = "; ".join(decision.held)
        health.note = (
            f"tenant API unreachable ({tenant.api_detail}): judged by the VMs/instances only"
            if not tenant.api_reachable
            else ""
        )
        self._publish()
        return decision.node, decision.reason

    async def _look_at_nodes(self) -> tuple[NodesResult, HealthResult] | str:
        """The VMs/instances and the tenant API's Nodes (two activities whatever the size); the
        error message when they could not be observed."""
        try:
            return await act.observe_nodes(self.status.spec, self._node_names())
        except ActivityError as err:
            return innermost_message(err)

    async def _repair_node(self, node: str, reason: str) -> bool:
        """Run the repair operation for ``node``; False when it failed or could not run."""
        health = self.status.node_health
        repair_number = health.repairs_started + 1

        def repair_input() -> NodeRepairInput:
            if node not in self._node_names():  # an operation queued before it replaced or removed it
                raise Refused(f"{node} is no longer a node of {self.status.cluster_id}; nothing to repair")
            health.repairs_started = repair_number
            return NodeRepairInput(
                spec=self.status.spec,
                node=node,
                reason=reason,
                nodes=list(self.status.nodes.values()) or self._spec_node_records(),
                repair_number=repair_number,
            )

        try:
            result = await self._operate(
                OperationKind.REPAIR_NODE,
                NODE_REPAIR_WORKFLOW,
                repair_input,
                NodeRepairResult,
                f"node auto-repair: {node} unhealthy ({reason})",
            )
        except Refused:
            return False  # not run: the next look decides again
        except ApplicationError as err:
            self._count_node_repair(node, "failed")
            if node in health.unhealthy:  # tried again once it has been unhealthy that long again
                health.unhealthy[node] = health.unhealthy[node].model_copy(update={"since": workflow.now()})
            health.last_repair = f"{node}: failed: {err.message}"
            self._publish()
            return False
        nodes = self.status.nodes or {r.name: r for r in self._spec_node_records()}
        if result.replacement is not None:
            nodes = {n: r for n, r in nodes.items() if n != node}
            nodes[result.replacement.name] = result.replacement
            self.status.certificates.pop(f"node-{node}", None)  # revoked and deleted with the node
        self.status.nodes = nodes
        self.status.record_certificates(result.certificates)
        health.unhealthy.pop(node, None)
        health.last_repair = result.describe()
        self._count_node_repair(node, "succeeded")
        self._publish()
        return True

    def _count_node_repair(self, node: str, outcome: str) -> None:
        counter = workflow.metric_meter().create_counter(metric_names.NODE_REPAIRS, "node auto-repairs, by outcome")
        counter.add(1, {"role": node_role(node), "outcome": outcome})

    def _spec_node_records(self) -> list[NodeRecord]:
        version = self.status.kubernetes_version
        return [
            NodeRecord(name=n, role=node_role(n), kubernetes_version=version) for n in self.status.spec.node_names()
        ]

    async def _check_is_due(self) -> bool:
        """Wait one interval (a durable timer); False when woken early by a change of setting or state."""
        setting, checkable = self.status.spec.drift_check, self._checkable()
        checking = checkable and not setting.paused
        self.status.next_check = workflow.now() + setting.interval if checking else None
        try:
            await workflow.wait_condition(
                lambda: (
                    self._should_stop() or self.status.spec.drift_check != setting or self._checkable() != checkable
                ),
                timeout=setting.interval if checking else None,
                timeout_summary="next drift check",
            )
        except TimeoutError:
            return True
        return False

    def _checkable(self) -> bool:
        phase = self.status.phase
        return not self._deleting and phase not in (ClusterPhase.FAILED, ClusterPhase.DELETED, ClusterPhase.DELETING)

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._max_history_events

    async def _create(self, requested_by: str) -> None:
        result = await self._operate(
            OperationKind.CREATE,
            PROVISION_WORKFLOW,
            ProvisionInput(spec=self.status.spec),
            ProvisionResult,
            requested_by,
        )
        self.status.ca_issuer_id = result.ca.issuer_id
        self.status.record_certificates(result.certificates)
        self.status.nodes = {n.name: n for n in result.nodes}
        if result.schedule is not None:
            self._show_schedule(result.schedule)
        else:  # created by a runbook from before the schedule step: make the schedule here
            await self._sync_schedule()

    def _show_schedule(self, schedule: RotationScheduleResult) -> None:
        self.status.next_rotation = None if schedule.paused else next(iter(schedule.next_runs), None)
        self._publish()

    async def _sync_schedule(self) -> bool:
        """Converge the rotation schedule on the spec (idempotent: also repairs a deleted schedule).

        Returns whether the schedule is paused (False when there is none to sync).
        """
        if self.status.phase in (ClusterPhase.FAILED, ClusterPhase.DELETED) or self._deleting:
            return False
        try:
            schedule = await act.ensure_rotation_schedule(self.status.spec)
        except ActivityError as err:
            # The cluster itself is fine; say so loudly instead of failing the entity. The next
            # operation (or 'tenantctl schedule resume') tries again.
            self.status.next_rotation = None
            self._set_phase(self.status.phase, f"rotation schedule not ensured: {innermost_message(err)}")
            return False
        self._show_schedule(schedule)
        return schedule.paused

    # --- queries and signals ----------------------------------------------------------------------
    @workflow.query(name="status")
    def get_status(self) -> ClusterStatus:
        return self.status

    @workflow.signal(name=OPERATION_SIGNAL)
    def report_operation(self, snapshot: OperationStatus) -> None:
        """A child's whole status (on a pause, a resume or a failure): taken as it is."""
        op = self.status.current
        if op is None or op.workflow_id != snapshot.workflow_id:
            return  # a late report of an operation already finished
        self.status.current = op.refreshed(snapshot)
        self._publish()

    @workflow.signal(name=LEGACY_PROGRESS_SIGNAL)
    def report_progress(self, report: ProgressReport) -> None:
        """A step delta from an operation started before snapshots (see ``workflows.journal``)."""
        op = self.status.current
        if op is None or op.workflow_id != report.workflow_id:
            return
        if report.step is not None:
            step = op.step(report.step)
            if report.step_state is not None:
                step.state = report.step_state
            step.message = report.message or step.message
        if report.progress is not None:
            op.progress = report.progress
        if report.paused is not None:
            op.state = OperationState.PAUSED if report.paused else OperationState.RUNNING
            op.message = report.message
        self._publish()

    # --- updates ----------------------------------------------------------------------------------
    @workflow.update
    async def rotate_certificates(self, request: RotateCertificatesRequest) -> RotateCertificatesResult:
        def run(starting: Callable[[], None] | None = None) -> Awaitable[RotateCertificatesResult]:
            def make_input() -> RotateCertificatesInput:
                if starting is not None:
                    starting()
                return RotateCertificatesInput(spec=self.status.spec, nodes=self._node_names(), force=request.force)

            return self._operate(
                OperationKind.ROTATE_CERTIFICATES,
                ROTATE_CERTIFICATES_WORKFLOW,
                make_input,
                RotateCertificatesResult,
                request.requested_by,
            )

        if request.in_window and workflow.patched(MAINTENANCE_WINDOW_PATCH):
            # In the window when one opens before the renewal deadline, else on time.
            queued = await self._when_due(OperationKind.ROTATE_CERTIFICATES, request.requested_by, "", None, run, True)
            if queued is None:
                raise Refused(f"the certificate rotation of {self.status.cluster_id} was aborted before it started")
            result = queued
        else:
            result = await run()
        self.status.record_certificates(result.certificates)
        await self._sync_schedule()
        return result

    @rotate_certificates.validator
    def _validate_rotate_certificates(self, request: RotateCertificatesRequest) -> None:
        self._refuse_unless_operable("rotate certificates")

    @workflow.update
    async def rotate_ca(self, request: RotateCaRequest) -> RotateCaResult:
        def run(starting: Callable[[], None] | None = None) -> Awaitable[RotateCaResult]:
            def make_input() -> RotateCaInput:
                if starting is not None:
                    starting()
                return RotateCaInput(
                    spec=self.status.spec, nodes=self._node_names(), old_issuer_id=self.status.ca_issuer_id
                )

            return self._operate(
                OperationKind.ROTATE_CA,
                ROTATE_CA_WORKFLOW,
                make_input,
                RotateCaResult,
                request.requested_by,
                request.maintenance_override,
            )

        if workflow.patched(MAINTENANCE_WINDOW_PATCH):
            override = request.maintenance_override
            queued = await self._when_due(OperationKind.ROTATE_CA, request.requested_by, "", override, run)
            if queued is None:
                raise Refused(f"the CA rotation of {self.status.cluster_id} was aborted before it started")
            result = queued
        else:
            result = await run()
        self.status.ca_issuer_id = result.ca_issuer_id
        self.status.certificates = {}
        self.status.record_certificates(result.certificates)
        return result

    @rotate_ca.validator
    def _validate_rotate_ca(self, request: RotateCaRequest) -> None:
        self._refuse_unless_operable("rotate the CA")

    @workflow.update
    async def upgrade(self, request: UpgradeRequest) -> UpgradeResult:
        def run(starting: Callable[[], None] | None = None) -> Awaitable[UpgradeResult]:
            def upgrade_input() -> UpgradeInput:
                # Checked again once it is this request's turn: an upgrade queued behind another sees
                # the version that one left behind.
                refusal = upgrade_refusal(self.status.kubernetes_version, request.version)
                if refusal:
                    raise Refused(f"cannot upgrade {self.status.cluster_id}: {refusal}")
                if starting is not None:
                    starting()
                return UpgradeInput(
                    spec=self.status.spec,
                    target_version=request.version,
                    nodes=list(self.status.nodes.values()),
                    node_ready_timeout=request.node_ready_timeout,
                    drain_timeout=request.drain_timeout,
                )

            return self._operate(
                OperationKind.UPGRADE,
                UPGRADE_WORKFLOW,
                upgrade_input,
                UpgradeResult,
                request.requested_by,
                request.maintenance_override,
            )

        tracked = workflow.patched(PENDING_UPGRADES_PATCH)
        if tracked:
            self._pending_upgrades.append(request.version)
        try:
            if workflow.patched(MAINTENANCE_WINDOW_PATCH):
                detail = f"to Kubernetes {request.version}"
                queued = await self._when_due(
                    OperationKind.UPGRADE, request.requested_by, detail, request.maintenance_override, run
                )
                if queued is None:  # aborted before it started: nothing changed
                    version = self.status.kubernetes_version
                    return UpgradeResult(
                        outcome=UpgradeOutcome.ABORTED, from_version=version, to_version=request.version,
                        kubernetes_version=version, nodes=list(self.status.nodes.values()),
                    )  # fmt: skip
                result = queued
            else:
                result = await run()
        finally:
            if tracked:
                self._pending_upgrades.remove(request.version)
        before = set(self.status.nodes)
        self.status.nodes = {n.name: n for n in result.nodes} or self.status.nodes
        for gone in before - set(self.status.nodes):
            # A replaced worker's kubelet certificate is no one's any more: it must not hold the
            # earliest expiry (rotations only re-issue the certificates of nodes that exist).
            self.status.certificates.pop(f"node-{gone}", None)
        self.status.record_certificates(result.certificates)
        self.status.kubernetes_version = result.kubernetes_version
        if result.outcome is UpgradeOutcome.COMPLETED:
            self.status.spec = self.status.spec.model_copy(update={"kubernetes_version": result.to_version})
        self._publish()
        return result

    @upgrade.validator
    def _validate_upgrade(self, request: UpgradeRequest) -> None:
        self._refuse_unless_operable("upgrade")
        # One upgrade at a time: a second one accepted now would only be refused (or undo the
        # first) when its turn came, after the CLI had said "accepted".
        current, cid = self.status.current, self.status.cluster_id
        if current is not None and current.kind is OperationKind.UPGRADE:
            raise Refused(
                f"an upgrade of {cid} is already {current.state.lower()} ({current.workflow_id}); wait for it "
                f"to end, or stop it with 'tenantctl upgrade abort {cid}'"
            )
        if self._pending_upgrades:
            ahead = f" behind the running {current.kind}" if current is not None else ""
            raise Refused(
                f"an upgrade of {cid} to {self._pending_upgrades[0]} is already queued{ahead}; wait for it to "
                f"end ('tenantctl watch {cid}')"
            )
        refusal = upgrade_refusal(self.status.kubernetes_version, request.version)
        if refusal:
            raise Refused(f"cannot upgrade {self.status.cluster_id}: {refusal}")

    @workflow.update
    async def scale(self, request: ScaleRequest) -> ScaleResult:
        def scale_input() -> ScaleInput:
            # Checked again once it is this request's turn (an operation queued before it may
            # have changed the pool).
            self._scaled_spec(request.workers)
            return ScaleInput(
                spec=self.status.spec,
                nodes=list(self.status.nodes.values()),
                workers=request.workers,
                node_ready_timeout=request.node_ready_timeout,
                drain_timeout=request.drain_timeout,
            )

        result = await self._operate(
            OperationKind.SCALE, SCALE_WORKFLOW, scale_input, ScaleResult, request.requested_by
        )
        self.status.nodes = {n.name: n for n in result.nodes}
        for gone in result.removed:
            self.status.certificates.pop(f"node-{gone}", None)  # revoked and deleted with the node
        self.status.record_certificates(result.certificates)
        workers = self.status.spec.workers.model_copy(update={"count": result.workers})
        self.status.spec = self.status.spec.model_copy(update={"workers": workers})
        self._publish()
        return result

    @scale.validator
    def _validate_scale(self, request: ScaleRequest) -> None:
        self._refuse_unless_operable("scale")
        self._scaled_spec(request.workers)

    def _scaled_spec(self, workers: int) -> ClusterSpec:
        """The spec with ``workers`` workers; refused (naming the field and why) when it cannot be."""
        cid = self.status.cluster_id
        if self._deleting:
            raise Refused(f"cannot scale: cluster {cid} is being deleted")
        current = self.status.spec.workers.count
        if workers == current:
            raise Refused(f"cluster {cid} already has {workers} workers; nothing to scale")
        data = self.status.spec.model_dump()
        data["workers"]["count"] = workers
        try:
            return ClusterSpec.model_validate(data)
        except ValidationError as exc:
            raise Refused(
                f"cannot scale {cid} to {workers} workers: " + "; ".join(describe_validation_error(exc))
            ) from None

    @workflow.update
    async def control_upgrade(self, control: UpgradeControl) -> UpgradeControlResult:
        current = self.status.current
        waiting = self._queued_upgrade()
        running = current is not None and current.kind in _CONTROLLED and self._child is not None
        if not running and waiting is not None and control.action is UpgradeAction.ABORT:
            self._abort_queued(waiting, control.reason)
            return UpgradeControlResult(workflow_id="", action=control.action, queued=True)
        if current is None or current.kind not in _CONTROLLED or self._child is None:
            raise Refused(f"no upgrade of {self.status.cluster_id} is running")
        await self._child.signal(UPGRADE_CONTROL_SIGNAL, control)
        return UpgradeControlResult(workflow_id=current.workflow_id, action=control.action)

    @control_upgrade.validator
    def _validate_control_upgrade(self, control: UpgradeControl) -> None:
        current = self.status.current
        running = current is not None and current.kind in _CONTROLLED
        if not running and control.action is UpgradeAction.ABORT and self._queued_upgrade() is not None:
            return  # an upgrade still waiting (for its window, or behind another operation) can be aborted
        if current is None or current.kind not in _CONTROLLED:
            raise Refused(f"no upgrade of {self.status.cluster_id} is running, nothing to {control.action}")
        if control.action is UpgradeAction.RESUME and current.state is not OperationState.PAUSED:
            raise Refused(f"the {current.kind} of {self.status.cluster_id} is not paused")

    @workflow.update
    async def reconcile(self, request: ReconcileRequest) -> ReconcileResult:
        """Check for drift now and repair it (``tenantctl reconcile``); waits behind a running operation."""
        return await self._reconcile(request)

    @reconcile.validator
    def _validate_reconcile(self, request: ReconcileRequest) -> None:
        self._refuse_unless_operable("check for drift")

    async def _reconcile(self, request: ReconcileRequest) -> ReconcileResult:
        busy = self.status.current
        if self._lock.locked() and request.if_busy is IfBusy.SKIP:
            what = f"{busy.kind} ({busy.workflow_id})" if busy else "another operation"
            result = ReconcileResult(skipped=f"{what} was running; the check was skipped, the next one follows")
            self._record_check(result)
            return result
        if request.if_busy is IfBusy.SKIP and not request.dry_run and workflow.patched(IN_PLACE_CHECK_PATCH):
            in_sync = await self._observe_in_place()
            if in_sync is not None:
                self._record_check(in_sync)
                return in_sync
            self._node_look = None  # the repair that follows may change the nodes: look again after it
        waited_for = f"{busy.kind} ({busy.workflow_id})" if busy and self._lock.locked() else ""
        try:
            result = await self._operate(
                OperationKind.RECONCILE,
                RECONCILE_WORKFLOW,
                lambda: ReconcileInput(spec=self.status.spec, nodes=self._checked_nodes(), dry_run=request.dry_run),
                ReconcileResult,
                request.requested_by,
            )
        except ApplicationError as err:
            self._record_check(ReconcileResult(), failed=err.message)
            raise
        result.waited_for = waited_for
        if result.in_sync and self.status.recent and self.status.recent[0].kind is OperationKind.RECONCILE:
            # An in-sync check is not an operation worth a line of 'recent': it is the last check.
            self.status.recent.pop(0)
        self.status.record_certificates(result.certificates)
        self._record_check(result)
        return result

    async def _observe_in_place(self) -> ReconcileResult | None:
        """The periodic check's first look, from the entity: the three observes side by side (and,
        with node auto-repair, the node-health look beside them, in the same workflow tasks).

        In sync: the check ends here (no child, no line in 'recent'; the status shows it as the last
        check). None when something differs or an observe failed: the reconcile child looks again
        and repairs, or reports the failure, as every check did before.
        """

        async def drift() -> list[DriftReport] | None:
            try:
                return await act.observe_everything(self.status.spec, self._checked_nodes())
            except ActivityError:
                return None

        async def nodes() -> tuple[NodesResult, HealthResult] | str | None:
            return await self._look_at_nodes() if self._watching_nodes else None

        async with self._lock:  # no operation starts while the backends are being read
            reports, self._node_look = await together(drift(), nodes())
        return ReconcileResult() if reports is not None and all(r.in_sync for r in reports) else None

    def _checked_nodes(self) -> dict[str, str]:
        """The nodes a check expects: name -> the Kubernetes version each runs."""
        return {n: r.kubernetes_version for n, r in self.status.nodes.items()} or {
            n: self.status.kubernetes_version for n in self.status.spec.node_names()
        }

    def _record_check(self, result: ReconcileResult, failed: str = "") -> None:
        if failed:
            outcome = CheckOutcome.FAILED
        elif result.skipped:
            outcome = CheckOutcome.SKIPPED
        elif result.in_sync:
            outcome = CheckOutcome.IN_SYNC
        else:
            outcome = CheckOutcome.DRIFT if result.dry_run or not result.repaired else CheckOutcome.REPAIRED
        meter = workflow.metric_meter()
        meter.create_counter(metric_names.DRIFT_CHECKS, "drift checks, by outcome").add(1, {"outcome": outcome.value})
        if outcome is CheckOutcome.REPAIRED and result.repaired:
            meter.create_counter(metric_names.DRIFT_REPAIRS, "repair steps run by drift checks").add(
                len(result.repaired)
            )
        self.status.last_check = DriftCheckRecord(
            at=workflow.now(),
            outcome=outcome,
            drift=[str(i) for i in result.drift],
            repaired=result.repaired,
            restarted=result.restarted,
            message=failed or result.skipped,
        )
        if self._published_check != outcome:  # one event when the outcome changes, none per in-sync check
            workflow.upsert_search_attributes([sa.DRIFT_CHECK.value_set(outcome.value)])
            self._published_check = outcome
        self._publish()

    @workflow.update
    async def delete(self, request: DeleteRequest) -> TeardownResult:
        self._refuse_if_protected()
        self._deleting = True  # operations queued behind this request are refused from now on
        if request.running_operation is RunningOperationPolicy.CANCEL and self._child is not None:
            workflow.logger.info("cancelling %s before teardown", self.status.current)
            self._child.cancel()
        try:
            result = await self._operate(
                OperationKind.DELETE,
                TEARDOWN_WORKFLOW,
                lambda: TeardownInput(spec=self.status.spec, nodes=self._node_names()),
                TeardownResult,
                request.requested_by,
            )
        finally:
            self._deleting = self.status.phase is ClusterPhase.DELETED
        self._teardown = result
        return result

    @delete.validator
    def _validate_delete(self, request: DeleteRequest) -> None:
        if self.status.phase is ClusterPhase.DELETED:
            raise Refused(f"cluster {self.status.cluster_id} is already deleted")
        self._refuse_if_protected()

    @workflow.update
    async def configure(self, request: ConfigureRequest) -> ConfigureResult:
        spec, changed = self._configured_spec(request)
        self.status.spec = spec
        self._publish()
        if "certificates" in changed:
            await self._sync_schedule()
        return ConfigureResult(changed=changed, spec=spec)

    @configure.validator
    def _validate_configure(self, request: ConfigureRequest) -> None:
        if self.status.phase is ClusterPhase.DELETED:
            raise Refused(f"cluster {self.status.cluster_id} is deleted")
        self._configured_spec(request)

    @workflow.update
    async def sync_schedule(self, request: SyncScheduleRequest) -> SyncScheduleResult:
        """Re-read the rotation schedule (paused or resumed through the Schedules API) into the status."""
        paused = await self._sync_schedule()
        return SyncScheduleResult(next_rotation=self.status.next_rotation, paused=paused)

    @sync_schedule.validator
    def _validate_sync_schedule(self, request: SyncScheduleRequest) -> None:
        self._refuse_unless_operable("sync the rotation schedule")

    @workflow.update
    async def sign_user_certificate(self, request: SignUserCertificateRequest) -> SignedUserCertificate:
        """Sign a user's CSR with the cluster's CA (``tenantctl kubeconfig``).

        Not an operation: it touches no node and no stored key pair, so it does not queue behind an
        upgrade while a person waits. Only public material (the CSR, the certificate) enters history.
        """
        return await act.sign_user_csr(self.status.spec, request.csr_pem, request.ttl)

    @sign_user_certificate.validator
    def _validate_sign_user_certificate(self, request: SignUserCertificateRequest) -> None:
        self._refuse_unless_operable("sign a user certificate")
        if not self.status.ca_issuer_id:
            raise Refused(f"cluster {self.status.cluster_id} has no CA yet; wait until it is Ready")
        current = self.status.current
        if current is not None and current.kind is OperationKind.ROTATE_CA:
            # A certificate from the outgoing CA would stop working when the rotation ends.
            raise Refused(f"the CA of {self.status.cluster_id} is being rotated; ask again once it is done")

    # --- running operations -----------------------------------------------------------------------
    async def _operate(
        self,
        kind: OperationKind,
        workflow_name: str,
        make_input: Any,
        result_type: type[ResultT],
        requested_by: str,
        maintenance_override: MaintenanceOverride | None = None,
    ) -> ResultT:
        """Run one operation as a child workflow, after the ones before it, and record it."""
        async with self._lock:
            if self._deleting and kind is not OperationKind.DELETE:
                raise Refused(f"cluster {self.status.cluster_id} is being deleted; {kind} was not run")
            if self.status.phase is ClusterPhase.DELETED:
                raise Refused(f"cluster {self.status.cluster_id} is deleted; {kind} was not run")
            arg = make_input() if callable(make_input) else make_input
            op = self._begin(kind, requested_by)
            op.maintenance_override = maintenance_override
            phase_before = self.status.phase
            self._set_phase(PHASE_OF_OPERATION[kind])
            try:
                self._child = await workflow.start_child_workflow(
                    workflow_name,
                    arg,
                    id=op.workflow_id,
                    result_type=result_type,
                    task_timeout=policies.OPERATION_TASK_TIMEOUT,
                    static_summary=f"{kind} of tenant cluster {self.status.cluster_id}",
                    search_attributes=self._search_attributes(operation=kind),
                )
                result: ResultT = await self._child
            except (ChildWorkflowError, CancelledError, asyncio.CancelledError) as err:
                message = innermost_message(err)
                cancelled = isinstance(getattr(err, "cause", None), CancelledError)
                op = self.status.current or op  # as the child last reported it
                self._finish(op, OperationState.CANCELLED if cancelled else OperationState.FAILED, message)
                self._set_phase(_phase_after_failure(kind, phase_before), f"{kind} failed: {message}")
                raise ApplicationError(
                    f"{kind} of cluster {self.status.cluster_id} {'was cancelled' if cancelled else 'failed'}: "
                    f"{message}",
                    non_retryable=True,
                ) from err
            finally:
                self._child = None
            op = self.status.current or op
            final = getattr(result, "operation", None)
            if isinstance(final, OperationStatus) and final.workflow_id == op.workflow_id:
                # The child's own record: every step, and how it ended (an aborted upgrade returns
                # normally, as cancelled).
                op = op.refreshed(final)
            state = op.state if op.state.finished else OperationState.SUCCEEDED
            self._finish(op, state, op.message if op.state.finished else "")
            self._set_phase(ClusterPhase.DELETED if kind is OperationKind.DELETE else ClusterPhase.READY, "")
            return result

    # --- maintenance windows (issue 15) -----------------------------------------------------------
    async def _when_due(
        self,
        kind: OperationKind,
        requested_by: str,
        detail: str,
        override: MaintenanceOverride | None,
        run: Callable[[Callable[[], None]], Awaitable[ResultT]],
        leaf: bool = False,
    ) -> ResultT | None:
        """Run a disruptive operation once the cluster's maintenance window is open (at once with an
        override); None when it was aborted before it started.

        It waits without the operation lock, so drift checks, repairs and other operations run
        meanwhile; once open it queues for the lock like any operation, and if the window closed
        again by its turn (a long operation ahead), it waits for the next one. A leaf rotation
        (``leaf``) waits only for a window that opens before its renewal deadline.
        """
        info = workflow.current_update_info()
        now = workflow.now()
        entry = QueuedOperation(
            kind=kind,
            request_id=info.id if info else f"{kind}-{self.status.operations_started}",
            requested_by=requested_by,
            detail=detail,
            queued_at=now,
            maintenance_override=override,
        )
        if leaf:
            interval = self.status.spec.certificates.rotation_interval
            entry.deadline = leaf_rotation_deadline(
                self.status.earliest_expiry, interval, now, policies.LEAF_ROTATION_WINDOW_WAIT
            )
        self.status.queued.append(entry)

        def starting() -> None:  # under the lock, just before the operation starts
            if self._window_decision(entry).at > workflow.now():
                raise _WindowClosed()
            self._started_queued.add(entry.request_id)
            self._dequeue(entry)

        try:
            while True:
                await self._wait_for_window(entry)
                if entry.request_id in self._aborted_queued:
                    return None
                task = asyncio.ensure_future(run(starting))
                self._queued_runs[entry.request_id] = task
                try:
                    return await task
                except _WindowClosed:
                    continue
                except asyncio.CancelledError:
                    if entry.request_id in self._aborted_queued and entry.request_id not in self._started_queued:
                        return None
                    raise
                finally:
                    self._queued_runs.pop(entry.request_id, None)
        finally:
            self._dequeue(entry)

    async def _wait_for_window(self, entry: QueuedOperation) -> None:
        """Wait (a durable timer) until the window lets ``entry`` start; woken early by an abort,
        a delete, or a change of the maintenance settings."""
        while entry.request_id not in self._aborted_queued and not self._deleting:
            if self.status.phase is ClusterPhase.DELETED:
                return
            now = workflow.now()
            decision = self._window_decision(entry)
            if decision.at <= now:
                busy = self.status.current if self._lock.locked() else None
                entry.window_opens_at = None
                entry.message = f"queued behind the running {busy.kind} ({busy.workflow_id})" if busy else "starting"
                self._publish()
                return
            entry.window_opens_at, entry.message = decision.at, decision.reason
            self._publish()
            woken = self._window_wake(entry, self.status.spec.maintenance)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    woken,
                    timeout=decision.at - now,
                    timeout_summary=f"maintenance window for {entry.kind}",
                )

    def _window_wake(self, entry: QueuedOperation, maintenance: Any) -> Callable[[], bool]:
        """What ends a window wait early: an abort, a delete, new maintenance settings."""
        return lambda: (
            entry.request_id in self._aborted_queued or self._deleting or self.status.spec.maintenance != maintenance
        )

    def _window_decision(self, entry: QueuedOperation) -> StartDecision:
        now = workflow.now()
        if entry.maintenance_override is not None:
            return StartDecision(at=now, reason=entry.maintenance_override.describe())
        maintenance = self.status.spec.maintenance
        return decide_start(maintenance.window if maintenance else None, now, entry.deadline)

    def _queued_upgrade(self) -> QueuedOperation | None:
        return next(
            (
                q
                for q in self.status.queued
                if q.kind is OperationKind.UPGRADE and q.request_id not in self._aborted_queued
            ),
            None,
        )

    def _abort_queued(self, entry: QueuedOperation, reason: str) -> None:
        why = reason or "aborted"
        self._aborted_queued[entry.request_id] = why
        task = self._queued_runs.get(entry.request_id)
        if task is not None and entry.request_id not in self._started_queued:
            task.cancel()  # it waits for the lock: it leaves the queue without starting
        self._dequeue(entry)
        self._set_phase(
            self.status.phase, f"{entry.kind} {entry.detail} was aborted before it started: {why}".replace("  ", " ")
        )

    def _dequeue(self, entry: QueuedOperation) -> None:
        if entry in self.status.queued:
            self.status.queued.remove(entry)
            self._publish()

    def _begin(self, kind: OperationKind, requested_by: str) -> OperationStatus:
        self.status.operations_started += 1
        op = OperationStatus(
            kind=kind,
            workflow_id=operation_workflow_id(self.status.cluster_id, kind, self.status.operations_started),
            state=OperationState.RUNNING,
            requested_by=requested_by,
            started_at=workflow.now(),
        )
        self.status.current = op
        return op

    def _finish(self, op: OperationStatus, state: OperationState, message: str) -> None:
        op.state, op.message, op.finished_at = state, message, workflow.now()
        # A step still running in the record (a child that failed before it could report, or one
        # from before snapshots) ended the way the operation did.
        for step in op.steps:
            if step.state is StepState.RUNNING:
                step.state = StepState.DONE if state is OperationState.SUCCEEDED else StepState.FAILED
                step.message = step.message if state is OperationState.SUCCEEDED else message
        self.status.current = None
        self.status.recent = [op, *self.status.recent][:RECENT_OPERATIONS_KEPT]

    def _set_phase(self, phase: ClusterPhase, message: str | None = None) -> None:
        self.status.phase = phase
        if message is not None:
            self.status.message = message
        self._publish()

    # --- rules ------------------------------------------------------------------------------------
    def _refuse_unless_operable(self, what: str) -> None:
        phase = self.status.phase
        if phase is ClusterPhase.DELETED or self._deleting or phase is ClusterPhase.DELETING:
            raise Refused(f"cannot {what}: cluster {self.status.cluster_id} is {phase.value.lower()}")
        if phase is ClusterPhase.FAILED:
            raise Refused(f"cannot {what}: cluster {self.status.cluster_id} failed ({self.status.message}); delete it")

    def _refuse_if_protected(self) -> None:
        if self.status.spec.deletion_protection:
            cid = self.status.cluster_id
            raise Refused(
                f"cluster {cid} has deletion protection; turn it off first with 'tenantctl protect {cid} --off'"
            )

    def _configured_spec(self, request: ConfigureRequest) -> tuple[ClusterSpec, list[str]]:
        current = self.status.spec.model_dump()
        changes: dict[str, Any] = {}
        if request.certificates is not None:
            changes["certificates"] = request.certificates.model_dump()
        if request.deletion_protection is not None:
            changes["deletion_protection"] = request.deletion_protection
        if request.drift_check is not None:
            changes["drift_check"] = request.drift_check.model_dump()
        if request.maintenance is not None:
            changes["maintenance"] = request.maintenance.model_dump()
        if request.node_repair is not None:
            changes["node_repair"] = request.node_repair.model_dump()
        try:
            spec = ClusterSpec.model_validate({**current, **changes})
        except ValidationError as exc:
            raise Refused("; ".join(describe_validation_error(exc))) from None
        changed = [k for k in changes if getattr(spec, k) != getattr(self.status.spec, k)]
        return spec, changed

    def _node_names(self) -> list[str]:
        return list(self.status.nodes) or self.status.spec.node_names()

    # --- what the UI shows ------------------------------------------------------------------------
    def _search_attributes(self, operation: OperationKind | None = None) -> Any:
        s = self.status
        return sa.for_cluster(s.cluster_id, s.spec.provider, s.spec.owner, s.kubernetes_version, s.phase, operation)

    def _publish(self) -> None:
        """Keep search attributes and current details in step with the status."""
        self.status.updated_at = workflow.now()
        published = (self.status.phase.value, self.status.kubernetes_version)
        if published != self._published:
            workflow.upsert_search_attributes(
                [sa.CLUSTER_PHASE.value_set(published[0]), sa.KUBERNETES_VERSION.value_set(published[1])]
            )
            self._published = published
        if workflow.patched(LIST_MEMO_PATCH):
            memo = list_memo(self.status, fleet=workflow.patched(FLEET_MEMO_PATCH))
            if memo != self._published_memo:  # an event only when a value 'tenantctl list' or the metrics show changes
                workflow.upsert_memo(dict(memo))
                self._published_memo = memo
        workflow.set_current_details(render_status(self.status))


def render_status(status: ClusterStatus) -> str:
    lines = [
        f"**{status.cluster_id}** ({status.spec.provider}, owner {status.spec.owner}) — **{status.phase}**",
        f"Kubernetes {status.kubernetes_version}; {len(status.nodes) or len(status.spec.node_names())} nodes",
    ]
    if status.message:
        lines.append(f"message: {status.message}")
    if status.earliest_expiry:
        lines.append(f"earliest certificate expiry: {_iso(status.earliest_expiry)}")
    if status.next_rotation:
        lines.append(f"next scheduled rotation: {_iso(status.next_rotation)}")
    if status.last_check:
        check = status.last_check
        detail = "; ".join(check.repaired) or check.message or "; ".join(check.drift)
        lines.append(f"last drift check: {_iso(check.at)}, {check.outcome}" + (f" ({detail})" if detail else ""))
    if status.next_check:
        lines.append(f"next drift check: {_iso(status.next_check)}")
    lines += render_node_health(status)
    for queued in status.queued:
        lines.append(f"queued: {queued.describe()}")
    if status.current:
        lines += ["", render_operation(status.current)]
        if not status.current.state.finished:
            # The operation keeps its steps to itself (no signal per step): point at where they are.
            lines.append(f"steps and progress: workflow `{status.current.workflow_id}`")
    return "\n".join(lines)


def render_node_health(status: ClusterStatus) -> list[str]:
    """Unhealthy nodes since when, and why auto-repair holds back (status and the UI alike)."""
    health, lines = status.node_health, []
    for node, unhealthy in health.unhealthy.items():
        lines.append(f"unhealthy node {node} since {_iso(unhealthy.since)}: {unhealthy.reason}")
    if health.held:
        lines.append(f"node auto-repair: {health.held}")
    if health.note:
        lines.append(f"node health: {health.note}")
    if health.last_repair:
        lines.append(f"last node repair: {health.last_repair}")
    return lines


def list_memo(status: ClusterStatus, fleet: bool = False) -> dict[str, str]:
    """What ``tenantctl list`` shows beyond the search attributes, as the entity's memo (strings);
    with ``fleet``, also what the fleet metrics read (``models.cluster.fleet_memo``)."""
    current, check = status.current, status.last_check
    operation = f"{current.kind} ({current.state})" if current else ""
    waiting = next((q for q in status.queued if q.window_opens_at), None)
    if not operation and waiting is not None and waiting.window_opens_at is not None:
        operation = f"{waiting.kind} (waiting for window, opens {_iso(waiting.window_opens_at)})"
    memo = {
        "operation": operation,
        "earliest_expiry": status.earliest_expiry.isoformat() if status.earliest_expiry else "",
        "last_check": check.at.isoformat() if check else "",
        "last_check_outcome": str(check.outcome) if check else "",
    }
    return {**memo, **fleet_memo(status)} if fleet else memo


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _phase_after_failure(kind: OperationKind, before: ClusterPhase) -> ClusterPhase:
    if kind in (OperationKind.CREATE, OperationKind.DELETE):
        return ClusterPhase.FAILED
    return before
