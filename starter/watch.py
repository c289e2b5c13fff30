"""``--watch``: follow a cluster's operations step by step until the cluster settles."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode

from models.cluster import ClusterPhase, ClusterStatus, OperationKind, OperationState, OperationStatus, StepState
from models.errors import innermost_message
from starter import clusters
from starter.clusters import get_status

SETTLED = (ClusterPhase.READY, ClusterPhase.FAILED, ClusterPhase.DELETED)
POLL_SECONDS = 0.5
MARKS = {StepState.DONE: "[green]✓[/]", StepState.FAILED: "[red]✗[/]", StepState.SKIPPED: "[dim]-[/]"}


def settled(status: ClusterStatus) -> bool:
    return status.current is None and status.phase in SETTLED


def sequence(op: OperationStatus) -> int:
    """Operations are numbered in their workflow id: ``cluster/<id>/<kind>/<n>``."""
    return int(op.workflow_id.rsplit("/", 1)[1])


class Watcher:
    def __init__(self, progress: Progress, cluster_id: str, since: int | None) -> None:
        self.progress = progress
        self.cluster_id = cluster_id
        self.since = since
        self.printed: set[tuple[str, str]] = set()
        self.last_phase: ClusterPhase | None = None
        self.bar: TaskID = progress.add_task(f"{cluster_id}: starting", total=None, count="")

    def show(self, status: ClusterStatus, retrying: Sequence[clusters.RetryingCall] = ()) -> None:
        if self.since is None:  # attach to what runs now (or to nothing, if the cluster is idle)
            self.since = status.operations_started - (1 if status.current else 0)
        if status.phase is not self.last_phase:
            self.progress.console.print(f"[bold]{self.cluster_id}[/] phase [bold]{status.phase}[/]")
            self.last_phase = status.phase
        # Finished operations first (oldest first), so steps that ended between polls still show.
        ours = [op for op in reversed(status.recent) if sequence(op) > self.since]
        for op in ours:
            self._print_steps(op)
            self._print_outcome(op)
        if status.current is not None:
            self._print_steps(status.current)
            self._print_retries(retrying)
            self._update_bar(status.current, retrying)
        if settled(status):
            self.progress.update(
                self.bar, description=f"{self.cluster_id}: {status.phase}", completed=1, total=1, count=""
            )

    def _print_steps(self, op: OperationStatus) -> None:
        for step in op.steps:
            key = (op.workflow_id, step.name)
            if step.state in MARKS and key not in self.printed:
                self.printed.add(key)
                line = f"  {MARKS[step.state]} {escape(f'{op.kind}: {step.name} {step.message}'.rstrip())}"
                self.progress.console.print(line)

    def _print_outcome(self, op: OperationStatus) -> None:
        key = (op.workflow_id, "<outcome>")
        if key not in self.printed:
            self.printed.add(key)
            took = (op.finished_at - op.started_at).total_seconds() if op.finished_at and op.started_at else 0.0
            style = "green" if op.state is OperationState.SUCCEEDED else "red"
            message = f": {op.message}" if op.message else ""
            self.progress.console.print(f"  [{style}]{op.kind} {op.state}[/] in {took:.1f}s{escape(message)}")

    def _print_retries(self, retrying: Sequence[clusters.RetryingCall]) -> None:
        # One line per failed attempt (not per poll): an operation that keeps retrying says so.
        for call in retrying:
            key = (call.activity_id, f"<attempt {call.attempt}>")
            if key not in self.printed:
                self.printed.add(key)
                self.progress.console.print(f"  [yellow]↻[/] {escape(call.describe())}")

    def _update_bar(self, op: OperationStatus, retrying: Sequence[clusters.RetryingCall] = ()) -> None:
        finished = sum(1 for s in op.steps if s.state in (StepState.DONE, StepState.SKIPPED))
        running = next((s for s in op.steps if s.state is StepState.RUNNING), None)
        fraction = op.progress.done / op.progress.total if op.progress.total else 0.0
        p = op.progress
        now = f"; {p.current}" + (f" {p.phase}" if p.phase else "") if p.current else ""
        detail = f" ({p.done}/{p.total} {p.unit}{now})" if p.total else ""
        description = f"{op.kind}: {running.name if running else op.state}{detail}"
        if op.state is OperationState.PAUSED:
            description = f"{op.kind}: PAUSED - {op.message}"
        elif retrying:
            call = retrying[0]
            description += f" - retrying {call.activity} (attempt {call.attempt})"
        description = escape(description)  # the progress bar renders its description as markup
        self.progress.update(
            self.bar,
            total=max(len(op.steps), 1),
            completed=finished + (fraction if running else 0.0),
            description=description,
            count=f"{finished}/{len(op.steps)} steps",
        )


async def watch(
    client: Client,
    cluster_id: str,
    since: int | None = None,
    poll: float = POLL_SECONDS,
    until: Callable[[ClusterStatus], bool] | None = None,
    settle: Callable[[ClusterStatus], bool] = settled,
) -> ClusterStatus:
    """Show phases, steps and a progress bar until the cluster is Ready, Failed or Deleted.

    ``since``: operations numbered above it are shown (0 for a create); None attaches to the
    operation running now. ``until``: stop earlier when it holds (e.g. an upgrade that paused).
    ``settle``: what counts as the end (default: no operation running, a settled phase).
    """
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        watcher = Watcher(progress, cluster_id, since)
        while True:
            status = await get_status(client, cluster_id)
            watcher.show(status, await clusters.retrying_calls(client, status.current))
            if settle(status) or (until is not None and until(status)):
                return status
            await asyncio.sleep(poll)


def first_shown(accepted: ClusterStatus, kind: OperationKind, *, was_running: bool = False) -> int:
    """The ``since`` that shows a just-accepted ``kind`` request's operation and any ahead of it.

    Another operation running: this one waits, and that one is shown first. Nothing running and the
    request queued (for a window or behind a drift check): what follows is shown. Otherwise this one
    started, and is the running one or, done already, the last started; ``was_running`` (something
    ran when the request was sent) shows that one's end too, e.g. "create cancelled".
    """
    started, current = accepted.operations_started, accepted.current
    if current is not None and current.kind is not kind:
        return max(0, started - 1)
    if current is None and any(q.kind is kind for q in accepted.queued):
        return started
    return max(0, started - (2 if was_running else 1))


async def operation_running(client: Client, cluster_id: str) -> bool:
    """Whether the entity's memo names a running operation: read without a query, before an update.

    Describing involves no worker. A query just before an update can break the entity's history:
    held back behind a workflow task that then times out (its worker just died), it is answered on
    a task that applies the newer events without completing; the update is then accepted in the
    next task, after those events' commands, an order the SDK (temporalio 1.35) does not replay.
    The status is read once the update is accepted instead (``since_accepted``).
    """
    try:
        description = await clusters.entity(client, cluster_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False  # the update that follows says so
        raise
    return bool(await description.memo_value("operation", ""))


async def since_accepted(client: Client, cluster_id: str, kind: OperationKind, *, was_running: bool) -> int:
    """The ``since`` for watching a ``kind`` request, from the status read once it is accepted."""
    return first_shown(await get_status(client, cluster_id), kind, was_running=was_running)


async def update_and_watch(
    client: Client, cluster_id: str, kind: OperationKind, method: Any, request: Any
) -> tuple[ClusterStatus, Any]:
    """Send an operation's update to the entity and follow it until the cluster settles.

    A refused request (the entity's validator said no) is raised at once as RequestRefused, and
    nothing was changed. Returns the settled status and the update's result, or the exception the
    operation failed with (the status says why, too).
    """
    was_running = await operation_running(client, cluster_id)
    try:
        handle = await clusters.entity(client, cluster_id).start_update(
            method, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(innermost_message(exc)) from None
    outcome = asyncio.ensure_future(handle.result())
    since = await since_accepted(client, cluster_id, kind, was_running=was_running)
    # Operations queued ahead of this one are shown too, so waiting for them is never silent. The
    # cluster settles between the one ahead and this one (Ready, nothing running): only a settled
    # cluster whose update has answered is the end.
    following = asyncio.ensure_future(
        watch(
            client,
            cluster_id,
            since=since,
            settle=lambda status: outcome.done() and settled(status),
        )
    )
    done, _ = await asyncio.wait({outcome, following}, return_when=asyncio.FIRST_COMPLETED)
    if outcome in done and isinstance(outcome.exception(), WorkflowUpdateFailedError) and not following.done():
        # Rejected by the validator (or failed at once): nothing ran, stop watching.
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        raise clusters.RequestRefused(innermost_message(outcome.exception()))  # type: ignore[arg-type]
    status = await following
    try:
        return status, await outcome
    except WorkflowUpdateFailedError as exc:
        return status, exc
