"""The rotation schedule as ``tenantctl schedule show`` prints it (imported when that command runs)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from rich.table import Table
from rich.text import Text
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from models.durations import Duration, format_duration
from models.naming import rotation_schedule_id
from starter.errors import UserError

RECENT_RUNS_SHOWN = 5
NEXT_RUNS_SHOWN = 3


class ScheduleMissing(UserError, LookupError):
    def __init__(self, cluster_id: str) -> None:
        super().__init__(
            f"cluster {cluster_id} has no rotation schedule ({rotation_schedule_id(cluster_id)}); "
            "it is made once the cluster is Ready, and removed when it is deleted"
        )


class ScheduleRun(BaseModel):
    scheduled_at: datetime
    started_at: datetime | None = None
    workflow_id: str = ""
    status: str = ""


class ScheduleView(BaseModel):
    """What ``schedule show`` prints (and ``-o json|yaml`` dumps)."""

    schedule_id: str
    cluster_id: str
    interval: Duration | None = None
    paused: bool = False
    note: str = ""
    overlap: str = ""
    catchup_window: Duration | None = None
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[ScheduleRun] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)
    actions_taken: int = 0
    skipped_overlap: int = 0
    missed_catchup_window: int = 0


async def describe_schedule(client: Client, cluster_id: str) -> ScheduleView:
    handle = client.get_schedule_handle(rotation_schedule_id(cluster_id))
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ScheduleMissing(cluster_id) from None
        raise
    recent = []
    for action in desc.info.recent_actions[-RECENT_RUNS_SHOWN:]:
        workflow_id = getattr(action.action, "workflow_id", "")
        state = ""
        if workflow_id:
            try:
                described = await client.get_workflow_handle(workflow_id).describe()
                state = described.status.name.lower() if described.status else ""
            except RPCError:
                state = "unknown"
        recent.append(
            ScheduleRun(
                scheduled_at=action.scheduled_at, started_at=action.started_at, workflow_id=workflow_id, status=state
            )
        )
    intervals = desc.schedule.spec.intervals
    policy = desc.schedule.policy
    return ScheduleView(
        schedule_id=handle.id,
        cluster_id=cluster_id,
        interval=intervals[0].every if intervals else None,
        paused=desc.schedule.state.paused,
        note=desc.schedule.state.note or "",
        overlap=policy.overlap.name.lower(),
        catchup_window=policy.catchup_window,
        next_runs=list(desc.info.next_action_times[:NEXT_RUNS_SHOWN]),
        recent_runs=recent,
        running=[getattr(a, "workflow_id", "") for a in desc.info.running_actions],
        actions_taken=desc.info.num_actions,
        skipped_overlap=desc.info.num_actions_skipped_overlap,
        missed_catchup_window=desc.info.num_actions_missed_catchup_window,
    )


def schedule_table(view: ScheduleView) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("schedule", f"{view.schedule_id} (cluster {view.cluster_id})")
    table.add_row("interval", format_duration(view.interval) if view.interval else "-")
    table.add_row("state", Text.assemble(("paused", "yellow"), f": {view.note}") if view.paused else "active")
    table.add_row("policy", f"overlap {view.overlap}, catch-up window {_duration(view.catchup_window)}")
    table.add_row("next runs", ", ".join(_at(t) for t in view.next_runs) or "-")
    table.add_row(
        "runs",
        f"{view.actions_taken} started, {view.skipped_overlap} skipped (overlap), "
        f"{view.missed_catchup_window} missed (catch-up window)",
    )
    if view.running:
        table.add_row("running", Text(", ".join(view.running)))
    for run in reversed(view.recent_runs):
        table.add_row("recent", Text(f"{_at(run.scheduled_at)}  {run.workflow_id}  {run.status}"))
    return table


def _at(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _duration(value: timedelta | None) -> str:
    return format_duration(value) if value else "-"
