"""A fleet rollout: one operation over many clusters, with canaries, approval and a failure budget.

One workflow per rollout (``fleet/<operation>-<time>``). At start it reads every selected cluster
from its entity and records the plan (canaries first, the skipped ones with their reason). It then
asks each cluster's entity (``cluster/<id>``) for the operation through the entity's own updates
and waits for the outcome, so a rollout never races a manual operation on the same cluster:

- never more than ``parallel`` clusters in flight;
- after ``max_failures`` failures it starts no new cluster, and says which failed and why;
- with ``approve_after_canary``, the canaries go first and the rest waits for the ``approve``
  update (``reject`` or the approval timeout abort the rollout);
- ``control`` pauses (no new cluster starts), resumes or aborts (in-flight upgrades are asked to
  abort and roll back);
- a cluster whose maintenance window is closed waits for it on a durable timer (the status says
  when it opens), unless the rollout overrides windows on the record (``--now --reason``). The
  entity checks the window again when asked (``workflows/cluster.py``, the same ``decide_start``):
  the rollout decides *when to ask*, so a closed window does not take one of its slots;
- a big rollout continues-as-new when Temporal suggests it (or past ``max_history_events``): it
  starts no new cluster, waits for those in flight, and carries its status into the next run, so
  no cluster is asked twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from models.errors import InvalidInput, innermost_message
from models.fleet import (
    AbortClusterInput,
    AbortClusterResult,
    ApprovalDecision,
    ApprovalRecord,
    ApprovalRequest,
    ClusterOperationOutcome,
    ClusterOperationRequest,
    ClusterSnapshot,
    DescribeClustersInput,
    DescribeClustersResult,
    FleetAction,
    FleetCarry,
    FleetControl,
    FleetControlResult,
    FleetOperation,
    FleetRolloutInput,
    FleetRolloutResult,
    FleetState,
    FleetStatus,
    RolloutCluster,
    RolloutClusterState,
    approval_wait_message,
    plan_rollout,
    render_details,
    start_decision,
)
from workflows import policies
from workflows import search_attributes as sa

FLEET_WORKFLOW = "FleetRollout"
CONTINUE_AS_NEW_PATCH = "fleet-continue-as-new"
"""Rollouts from before continued-as-new never: their histories replay without the check."""


class Refused(ApplicationError):
    """A control or approval the rollout cannot take in its state (fails the update only)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type=InvalidInput.__name__, non_retryable=True)


