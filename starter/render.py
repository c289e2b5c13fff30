"""How the CLI shows things: rich tables for people, JSON/YAML for scripts.

Text that comes from users or backends (messages, names, owners) goes into cells as ``Text``, which
rich never reads as markup: a message holding ``[/]`` is shown as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from rich.console import Group
from rich.table import Table
from rich.text import Text

from models.cluster import ClusterPhase, ClusterStatus, OperationStatus, StepState
from starter.command import OutputFormat, console

if TYPE_CHECKING:
    from starter.clusters import RetryingCall

__all__ = ["OutputFormat", "clusters_table", "console", "dump", "status_view"]


PHASE_STYLE = {
    ClusterPhase.READY: "green",
    ClusterPhase.FAILED: "red",
    ClusterPhase.DELETED: "dim",
    ClusterPhase.DELETING: "yellow",
}
STEP_MARK = {
    StepState.PENDING: "[dim]○[/]",
    StepState.RUNNING: "[yellow]◐[/]",
    StepState.DONE: "[green]●[/]",
    StepState.FAILED: "[red]✗[/]",
    StepState.SKIPPED: "[dim]-[/]",
}


def dump(data: Any, fmt: OutputFormat) -> str:
    plain = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    if isinstance(plain, list):
        plain = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in plain]
    if fmt is OutputFormat.JSON:
        return json.dumps(plain, indent=2)
    import yaml

    return yaml.safe_dump(plain, sort_keys=False)


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "-"
    delta = moment - (now or datetime.now(UTC))
    seconds = int(abs(delta.total_seconds()))
    text = (
        f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )
    return f"in {text}" if delta.total_seconds() > 0 else f"{text} ago"


def status_view(status: ClusterStatus, ui_url: str | None = None, retrying: Sequence[RetryingCall] = ()) -> Group:
    spec = status.spec
    phase = Text(status.phase.value, style=PHASE_STYLE.get(status.phase, "yellow"))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("cluster", Text(f"{status.cluster_id} (owner {spec.owner}, provider {spec.provider})"))
    facts.add_row("phase", phase)
    facts.add_row("kubernetes", status.kubernetes_version)
    facts.add_row("api", spec.api_domain)
    facts.add_row("nodes", Text(", ".join(sorted(status.nodes)) or f"{len(spec.node_names())} planned"))
    facts.add_row(
        "certificates",
        f"{len(status.certificates)} issued; earliest expiry {_at(status.earliest_expiry)} "
        f"({ago(status.earliest_expiry)})",
    )
    facts.add_row("next rotation", f"{_at(status.next_rotation)} ({ago(status.next_rotation)})")
    facts.add_row("deletion protection", "on" if spec.deletion_protection else "off")
    if status.last_check is not None:  # drift check (issue 12); Text: object names are not markup
        check = status.last_check
        detail = "; ".join(check.repaired) or check.message or "; ".join(check.drift)
        facts.add_row(
            "last drift check", Text(f"{_at(check.at)}: {check.outcome}" + (f" ({detail})" if detail else ""))
        )
    facts.add_row("next drift check", "paused" if spec.drift_check.paused else _at(status.next_check))
    health = status.node_health  # node auto-repair (issue 12); Text: reasons come from the backends
    for node, unhealthy in health.unhealthy.items():
        facts.add_row("unhealthy node", Text(f"{node} since {_at(unhealthy.since)}: {unhealthy.reason}"))
    if health.held:
        facts.add_row("node auto-repair", Text(health.held))
    if health.note:
        facts.add_row("node health", Text(health.note))
    if health.last_repair:
        facts.add_row("last node repair", Text(health.last_repair))
    window = spec.maintenance.window if spec.maintenance else None
    facts.add_row("maintenance window", Text(window.describe() if window else "any time"))
    for queued in status.queued:  # accepted, not started: waiting for the window or behind another operation
        facts.add_row("queued", Text(queued.describe()))
    if status.message:
        facts.add_row("message", Text(status.message))
    if ui_url:
        facts.add_row("temporal ui", Text(ui_url))
    parts: list[Any] = [facts]
    if status.current:
        parts.append(operation_view(status.current))
    if retrying:
        parts.append(retrying_view(retrying))
    if status.recent:
        parts.append(recent_view(status.recent))
    return Group(*parts)


def operation_view(op: OperationStatus) -> Table:
    table = Table(title=Text(f"{op.kind} ({op.state})"), title_justify="left", show_header=False, box=None)
    table.add_column(width=2)
    table.add_column()
    table.add_column(style="dim")
    for step in op.steps:
        table.add_row(STEP_MARK[step.state], Text(step.name), Text(step.message))
    if op.progress.total:
        p = op.progress
        table.add_row(
            "", Text(f"{p.done}/{p.total} {p.unit}"), Text(f"{p.current}: {p.phase}" if p.phase else p.current)
        )
    if op.message:
        table.add_row("", "[bold]note[/]", Text(op.message))
    return table


def retrying_view(calls: Sequence[RetryingCall]) -> Table:
    """Calls of the running operation that failed and are tried again: what failed, how often, when next."""
    table = Table(title=Text("retrying", style="yellow"), title_justify="left")
    for col in ("call", "attempt", "last error", "next try"):
        table.add_column(col)
    for call in calls:
        next_try = f"{_at(call.next_retry)} ({ago(call.next_retry)})" if call.next_retry else "running now"
        table.add_row(Text(call.activity), str(call.attempt), Text(call.last_error), next_try)
    return table


def recent_view(ops: list[OperationStatus]) -> Table:
    table = Table(title="recent operations", title_justify="left")
    for col in ("operation", "state", "started", "took", "by", "message"):
        table.add_column(col)
    for op in ops:
        took = (op.finished_at - op.started_at).total_seconds() if op.finished_at and op.started_at else None
        table.add_row(
            Text(op.kind),
            Text(op.state),
            _at(op.started_at),
            f"{took:.1f}s" if took is not None else "-",
            Text(op.requested_by),
            Text(op.message[:80]),
        )
    return table


LIST_COLUMNS = ("id", "owner", "provider", "version", "phase", "operation", "earliest expiry", "last drift check")


def clusters_table(rows: list[dict[str, str]], now: datetime | None = None) -> Table:
    """``tenantctl list``: one line per cluster (every value from visibility; none is markup)."""
    table = Table(title="tenant clusters", title_justify="left")
    for col in LIST_COLUMNS:
        table.add_column(col)
    for row in rows:
        expiry = _parsed(row.get("earliest_expiry", ""))
        checked = _parsed(row.get("last_check", ""))
        outcome = row.get("last_check_outcome", "")
        check = f"{ago(checked, now)}, {outcome}" if checked else (outcome or "-")
        phase = row["phase"] + ("" if row.get("running", "yes") == "yes" else " (closed)")
        table.add_row(
            Text(row["id"]),
            Text(row["owner"]),
            Text(row["provider"]),
            Text(row["version"]),
            Text(phase, style=PHASE_STYLE.get(ClusterPhase(row["phase"]), "yellow") if _phase(row) else ""),
            Text(row.get("operation", "") or "-"),
            Text(f"{_at(expiry)} ({ago(expiry, now)})" if expiry else "-"),
            Text(check),
        )
    return table


def _phase(row: dict[str, str]) -> bool:
    return row["phase"] in {p.value for p in ClusterPhase}


def _parsed(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _at(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"
