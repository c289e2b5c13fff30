"""The Temporal Schedule that rotates a cluster's certificates, and its request to the entity.

These activities talk to Temporal itself (the SDK's Schedules API), so they are ``async``. The
schedule starts ``ScheduledRotation`` every interval; that workflow asks the cluster entity (an
update, deduplicated by id) and waits, so a rotation due during an upgrade waits its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from models.drift import Backend, DriftItem, DriftKind, DriftReport, ObserveInput
from models.errors import InvalidInput, innermost_message
from models.naming import entity_workflow_id, rotation_schedule_id
from models.operations import RotateCertificatesRequest, RotateCertificatesResult
from models.provider import EnsureResult, ResourceChange, ResourceOutcome
from models.schedules import (
    RequestRotationInput,
    RotationScheduleInput,
    RotationScheduleResult,
    ScheduledRotationInput,
    ScheduleRef,
)
from workflows.search_attributes import CLUSTER_ID

SCHEDULED_ROTATION_WORKFLOW = "ScheduledRotation"
ROTATE_UPDATE = "rotate_certificates"
HEARTBEAT_EVERY = timedelta(seconds=10)
SCHEDULED_ROTATION_REQUEST = RotateCertificatesRequest(requested_by="schedule", in_window=True)
"""What the schedule asks of the entity: rotate in the cluster's maintenance window when one opens
before the renewal deadline, otherwise on time (the entity decides: it knows the expiries)."""


class RotationSchedules:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    def _schedule(self, input: RotationScheduleInput, paused: bool) -> Schedule:
        spec = input.spec
        interval = spec.certificates.rotation_interval
        return Schedule(
            action=ScheduleActionStartWorkflow(
                SCHEDULED_ROTATION_WORKFLOW,
                ScheduledRotationInput(cluster_id=spec.id),
                id=rotation_schedule_id(spec.id),
                task_queue=self.task_queue,
                typed_search_attributes=TypedSearchAttributes([SearchAttributePair(CLUSTER_ID, spec.id)]),
                static_summary=f"scheduled certificate rotation of {spec.id}",
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
            # Skip, never queue: a rotation still running when the next comes due makes it redundant.
            # Catch up within one interval, so a rotation missed while Temporal or the workers were
            # down runs once they are back (and only once).
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=interval),
            state=ScheduleState(paused=paused, note=input.note or f"rotate {spec.id} every {interval}"),
        )

    @activity.defn(name="schedule.ensure_rotation_schedule")
    async def ensure_rotation_schedule(self, input: RotationScheduleInput) -> RotationScheduleResult:
        """Create the schedule if missing; converge its interval (and pause state, if given)."""
        schedule_id = rotation_schedule_id(input.spec.id)
        handle = self.client.get_schedule_handle(schedule_id)
        changed = False
        try:
            await self.client.create_schedule(schedule_id, self._schedule(input, paused=bool(input.paused)))
            changed = True
        except ScheduleAlreadyRunningError:
            current = await handle.describe()
            if _differs(current, input):
                paused = current.schedule.state.paused if input.paused is None else input.paused

                def updated(_: ScheduleUpdateInput) -> ScheduleUpdate:
                    return ScheduleUpdate(schedule=self._schedule(input, paused=paused))

                await handle.update(updated)
                changed = True
        return await _result(handle, changed)

    @activity.defn(name="schedule.ensure_rotation_schedule_absent")
    async def ensure_rotation_schedule_absent(self, ref: ScheduleRef) -> EnsureResult:
        """Pause, then delete; a schedule already gone is success."""
        schedule_id = rotation_schedule_id(ref.cluster_id)
        handle = self.client.get_schedule_handle(schedule_id)
        try:
            await handle.pause(note="cluster is being deleted")
            await handle.delete()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            return EnsureResult(
                outcomes=[ResourceOutcome(kind="schedule", name=schedule_id, change=ResourceChange.ABSENT)]
            )
        return EnsureResult(
            outcomes=[ResourceOutcome(kind="schedule", name=schedule_id, change=ResourceChange.DELETED)]
        )

    @activity.defn(name="schedule.describe_rotation_schedule")
    async def describe_rotation_schedule(self, ref: ScheduleRef) -> RotationScheduleResult:
        handle = self.client.get_schedule_handle(rotation_schedule_id(ref.cluster_id))
        try:
            return await _result(handle, changed=False)
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            return RotationScheduleResult(schedule_id=handle.id, exists=False)

    @activity.defn(name="schedule.observe")
    async def observe(self, input: ObserveInput) -> DriftReport:
        """Drift check of the rotation schedule: it exists and rotates at the spec's interval.
        A paused schedule is not drift (an operator paused it)."""
        schedule_id = rotation_schedule_id(input.spec.id)
        where = f"schedule/{schedule_id}"
        try:
            current = await self.client.get_schedule_handle(schedule_id).describe()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            return DriftReport(backend=Backend.SCHEDULE, items=[DriftItem(kind=DriftKind.MISSING, object=where)])
        if _differs(current, RotationScheduleInput(spec=input.spec)):
            every = [str(i.every) for i in current.schedule.spec.intervals]
            detail = f"intervals {every}, not {input.spec.certificates.rotation_interval}"
            return DriftReport(
                backend=Backend.SCHEDULE, items=[DriftItem(kind=DriftKind.CHANGED, object=where, detail=detail)]
            )
        return DriftReport(backend=Backend.SCHEDULE)

    @activity.defn(name="entity.request_rotation")
    async def request_rotation(self, input: RequestRotationInput) -> RotateCertificatesResult:
        """Ask the cluster entity to rotate, and wait for it (heartbeating while queued)."""
        handle = self.client.get_workflow_handle(entity_workflow_id(input.cluster_id))
        async with _heartbeating():
            try:
                result: RotateCertificatesResult = await handle.execute_update(
                    ROTATE_UPDATE,
                    SCHEDULED_ROTATION_REQUEST,
                    id=input.request_id,
                    result_type=RotateCertificatesResult,
                )
                return result
            except WorkflowUpdateFailedError as exc:
                # The entity refused or the rotation failed: the next scheduled run tries again.
                raise ApplicationError(
                    f"rotation of {input.cluster_id} not done: {innermost_message(exc)}",
                    type=InvalidInput.__name__,
                    non_retryable=True,
                ) from exc
            except RPCError as exc:
                if exc.status is RPCStatusCode.NOT_FOUND:
                    raise ApplicationError(
                        f"cluster {input.cluster_id} has no running entity workflow; is the schedule orphaned?",
                        type=InvalidInput.__name__,
                        non_retryable=True,
                    ) from exc
                raise


def _differs(current: ScheduleDescription, input: RotationScheduleInput) -> bool:
    intervals = current.schedule.spec.intervals
    interval = input.spec.certificates.rotation_interval
    if len(intervals) != 1 or intervals[0].every != interval:
        return True
    return input.paused is not None and current.schedule.state.paused != input.paused


async def _result(handle: ScheduleHandle, changed: bool) -> RotationScheduleResult:
    desc = await handle.describe()
    intervals = desc.schedule.spec.intervals
    return RotationScheduleResult(
        schedule_id=handle.id,
        interval=intervals[0].every if intervals else None,
        paused=desc.schedule.state.paused,
        note=desc.schedule.state.note or "",
        next_runs=list(desc.info.next_action_times[:3]),
        recent_runs=[a.scheduled_at for a in desc.info.recent_actions[-5:]],
        changed=changed,
    )


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            activity.heartbeat("waiting for the cluster entity")
            await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