@workflow.defn(name=FLEET_WORKFLOW)
class FleetRolloutWorkflow:
    @workflow.init
    def __init__(self, input: FleetRolloutInput) -> None:
        self._input = input
        self.status = FleetStatus(
            rollout_id=workflow.info().workflow_id,
            operation=input.operation,
            version=input.version,
            selection=input.selection,
            parallel=input.parallel,
            max_failures=input.max_failures,
            approve_after_canary=input.approve_after_canary,
            requested_by=input.requested_by,
            started_at=workflow.now(),
            maintenance_override=input.maintenance_override,
        )
        self._snapshots: dict[str, ClusterSnapshot] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._paused = False
        self._stop_reason: str | None = None
        self._aborted = False
        self._wake = False
        self._failures: list[RolloutCluster] = []
        self._published_state: FleetState | None = None
        self._abort_requests: list[workflow.ActivityHandle[AbortClusterResult]] = []
        self._runs = 1
        self._may_continue = False
        carried = input.carried
        if carried is not None:
            self.status = carried.status
            self._snapshots = {s.cluster_id: s for s in carried.snapshots}
            self._paused, self._stop_reason, self._aborted = carried.paused, carried.stop_reason, carried.aborted
            by_id = {c.cluster_id: c for c in self.status.clusters}
            self._failures = [by_id[cid] for cid in carried.failures if cid in by_id]
            self._runs = carried.runs + 1

    # --- the rollout --------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: FleetRolloutInput) -> FleetRolloutResult:
        self._may_continue = input.carried is not None or workflow.patched(CONTINUE_AS_NEW_PATCH)
        self._publish()
        if input.carried is None:
            described = await workflow.execute_activity(
                "fleet.describe_clusters",
                DescribeClustersInput(cluster_ids=list(input.cluster_ids)),
                result_type=DescribeClustersResult,
                start_to_close_timeout=policies.FLEET_CONTROL_TIMEOUT,
                retry_policy=policies.ENTITY_REQUEST_RETRY,
            )
            self._snapshots = {s.cluster_id: s for s in described.clusters}
            self.status.clusters = plan_rollout(input.operation, input.version, described.clusters, input.canary)
            self._note(f"plan: {', '.join(c.cluster_id for c in self._eligible()) or 'nothing to do'}")
            self._publish()

        canaries = [c for c in self._eligible() if c.canary]
        rest = [c for c in self._eligible() if not c.canary]
        await self._run_group([c for c in canaries if _not_begun(c)])
        approval_pending = self.status.approval is None  # (a continued run may have it already)
        if canaries and rest and input.approve_after_canary and self._stop_reason is None and approval_pending:
            await self._wait_for_approval()
        await self._run_group([c for c in rest if _not_begun(c)])
        self._finish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return FleetRolloutResult(status=self.status)

    def _eligible(self) -> list[RolloutCluster]:
        return [c for c in self.status.clusters if c.state is not RolloutClusterState.SKIPPED]

    async def _run_group(self, group: list[RolloutCluster]) -> None:
        """Start the group's clusters as slots, windows and controls allow; wait for all of them."""
        pending = list(group)
        while pending:
            if self._stop_reason is not None:
                for cluster in pending:
                    cluster.state, cluster.reason = RolloutClusterState.NOT_STARTED, self._stop_reason
                break
            if self._paused:
                await workflow.wait_condition(lambda: not self._paused or self._stop_reason is not None)
                continue
            now = workflow.now()
            startable: RolloutCluster | None = None
            wake_at: datetime | None = None
            for cluster in pending:
                decision = start_decision(
                    self._input.operation,
                    self._snapshots[cluster.cluster_id],
                    now,
                    ignore_window=self._input.maintenance_override is not None,
                )
                if decision.at <= now:
                    startable = startable or cluster
                    if cluster.state is RolloutClusterState.WAITING_WINDOW:
                        cluster.state, cluster.reason = RolloutClusterState.PENDING, ""
                else:
                    cluster.state, cluster.reason = RolloutClusterState.WAITING_WINDOW, decision.reason
                    cluster.window_opens_at = decision.at
                    wake_at = decision.at if wake_at is None else min(wake_at, decision.at)
            if startable is not None and len(self._in_flight) < self._input.parallel:
                if self._history_is_long():
                    await self._continue_as_new()
                pending.remove(startable)
                self._start(startable)
                continue
            if not self._in_flight and startable is None and wake_at is not None:
                waiting = min(pending, key=lambda c: c.window_opens_at or wake_at)
                self.status.message = f"{waiting.cluster_id}: {waiting.reason}"
            self._publish()
            # Wait for a slot, a control, or the next window to open (a durable timer).
            self._wake = False
            timeout = None if startable is not None or wake_at is None else wake_at - now
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._wake, timeout=timeout)
        await workflow.wait_condition(lambda: not self._in_flight)

    def _start(self, cluster: RolloutCluster) -> None:
        cluster.state, cluster.reason = RolloutClusterState.RUNNING, ""
        cluster.started_at = workflow.now()
        cluster.window_opens_at = None
        self.status.message = ""
        self._in_flight[cluster.cluster_id] = asyncio.create_task(self._run_cluster(cluster))
        self.status.max_in_flight = max(self.status.max_in_flight, len(self._in_flight))
        self._publish()

    async def _run_cluster(self, cluster: RolloutCluster) -> None:
        request = ClusterOperationRequest(
            cluster_id=cluster.cluster_id,
            operation=self._input.operation,
            version=self._input.version,
            force=self._input.force,
            request_id=f"{self.status.rollout_id}/{cluster.cluster_id}",
            requested_by=self._requested_by(),
            node_ready_timeout=self._input.node_ready_timeout,
            maintenance_override=self._input.maintenance_override,
        )
        try:
            outcome = await workflow.execute_activity(
                "fleet.request_operation",
                request,
                result_type=ClusterOperationOutcome,
                start_to_close_timeout=policies.FLEET_OPERATION_TIMEOUT,
                heartbeat_timeout=policies.FLEET_REQUEST_HEARTBEAT_TIMEOUT,
                retry_policy=policies.ENTITY_REQUEST_RETRY,
            )
        except ActivityError as err:
            outcome = ClusterOperationOutcome(
                cluster_id=cluster.cluster_id, succeeded=False, message=innermost_message(err)
            )
        cluster.finished_at = workflow.now()
        cluster.kubernetes_version = outcome.kubernetes_version or cluster.kubernetes_version
        if outcome.succeeded:
            cluster.state = RolloutClusterState.SUCCEEDED
            if self._input.version and self._input.operation is FleetOperation.UPGRADE:
                cluster.kubernetes_version = outcome.kubernetes_version or self._input.version
        elif outcome.aborted and self._aborted:
            cluster.state, cluster.reason = RolloutClusterState.ABORTED, outcome.message
        else:
            cluster.state, cluster.reason = RolloutClusterState.FAILED, outcome.message
            self._failures.append(cluster)
            if len(self._failures) >= self._input.max_failures and self._stop_reason is None:
                failed = "; ".join(f"{c.cluster_id}: {c.reason}" for c in self._failures)
                self._stop(f"failure budget spent ({len(self._failures)} of {self._input.max_failures}): {failed}")
        del self._in_flight[cluster.cluster_id]
        self._wake = True
        self._publish()

    async def _wait_for_approval(self) -> None:
        self.status.state = FleetState.WAITING_APPROVAL
        self.status.message = approval_wait_message(self._input.approval_timeout)
        self._publish()
        try:
            await workflow.wait_condition(
                lambda: self.status.approval is not None or self._stop_reason is not None,
                timeout=self._input.approval_timeout,
            )
        except TimeoutError:
            self._abort("no approval within the approval timeout")
            return
        if self._stop_reason is None:
            self.status.state = FleetState.PAUSED if self._paused else FleetState.RUNNING
            self.status.message = ""
            self._publish()

    def _finish(self) -> None:
        self.status.finished_at = workflow.now()
        if self._aborted:
            self.status.state = FleetState.ABORTED
        elif self._failures:
            self.status.state = FleetState.FAILED
        else:
            self.status.state = FleetState.SUCCEEDED
        done = len(self.status.in_state(RolloutClusterState.SUCCEEDED))
        summary = f"{done} of {len(self._eligible())} clusters done"
        self.status.message = f"{summary}; {self._stop_reason}" if self._stop_reason else summary
        self._publish()

    # --- continue-as-new ----------------------------------------------------------------------------
    def _history_is_long(self) -> bool:
        if not self._may_continue:
            return False
        info, limit = workflow.info(), self._input.max_history_events
        return info.is_continue_as_new_suggested() or (limit is not None and info.get_current_history_length() >= limit)

    async def _continue_as_new(self) -> None:
        """Start no new cluster, let those in flight finish, then carry the rollout into a new run."""
        self._note(f"continuing as new after {workflow.info().get_current_history_length()} events")
        await workflow.wait_condition(lambda: not self._in_flight)
        await workflow.wait_condition(workflow.all_handlers_finished)
        carried = FleetCarry(
            status=self.status,
            snapshots=list(self._snapshots.values()),
            paused=self._paused,
            stop_reason=self._stop_reason,
            aborted=self._aborted,
            failures=[c.cluster_id for c in self._failures],
            runs=self._runs,
        )
        workflow.continue_as_new(self._input.model_copy(update={"carried": carried}))

    # --- stopping -----------------------------------------------------------------------------------
    def _stop(self, reason: str) -> None:
        self._stop_reason = reason
        self.status.message = reason
        if not self.status.state.finished:
            self.status.state = FleetState.STOPPING
        self._note(reason)
        self._wake = True

    def _abort(self, reason: str) -> None:
        self._aborted = True
        self._stop(f"aborted: {reason}")
        if self._input.operation is FleetOperation.UPGRADE:
            for cluster_id in self._in_flight:
                # The rollout goes on waiting for each in-flight upgrade: it ends when it has rolled back.
                handle = workflow.start_activity(
                    "fleet.abort_upgrade",
                    AbortClusterInput(cluster_id=cluster_id, reason=f"fleet {self.status.rollout_id} {reason}"),
                    result_type=AbortClusterResult,
                    start_to_close_timeout=policies.FLEET_CONTROL_TIMEOUT,
                    retry_policy=policies.ENTITY_REQUEST_RETRY,
                )
                self._abort_requests.append(handle)

    # --- queries and updates ------------------------------------------------------------------------
    @workflow.query(name="status")
    def get_status(self) -> FleetStatus:
        return self.status

    @workflow.update
    async def approve(self, request: ApprovalRequest) -> ApprovalRecord:
        record = ApprovalRecord(
            decision=ApprovalDecision.APPROVED, by=request.by, at=workflow.now(), comment=request.comment
        )
        self.status.approval = record
        self._note(f"approved by {request.by}" + (f": {request.comment}" if request.comment else ""))
        return record

    @approve.validator
    def _validate_approve(self, request: ApprovalRequest) -> None:
        self._refuse_unless_waiting_for_approval("approve")

    @workflow.update
    async def reject(self, request: ApprovalRequest) -> ApprovalRecord:
        record = ApprovalRecord(
            decision=ApprovalDecision.REJECTED, by=request.by, at=workflow.now(), comment=request.comment
        )
        self.status.approval = record
        self._abort(f"rejected by {request.by}" + (f": {request.comment}" if request.comment else ""))
        self._publish()
        return record

    @reject.validator
    def _validate_reject(self, request: ApprovalRequest) -> None:
        self._refuse_unless_waiting_for_approval("reject")

    @workflow.update
    async def control(self, control: FleetControl) -> FleetControlResult:
        by = f" by {control.by}" if control.by else ""
        why = f": {control.reason}" if control.reason else ""
        if control.action is FleetAction.PAUSE:
            self._paused = True
            if self.status.state is FleetState.RUNNING:
                self.status.state = FleetState.PAUSED
            self.status.message = f"paused{by}{why}: no new cluster starts"
            self._note(f"paused{by}{why}")
        elif control.action is FleetAction.RESUME:
            self._paused = False
            if self.status.state is FleetState.PAUSED:
                self.status.state = FleetState.RUNNING
            self.status.message = ""
            self._note(f"resumed{by}{why}")
        else:
            self._abort(f"by {control.by or 'someone'}{why}")
        self._wake = True
        self._publish()
        return FleetControlResult(action=control.action, state=self.status.state, message=self.status.message)

    @control.validator
    def _validate_control(self, control: FleetControl) -> None:
        if self.status.state.finished:
            raise Refused(f"rollout {self.status.rollout_id} is {self.status.state}; nothing to {control.action}")
        if self._stop_reason is not None:
            raise Refused(f"rollout {self.status.rollout_id} is stopping ({self._stop_reason})")
        if control.action is FleetAction.PAUSE and self._paused:
            raise Refused(f"rollout {self.status.rollout_id} is already paused")
        if control.action is FleetAction.RESUME and not self._paused:
            raise Refused(f"rollout {self.status.rollout_id} is not paused")

    def _refuse_unless_waiting_for_approval(self, what: str) -> None:
        if self.status.state is not FleetState.WAITING_APPROVAL or self.status.approval is not None:
            raise Refused(
                f"rollout {self.status.rollout_id} is not waiting for approval (it is {self.status.state}); "
                f"nothing to {what}"
            )

    # --- the record and the UI ----------------------------------------------------------------------
    def _requested_by(self) -> str:
        who = self._input.requested_by or "someone"
        return f"fleet {self.status.rollout_id} ({who})"

    def _note(self, text: str) -> None:
        self.status.log.append(f"{workflow.now().strftime('%Y-%m-%d %H:%M:%S UTC')} {text}")

    def _publish(self) -> None:
        if self.status.state != self._published_state:
            workflow.upsert_search_attributes(
                [
                    sa.OPERATION.value_set(f"fleet-{self._input.operation}"),
                    sa.FLEET_ROLLOUT_STATE.value_set(self.status.state),
                ]
            )
            self._published_state = self.status.state
        workflow.set_current_details(render_details(self.status))


def _not_begun(cluster: RolloutCluster) -> bool:
    return cluster.state in (RolloutClusterState.PENDING, RolloutClusterState.WAITING_WINDOW)
