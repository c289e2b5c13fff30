"""How an operation workflow records its steps: for its own ``progress`` query, for the Temporal
UI's current details, and for its cluster entity (a signal to the parent).

Reports go to the parent only when a step starts or progress moves, so a create adds a dozen
signals, not one per activity.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio import workflow

from models.cluster import OperationKind, OperationState, OperationStatus, Progress, ProgressReport, StepState
from models.errors import innermost_message

PROGRESS_SIGNAL = "report_progress"
"""Signal of the cluster entity that operation children report to."""


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
        self._publish_details()

    @contextlib.asynccontextmanager
    async def step(self, name: str, message: str = "") -> AsyncIterator[None]:
        """Run a step: running while inside, done on exit, failed (with the error) on an exception."""
        step = self.status.step(name)
        step.state, step.started_at, step.message = StepState.RUNNING, workflow.now(), message
        await self.report(step=name, step_state=StepState.RUNNING, message=message)
        try:
            yield
        except BaseException as exc:
            step.state, step.finished_at = StepState.FAILED, workflow.now()
            step.message = innermost_message(exc)
            self._publish_details()
            raise
        step.state, step.finished_at = StepState.DONE, workflow.now()
        self._publish_details()

    def skip(self, name: str, message: str) -> None:
        step = self.status.step(name)
        step.state, step.message = StepState.SKIPPED, message

    async def progress(self, done: int, total: int, current: str = "", unit: str = "nodes", phase: str = "") -> None:
        self.status.progress = Progress(done=done, total=total, current=current, unit=unit, phase=phase)
        await self.report(progress=self.status.progress)

    async def set_paused(self, paused: bool, message: str) -> None:
        self.status.state = OperationState.PAUSED if paused else OperationState.RUNNING
        self.status.message = message
        await self.report(paused=paused, message=message)

    async def report(
        self,
        step: str | None = None,
        step_state: StepState | None = None,
        message: str = "",
        progress: Progress | None = None,
        paused: bool | None = None,
    ) -> None:
        self._publish_details()
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
        await workflow.get_external_workflow_handle(self._parent_id).signal(PROGRESS_SIGNAL, report)

    def _publish_details(self) -> None:
        workflow.set_current_details(render_operation(self.status))


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
