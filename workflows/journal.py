"""How an operation workflow records its steps: its whole status (``OperationStatus``) kept in the
workflow, answered by its ``progress`` query and shown in the Temporal UI's current details.

Recording a step costs the runbook nothing: no signal, no event, no round trip. The cluster entity
gets the whole snapshot only when it must know it: a pause and a resume (it decides whether an
operator may resume), a failure (sent before the failure, so the entity records which step failed),
and the finished status, which travels back in the operation's result. ``tenantctl status`` and
``watch`` read the running operation's own ``progress`` query, so every step still shows.

Operations started before snapshots (no ``OPERATION_SNAPSHOTS_PATCH`` marker in their history)
keep reporting each step to the entity as a delta, exactly as they did, so they replay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import workflow
from temporalio.exceptions import CancelledError, FailureError

from models.cluster import OperationKind, OperationState, OperationStatus, Progress, ProgressReport, StepState
from models.errors import innermost_message
from workflows.names import LEGACY_PROGRESS_SIGNAL, OPERATION_SIGNAL

OPERATION_SNAPSHOTS_PATCH = "operation-snapshots"
"""Runbooks that keep their status to themselves (and run independent steps side by side); absent
from histories of operations that signalled the entity at every step."""


class OperationJournal:
    def __init__(self, kind: OperationKind, steps: list[str], requested_by: str = "") -> None:
        info = workflow.info()
        self.status = OperationStatus(
            kind=kind,
            workflow_id=info.workflow_id,
            state=OperationState.RUNNING,
            requested_by=requested_by,
            started_at=workflow.now(),
        )
        for name in steps:
            self.status.step(name)
        self._parent_id = info.parent.workflow_id if info.parent else None
        self.legacy = not workflow.patched(OPERATION_SNAPSHOTS_PATCH)
        """True when replaying (or resuming) an operation that reported every step to the entity."""
        self._sends: set[asyncio.Task[None]] = set()
        self._publish_details()

    @contextlib.asynccontextmanager
    async def step(self, name: str, message: str = "") -> AsyncIterator[None]:
        """Run a step: running while inside, done on exit, failed (with the error) on an exception."""
        step = self.status.step(name)
        step.state, step.started_at, step.message = StepState.RUNNING, workflow.now(), message
        if self.legacy:
            await self._report(step=name, step_state=StepState.RUNNING, message=message)
        self._publish_details()
        try:
            yield
        except BaseException as exc:
            step.state, step.finished_at = StepState.FAILED, workflow.now()
            step.message = innermost_message(exc)
            self._publish_details()
            if _ends_operation(exc) and not self.legacy:
                self.status.state, self.status.message = OperationState.FAILED, step.message
                self.status.finished_at = workflow.now()
                await self._send_snapshot()  # awaited: the entity has it before it sees the failure
            raise
        step.state, step.finished_at = StepState.DONE, workflow.now()
        self._publish_details()

    async def set_step(self, name: str, state: StepState | None = None, message: str | None = None) -> None:
        """Change a step outside its ``step`` block (skipped, annotated, closed after an abort)."""
        step = self.status.step(name)
        if state is not None:
            step.state = state
        if message is not None:
            step.message = message
        self._publish_details()
        if self.legacy:
            await self._report(step=name, step_state=state, message=message or "")

    def mark_skipped(self, name: str, message: str) -> None:
        """Skip a step without telling anyone (runbooks from before the entity heard of skips)."""
        step = self.status.step(name)
        step.state, step.message = StepState.SKIPPED, message
        self._publish_details()

    async def progress(self, done: int, total: int, current: str = "", unit: str = "nodes", phase: str = "") -> None:
        self.status.progress = Progress(done=done, total=total, current=current, unit=unit, phase=phase)
        self._publish_details()
        if self.legacy:
            await self._report(progress=self.status.progress)

    async def set_paused(self, paused: bool, message: str) -> None:
        self.status.state = OperationState.PAUSED if paused else OperationState.RUNNING
        self.status.message = message
        self._publish_details()
        if self.legacy:
            await self._report(paused=paused, message=message)
        else:
            self._send_snapshot_later()  # the runbook waits (or goes on) at once; the entity follows

    def finish(self, state: OperationState = OperationState.SUCCEEDED, message: str = "") -> OperationStatus:
        """The operation's final status, returned in its result: the entity records it as it is."""
        self.status.state, self.status.message, self.status.finished_at = state, message, workflow.now()
        self._publish_details()
        return self.status

    # --- to the entity ------------------------------------------------------------------------------
    async def _send_snapshot(self) -> None:
        if self._parent_id is not None:
            await workflow.get_external_workflow_handle(self._parent_id).signal(OPERATION_SIGNAL, self.status)

    def _send_snapshot_later(self) -> None:
        if self._parent_id is None:
            return
        # A copy: the snapshot is serialised when the command is sent, and the status moves on.
        snapshot = self.status.model_copy(deep=True)
        send = asyncio.ensure_future(
            workflow.get_external_workflow_handle(self._parent_id).signal(OPERATION_SIGNAL, snapshot)
        )
        self._sends.add(send)
        send.add_done_callback(self._sent)

    def _sent(self, send: asyncio.Task[None]) -> None:
        self._sends.discard(send)
        if not send.cancelled() and send.exception() is not None:
            # The entity is gone (a teardown ended it): nobody to tell, and the runbook goes on.
            workflow.logger.info("status not delivered to %s: %s", self._parent_id, send.exception())

    async def _report(
        self,
        step: str | None = None,
        step_state: StepState | None = None,
        message: str = "",
        progress: Progress | None = None,
        paused: bool | None = None,
    ) -> None:
        """A legacy run's delta to the entity, awaited, as such runs recorded it."""
        if self._parent_id is None:
            return
        report = ProgressReport(
            workflow_id=self.status.workflow_id,
            step=step,
            step_state=step_state,
            message=message,
            progress=progress,
            paused=paused,
        )
        await workflow.get_external_workflow_handle(self._parent_id).signal(LEGACY_PROGRESS_SIGNAL, report)

    def _publish_details(self) -> None:
        workflow.set_current_details(render_operation(self.status))


def _ends_operation(exc: BaseException) -> bool:
    """An error that fails the operation (not a cancellation, not a runbook's own control flow)."""
    if isinstance(exc, CancelledError | asyncio.CancelledError):
        return False
    return isinstance(exc, FailureError) and not isinstance(getattr(exc, "cause", None), CancelledError)


def render_operation(op: OperationStatus) -> str:
    """Markdown for the Temporal UI's current details: the checklist of steps and the progress."""
    marks = {
        StepState.PENDING: "[ ]",
        StepState.RUNNING: "[>]",
        StepState.DONE: "[x]",
        StepState.FAILED: "[!]",
        StepState.SKIPPED: "[-]",
    }
    lines = [f"**{op.kind}** — {op.state}" + (f": {op.message}" if op.message else "")]
    if op.progress.total:
        p = op.progress
        now = f"{p.current}: {p.phase}" if p.current and p.phase else p.current
        lines.append(f"progress: {p.done}/{p.total} {p.unit}" + (f" (now: {now})" if now else ""))
    for s in op.steps:
        lines.append(f"- {marks[s.state]} {s.name}" + (f" — {s.message}" if s.message else ""))
    return "\n".join(lines)
