"""``tenantctl apply -f FILE [--dry-run] [--watch]``: make a cluster what its spec file says.

A cluster that does not exist is created. Otherwise the file is compared with the spec the
cluster's entity holds (``models.desired``); the plan (each changed field old -> new, then the
operations) is printed, fields that cannot change on a live cluster are refused before anything
starts, and the operations run through the entity one at a time, in a safe order. ``--dry-run``
prints the plan and changes nothing; an unchanged file says "no changes" and starts nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from starter.command import err, out, run_command

if TYPE_CHECKING:
    from models.desired import ApplyPlan, PlannedOperation
    from models.spec import ClusterSpec


EXIT_REFUSED = 2


def render_plan(cluster_id: str, plan: ApplyPlan) -> list[str]:
    """The plan as printed (plain text: every value in it came from a file)."""
    if plan.unchanged:
        return [f"{cluster_id}: no changes"]
    lines = [f"{cluster_id}: {len(plan.changes)} changed fields"]
    lines += [f"  {c.describe()}" for c in plan.changes]
    if plan.refusals:
        lines.append("refused, nothing was started:")
        lines += [f"  {r}" for r in plan.refusals]
        return lines
    lines.append("operations, one at a time:")
    lines += [f"  {i}. {o.description}" for i, o in enumerate(plan.operations, 1)]
    return lines


async def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="cluster spec (YAML)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, change nothing")] = False,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow each operation as it runs")] = False,
    now: Annotated[
        bool, typer.Option("--now", help="the upgrade does not wait for the maintenance window (needs --reason)")
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="with --now: why (recorded with the upgrade)")] = "",
) -> None:
    """Create a cluster, or change a live one to match its spec file.

    An upgrade waits for the cluster's maintenance window (the command says when it opens and waits;
    Ctrl-C leaves it queued in the cluster); '--now --reason TEXT' runs it at once, on the record.
    """
    from starter.upgrade_commands import maintenance_override

    override = maintenance_override(now, reason)
    from config.settings import load_settings
    from models.cluster import ClusterPhase
    from models.desired import plan_apply
    from starter import clusters
    from starter.spec_file import load_spec
    from starter.watch import watch
    from worker.clients import connect_temporal

    wanted = load_spec(file)
    settings = load_settings()
    client = await connect_temporal(settings)
    try:
        status = await clusters.get_status(client, wanted.id)
    except clusters.ClusterNotFound:
        status = None
    if status is None or status.phase is ClusterPhase.DELETED:
        if dry_run:
            out.print(f"{escape(wanted.id)}: does not exist; apply would create it", markup=True)
            return
        handle = await clusters.start_cluster(client, wanted, settings.temporal_task_queue)
        out.print(f"creating cluster [bold]{escape(wanted.id)}[/] (workflow {handle.id})")
        if watch_:
            await watch(client, wanted.id, since=0)
        return
    plan = plan_apply(status.spec, wanted)
    for line in render_plan(wanted.id, plan):
        (err if plan.refusals else out).print(line, markup=False)
    if plan.refusals:
        raise typer.Exit(EXIT_REFUSED)
    if dry_run or plan.unchanged:
        return
    for operation in plan.operations:
        await run_operation(client, wanted, operation, watch_, override)


async def run_operation(
    client: Any, wanted: ClusterSpec, operation: PlannedOperation, watch_: bool, override: Any = None
) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    from models.desired import ApplyStep
    from models.errors import innermost_message
    from models.operations import ConfigureRequest, ScaleRequest, UpgradeOutcome, UpgradeRequest
    from starter import clusters
    from starter.scale_commands import report, start_scale
    from starter.upgrade_commands import EXIT_FAILED, queued_request, start_upgrade_update, until_started
    from starter.watch import watch
    from workflows.cluster import ClusterWorkflow

    cid = wanted.id
    out.print(f"{operation.description} ...", markup=False)
    before = await clusters.get_status(client, cid)
    since = before.operations_started
    if operation.step is ApplyStep.CONFIGURE:
        request = ConfigureRequest(
            certificates=wanted.certificates,
            deletion_protection=wanted.deletion_protection,
            maintenance=wanted.maintenance,
            drift_check=wanted.drift_check,
            node_repair=wanted.node_repair,
            requested_by=clusters.whoami(),
        )
        result = await clusters.update(client, cid, ClusterWorkflow.configure, request)
        out.print(f"configured: {', '.join(result.changed) or 'nothing changed'}", markup=False)
        return
    if operation.step is ApplyStep.SCALE:
        assert operation.workers is not None
        update = await start_scale(client, cid, ScaleRequest(workers=operation.workers, requested_by=clusters.whoami()))
        if watch_:
            await watch(client, cid, since=since)
        await report(cid, update)
        return
    assert operation.version is not None
    upgrade = UpgradeRequest(version=operation.version, requested_by=clusters.whoami(), maintenance_override=override)
    update = await start_upgrade_update(client, cid, upgrade)
    queued = await queued_request(client, cid, update.id)
    if queued is not None and queued.window_opens_at is not None:
        out.print(f"  {queued.message}; waiting (Ctrl-C leaves it queued in the cluster)", markup=False)
        await until_started(client, cid, update.id)
    if watch_:
        await watch(client, cid, since=since)
    try:
        upgraded = await update.result()
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(innermost_message(exc)) from None
    if upgraded.outcome is not UpgradeOutcome.COMPLETED:
        err.print(f"upgrade of {cid} ended {upgraded.outcome.value}", markup=False)
        raise typer.Exit(EXIT_FAILED)
    out.print(f"upgraded {cid} to Kubernetes {upgraded.kubernetes_version}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``apply`` to the ``tenantctl`` app."""
    app.command("apply")(run_command(apply))
