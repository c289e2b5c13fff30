"""What ``tenantctl fleet`` does (its commands are in ``starter/fleet_commands.py``, which imports this module
only when a fleet command runs, so that ``tenantctl --help`` loads no Temporal client).

``tenantctl fleet``: upgrade or rotate many clusters in one durable rollout.

- ``fleet upgrade --version X.Y.Z`` / ``fleet rotate [--ca]`` select clusters by search attributes
  (``--where`` takes the Temporal UI's query language; ``--owner`` and ``--ids`` narrow it), print
  the plan (canaries first, skipped clusters with the reason) and start one ``FleetRollout``
  workflow; ``--dry-run`` prints the plan and starts nothing; ``--watch`` follows it to the end.
- ``fleet approve|reject ID --by NAME [--comment ...]`` decide after the canaries.
- ``fleet status ID [-o json|yaml]``, ``fleet list``, ``fleet pause|resume|abort ID``.

Everything a user typed (queries, names, comments, reasons) is printed as plain text, never as
console markup.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import typer  # BadParameter
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from config.settings import load_settings
from models.durations import parse_duration
from models.errors import innermost_message
from models.fleet import (
    ApprovalRecord,
    ApprovalRequest,
    ClusterSnapshot,
    FleetAction,
    FleetControl,
    FleetControlResult,
    FleetOperation,
    FleetRolloutInput,
    FleetState,
    FleetStatus,
    RolloutCluster,
    RolloutClusterState,
    describe_operation,
    fleet_workflow_id,
    plan_rollout,
    start_decision,
)
from models.maintenance import MaintenanceOverride
from models.spec import describe_validation_error
from starter import clusters
from starter.clusters import UserError
from starter.command import out
from starter.render import OutputFormat, dump
from worker.clients import connect_temporal
from workflows import search_attributes as sa
from workflows.fleet import FLEET_WORKFLOW, FleetRolloutWorkflow

EXIT_NOT_SUCCEEDED = 1
WATCH_POLL_SECONDS = 1.0
FLEET_PREFIX = "fleet/"


# --- selection and planning ----------------------------------------------------------------------
def selection_query(where: str | None, owner: str | None, ids: list[str]) -> str:
    """The visibility query for running cluster entities that match the options."""
    parts = ['WorkflowType = "Cluster"', 'ExecutionStatus = "Running"']
    if owner:
        parts.append(f"{sa.CLUSTER_OWNER.name} = {_quoted(owner, '--owner')}")
    if ids:
        parts.append(f"{sa.CLUSTER_ID.name} IN ({', '.join(_quoted(i, '--ids') for i in ids)})")
    if where and where.strip():
        parts.append(f"({where.strip()})")
    return " AND ".join(parts)


def _quoted(value: str, option: str) -> str:
    if not value or any(c in value for c in "\"'\\()"):
        raise typer.BadParameter(f"{value!r} is not a cluster id or owner name", param_hint=option)
    return f'"{value}"'


def parse_ids(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


async def select_clusters(client: Client, query: str) -> list[str]:
    try:
        found = {
            execution.typed_search_attributes.get(sa.CLUSTER_ID) or execution.id.removeprefix("cluster/")
            async for execution in client.list_workflows(query)
        }
    except RPCError as exc:
        if exc.status is RPCStatusCode.INVALID_ARGUMENT:
            raise UserError(f"the selection query is not valid: {exc.message}") from None
        raise
    return sorted(found)


async def snapshots(client: Client, cluster_ids: list[str]) -> list[ClusterSnapshot]:
    async def one(cluster_id: str) -> ClusterSnapshot:
        try:
            return ClusterSnapshot.from_status(await clusters.get_status(client, cluster_id))
        except clusters.ClusterNotFound:
            return ClusterSnapshot(cluster_id=cluster_id, found=False)

    return list(await asyncio.gather(*(one(c) for c in cluster_ids)))


def plan_table(
    operation: FleetOperation,
    planned: list[RolloutCluster],
    known: dict[str, ClusterSnapshot],
    now: datetime,
    ignore_windows: bool,
) -> Table:
    table = Table(title="plan", title_justify="left")
    for column in ("#", "cluster", "role", "version", "plan", "maintenance window"):
        table.add_column(column)
    for number, cluster in enumerate(planned, start=1):
        snap = known.get(cluster.cluster_id)
        window = snap.maintenance_window if snap else None
        if cluster.state is RolloutClusterState.SKIPPED:
            what = Text(f"skipped: {cluster.reason}", style="dim")
        elif snap is not None:
            decision = start_decision(operation, snap, now, ignore_windows)
            what = Text("starts when a slot is free" if decision.at <= now else decision.reason)
        else:
            what = Text("")
        table.add_row(
            str(number) if cluster.state is not RolloutClusterState.SKIPPED else "-",
            Text(cluster.cluster_id),
            "canary" if cluster.canary else "",
            Text(cluster.from_version),
            what,
            Text(window.describe() if window else "any time"),
        )
    return table


# --- starting a rollout ----------------------------------------------------------------------------
async def rollout(
    operation: FleetOperation,
    *,
    version: str | None,
    force: bool,
    where: str | None,
    owner: str | None,
    ids: str | None,
    parallel: int,
    max_failures: int,
    canary: int,
    approve_after_canary: bool,
    approval_timeout: str,
    dry_run: bool,
    watch: bool,
    now: bool,
    reason: str,
    node_ready_timeout: str | None = None,
) -> None:
    if now and not reason.strip():
        raise typer.BadParameter("--now needs --reason TEXT: overriding maintenance windows is recorded")
    if reason.strip() and not now:
        raise typer.BadParameter("--reason goes with --now (it records why maintenance windows are overridden)")
    timeout = parse_duration(approval_timeout)
    if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
        raise typer.BadParameter(
            f"{approval_timeout!r} is not a duration such as 2h or 1d", param_hint="--approval-timeout"
        )
    ready_timeout = None
    if node_ready_timeout is not None:
        ready_timeout = parse_duration(node_ready_timeout)
        if not isinstance(ready_timeout, timedelta) or ready_timeout <= timedelta(0):
            raise typer.BadParameter(
                f"{node_ready_timeout!r} is not a duration such as 90s or 10m", param_hint="--node-ready-timeout"
            )
    settings = load_settings()
    client = await connect_temporal(settings)
    query = selection_query(where, owner, parse_ids(ids))
    selected = await select_clusters(client, query)
    if not selected:
        raise UserError(f"no running cluster matches the selection ({query}); nothing was started")
    who = clusters.whoami()
    try:
        rollout = FleetRolloutInput(
            operation=operation,
            version=version,
            force=force,
            cluster_ids=selected,
            selection=query,
            parallel=parallel,
            max_failures=max_failures,
            canary=canary,
            approve_after_canary=approve_after_canary,
            approval_timeout=timeout,
            maintenance_override=MaintenanceOverride(reason=reason, by=who) if now else None,
            requested_by=who,
            node_ready_timeout=ready_timeout,
        )
    except ValidationError as exc:
        raise UserError("; ".join(describe_validation_error(exc))) from None
    known = await snapshots(client, selected)
    planned = plan_rollout(operation, rollout.version, known, canary)
    eligible = [c for c in planned if c.state is not RolloutClusterState.SKIPPED]
    out.print(Text(f"fleet {describe_operation(operation, rollout.version)}: {len(selected)} selected by {query}"))
    out.print(plan_table(operation, planned, {s.cluster_id: s for s in known}, datetime.now(UTC), now))
    out.print(
        f"{len(eligible)} to run, {len(planned) - len(eligible)} skipped; at most {parallel} at once, "
        f"stops after {max_failures} failure(s)"
        + (f"; waits for approval after {canary} canary cluster(s)" if approve_after_canary else ""),
        markup=False,
    )
    if dry_run:
        out.print("dry run: nothing was started", markup=False)
        return
    started = datetime.now(UTC)
    workflow_id = fleet_workflow_id(operation, started, uuid.uuid4().hex[:4])
    handle = await client.start_workflow(
        FleetRolloutWorkflow.run,
        rollout,
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.OPERATION, f"fleet-{operation}"),
                SearchAttributePair(sa.FLEET_ROLLOUT_STATE, FleetState.RUNNING.value),
            ]
        ),
        static_summary=f"fleet {describe_operation(operation, rollout.version)} of {len(eligible)} clusters",
        static_details=(
            f"selection: `{query}`\n\nparallel {parallel}, max failures {max_failures}, canary {canary}"
            + (", approval after the canaries" if approve_after_canary else "")
            + (f"\n\nmaintenance windows overridden: {reason}" if now else "")
        ),
    )
    out.print(Text(f"started rollout {handle.id}"))
    out.print(Text(f"Temporal UI: {settings.workflow_ui_url(handle.id)}"))
    if approve_after_canary:
        out.print(Text(f"after the canaries: tenantctl fleet approve {handle.id} --by NAME"))
    if watch:
        await _watch(handle)


async def _watch(handle: WorkflowHandle[Any, Any]) -> None:
    """Print every change of the rollout and its clusters; exit 0 only when it succeeded."""
    seen: dict[str, str] = {}
    last_state: tuple[FleetState, str] | None = None
    while True:
        status: FleetStatus = await handle.query(FleetRolloutWorkflow.get_status)
        for cluster in status.clusters:
            line = f"{cluster.state}" + (f": {cluster.reason}" if cluster.reason else "")
            if seen.get(cluster.cluster_id) != line:
                seen[cluster.cluster_id] = line
                out.print(Text(f"  {cluster.cluster_id}{' (canary)' if cluster.canary else ''} {line}"))
        if (status.state, status.message) != last_state:
            last_state = (status.state, status.message)
            out.print(Text(f"rollout {status.state}" + (f": {status.message}" if status.message else "")))
        if status.state.finished:
            if status.state is not FleetState.SUCCEEDED:
                raise typer.Exit(EXIT_NOT_SUCCEEDED)
            return
        await asyncio.sleep(WATCH_POLL_SECONDS)


# --- a running rollout ---------------------------------------------------------------------------------
def rollout_workflow_id(rollout_id: str) -> str:
    return rollout_id if rollout_id.startswith(FLEET_PREFIX) else FLEET_PREFIX + rollout_id


async def _handle(rollout_id: str) -> tuple[Client, WorkflowHandle[Any, Any]]:
    client = await connect_temporal(load_settings())
    return client, client.get_workflow_handle(rollout_workflow_id(rollout_id))


async def _update(rollout_id: str, method: Any, request: Any) -> Any:
    _, handle = await _handle(rollout_id)
    try:
        return await handle.execute_update(method, request)
    except WorkflowUpdateFailedError as exc:
        raise UserError(innermost_message(exc)) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise UserError(f"no running rollout {handle.id}; see 'tenantctl fleet list'") from None
        raise


async def _status(rollout_id: str) -> FleetStatus:
    _, handle = await _handle(rollout_id)
    try:
        status: FleetStatus = await handle.query(FleetRolloutWorkflow.get_status)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise UserError(f"no rollout {handle.id}; see 'tenantctl fleet list'") from None
        raise
    return status


def _approval(by: str, comment: str) -> ApprovalRequest:
    try:
        return ApprovalRequest(by=by, comment=comment)
    except ValidationError as exc:
        raise UserError("; ".join(describe_validation_error(exc))) from None


async def approve(rollout_id: str, by: str, comment: str = "") -> None:
    """Let a rollout go on past its canaries (recorded: who, when, comment)."""
    record: ApprovalRecord = await _update(rollout_id, FleetRolloutWorkflow.approve, _approval(by, comment))
    out.print(Text(f"{rollout_workflow_id(rollout_id)} approved by {record.by} at {record.at:%Y-%m-%d %H:%M:%S} UTC"))


async def reject(rollout_id: str, by: str, comment: str = "") -> None:
    """Stop a rollout after its canaries: no other cluster starts."""
    record: ApprovalRecord = await _update(rollout_id, FleetRolloutWorkflow.reject, _approval(by, comment))
    out.print(Text(f"{rollout_workflow_id(rollout_id)} rejected by {record.by}; no other cluster starts"))


async def control(rollout_id: str, action: FleetAction, reason: str) -> None:
    try:
        control = FleetControl(action=action, by=clusters.whoami(), reason=reason)
    except ValidationError as exc:
        raise UserError("; ".join(describe_validation_error(exc))) from None
    result: FleetControlResult = await _update(rollout_id, FleetRolloutWorkflow.control, control)
    said = {
        FleetAction.PAUSE: "paused: clusters in flight finish, no new one starts",
        FleetAction.RESUME: "resumed",
        FleetAction.ABORT: "aborting: no new cluster starts and in-flight upgrades roll back",
    }[action]
    out.print(Text(f"{rollout_workflow_id(rollout_id)} {said} (now {result.state})"))


def status_table(status: FleetStatus) -> Table:
    table = Table(title=f"{status.rollout_id}: {status.state}", title_justify="left")
    for column in ("cluster", "role", "state", "version", "started", "finished", "reason"):
        table.add_column(column)
    for cluster in status.clusters:
        table.add_row(
            Text(cluster.cluster_id),
            "canary" if cluster.canary else "",
            str(cluster.state),
            Text(cluster.kubernetes_version or cluster.from_version),
            _at(cluster.started_at),
            _at(cluster.finished_at),
            Text(cluster.reason),
        )
    return table


async def show_status(rollout_id: str, output: OutputFormat = OutputFormat.TABLE) -> None:
    """Show a rollout: its state, every cluster's state and why, approvals and controls."""
    current = await _status(rollout_id)
    if output is not OutputFormat.TABLE:
        out.print(dump(current, output), markup=False, highlight=False, soft_wrap=True)
        return
    out.print(
        Text(
            f"fleet {describe_operation(current.operation, current.version)} — {current.state}; "
            f"parallel {current.parallel}, max failures {current.max_failures}, most in flight {current.max_in_flight}"
        )
    )
    if current.message:
        out.print(Text(f"message: {current.message}"))
    if current.approval:
        a = current.approval
        out.print(Text(f"{a.decision} by {a.by} at {_at(a.at)}" + (f": {a.comment}" if a.comment else "")))
    if current.maintenance_override:
        out.print(Text(f"maintenance windows overridden: {current.maintenance_override.reason}"))
    out.print(status_table(current))
    for line in current.log:
        out.print(Text(line, style="dim"))


async def list_rollouts(output: OutputFormat = OutputFormat.TABLE, all_: bool = False) -> None:
    """List fleet rollouts (from search attributes)."""
    client = await connect_temporal(load_settings())
    query = f'WorkflowType = "{FLEET_WORKFLOW}"' + ("" if all_ else ' AND ExecutionStatus = "Running"')
    rows = [
        {
            "id": execution.id,
            "operation": execution.typed_search_attributes.get(sa.OPERATION) or "",
            "state": execution.typed_search_attributes.get(sa.FLEET_ROLLOUT_STATE) or "",
            "status": execution.status.name.lower() if execution.status else "",
            "started": execution.start_time.isoformat(timespec="seconds"),
        }
        async for execution in client.list_workflows(query)
    ]
    rows.sort(key=lambda r: r["started"], reverse=True)
    if output is not OutputFormat.TABLE:
        out.print(dump(rows, output), markup=False, highlight=False)
        return
    table = Table(title="fleet rollouts", title_justify="left")
    for column in ("id", "operation", "state", "status", "started"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text(row[c]) for c in ("id", "operation", "state", "status", "started")))
    out.print(table)


def _at(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"
