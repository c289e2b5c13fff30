"""``tenantctl reconcile ID [--dry-run] [--watch]``: check a cluster for drift now and repair it.

The cluster entity runs the check as an operation (``ReconcileCluster``), after any operation
ahead of it, so it never races an upgrade or a rotation. ``--dry-run`` reports what differs and
changes nothing. ``--pause-checks`` / ``--resume-checks`` switch the periodic check off and on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from starter.command import ClusterArg, OutputFormat, OutputOption, out, run_command

if TYPE_CHECKING:
    from models.reconcile import ReconcileResult


async def reconcile(
    cluster_id: ClusterArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what differs; change nothing")] = False,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow the check and repair step by step")] = False,
    pause_checks: Annotated[bool, typer.Option("--pause-checks", help="stop the periodic check")] = False,
    resume_checks: Annotated[bool, typer.Option("--resume-checks", help="restart the periodic check")] = False,
    every: Annotated[
        str | None, typer.Option("--every", help="periodic check interval, e.g. 5m (with --resume-checks)")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Compare a cluster with its spec now and repair what differs (waits behind a running operation)."""
    from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage
    from temporalio.service import RPCError, RPCStatusCode

    from config.settings import load_settings
    from models.cluster import OperationKind
    from models.durations import format_duration, parse_duration
    from models.errors import innermost_message
    from models.naming import entity_workflow_id
    from models.operations import ConfigureRequest
    from models.reconcile import ReconcileRequest
    from starter import clusters
    from starter.render import dump
    from starter.watch import operation_running, since_accepted, watch
    from worker.clients import connect_temporal
    from workflows.cluster import ClusterWorkflow

    if pause_checks and resume_checks:
        raise typer.BadParameter("choose one of --pause-checks and --resume-checks", param_hint="--pause-checks")
    if dry_run and (pause_checks or resume_checks or every):
        raise typer.BadParameter(
            "--dry-run checks now; it does not go with the periodic settings", param_hint="--dry-run"
        )
    settings = load_settings()
    client = await connect_temporal(settings)
    if pause_checks or resume_checks or every:
        spec = (await clusters.get_status(client, cluster_id)).spec
        interval = parse_duration(every) if every else spec.drift_check.interval
        setting = spec.drift_check.model_copy(update={"paused": pause_checks, "interval": interval})
        await clusters.update(
            client,
            cluster_id,
            ClusterWorkflow.configure,
            ConfigureRequest(drift_check=setting, requested_by=clusters.whoami()),
        )
        state = "paused" if setting.paused else f"every {format_duration(setting.interval)}"
        out.print(f"periodic drift check of [bold]{cluster_id}[/]: {state}")
        return
    handle = clusters.entity(client, cluster_id)
    was_running = await operation_running(client, cluster_id)  # the status only once accepted
    request = ReconcileRequest(dry_run=dry_run, requested_by=clusters.whoami())
    try:
        update = await handle.start_update(
            ClusterWorkflow.reconcile, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(innermost_message(exc)) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise clusters.ClusterNotFound(cluster_id) from None
        raise
    since = await since_accepted(client, cluster_id, OperationKind.RECONCILE, was_running=was_running)
    what = "drift check (dry run)" if dry_run else "drift check"
    if output is OutputFormat.TABLE:
        out.print(f"{what} of [bold]{cluster_id}[/] accepted; it runs after any operation ahead of it")
        out.print(f"Temporal UI: {settings.workflow_ui_url(entity_workflow_id(cluster_id))}")
    if watch_:
        await watch(client, cluster_id, since=since)
    try:
        result: ReconcileResult = await update.result()
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(f"{what} of {cluster_id} failed: {innermost_message(exc)}") from None
    if output is not OutputFormat.TABLE:
        out.print(dump(result.model_dump(mode="json", exclude={"operation"}), output), markup=False, highlight=False)
        return
    print_result(result)


def print_result(result: ReconcileResult) -> None:
    from models.drift import DriftKind

    if result.waited_for:
        out.print(f"waited for {escape(result.waited_for)} to finish first")
    if result.skipped:
        out.print(f"skipped: {escape(result.skipped)}")
        return
    if not result.drift:
        out.print("[green]in sync:[/] nothing differs; nothing changed, no node restarted")
        return
    for kind in DriftKind:
        for item in (i for i in result.drift if i.kind is kind):
            detail = f" ({escape(item.detail)})" if item.detail else ""
            out.print(f"  {kind.value:8} {escape(item.object)}{detail}")
    extras = sum(1 for i in result.drift if i.kind is DriftKind.EXTRA)
    if result.dry_run:
        out.print("dry run: nothing changed")
    elif result.repaired:
        out.print(f"[green]repaired:[/] {escape('; '.join(result.repaired))}")
        restarted = ", ".join(result.restarted) or "none"
        out.print(f"  nodes restarted (one at a time, for re-issued certificates): {escape(restarted)}")
    if extras:
        out.print(f"{extras} extra object(s) reported, not deleted: remove them by hand if they are not needed")


def register(app: typer.Typer) -> None:
    """Add ``reconcile`` to the ``tenantctl`` app."""
    app.command("reconcile")(run_command(reconcile))
