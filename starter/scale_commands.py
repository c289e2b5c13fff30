"""``tenantctl scale ID --workers N [--watch]``: change a cluster's worker count through its entity.

Up adds workers at the next free index (certificates, then VMs, then Ready); down removes the
newest first, one at a time (drain, VM, Node, certificates). A refused scale (below 1, above the
spec's limit, the count it already has, while deleting) is an error and nothing changes. A scale
that pauses (a drain a budget blocks) is resumed or aborted with 'tenantctl upgrade resume|abort ID'.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from starter.command import err, out, run_command

if TYPE_CHECKING:
    from temporalio.client import (
        WorkflowUpdateHandle,
    )

    from models.cluster import ClusterStatus
    from models.operations import ScaleRequest, ScaleResult


def scale_paused(status: ClusterStatus) -> bool:
    from models.cluster import OperationKind, OperationState

    op = status.current
    return op is not None and op.kind is OperationKind.SCALE and op.state is OperationState.PAUSED


async def scale(
    cluster_id: Annotated[str, typer.Argument(metavar="ID", help="cluster id")],
    workers: Annotated[int, typer.Option("--workers", help="the worker count wanted")],
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow the scale until it ends or pauses")] = False,
) -> None:
    """Scale a cluster's workers: 'scale ID --workers N [--watch]'."""
    from config.settings import load_settings
    from models.operations import ScaleRequest
    from starter import clusters
    from starter.upgrade_commands import EXIT_PAUSED
    from starter.watch import watch
    from worker.clients import connect_temporal

    settings = load_settings()
    client = await connect_temporal(settings)
    before = await clusters.get_status(client, cluster_id)
    update = await start_scale(client, cluster_id, ScaleRequest(workers=workers, requested_by=clusters.whoami()))
    count = before.spec.workers.count
    out.print(
        f"scale of [bold]{escape(cluster_id)}[/] from {count} to [bold]{workers}[/] workers accepted; "
        "it runs after any operation ahead of it"
    )
    if not watch_:
        out.print(f"follow it with 'tenantctl watch {cluster_id}'; progress in 'tenantctl status {cluster_id}'")
        return
    since = before.operations_started - (1 if before.current else 0)
    status = await watch(client, cluster_id, since=since, until=scale_paused)
    if scale_paused(status):
        assert status.current is not None
        err.print(f"[yellow]paused:[/] {escape(status.current.message)}")
        raise typer.Exit(EXIT_PAUSED)
    await report(cluster_id, update)


async def start_scale(client: Any, cluster_id: str, request: ScaleRequest) -> WorkflowUpdateHandle[Any]:
    """Ask the entity; a validator's refusal is an error that says why, and nothing changed."""
    from temporalio.client import (
        WorkflowUpdateFailedError,
        WorkflowUpdateRPCTimeoutOrCancelledError,
        WorkflowUpdateStage,
    )
    from temporalio.service import RPCError, RPCStatusCode

    from models.errors import innermost_message
    from starter import clusters
    from starter.upgrade_commands import REFUSAL_CHECK_SECONDS
    from workflows.cluster import ClusterWorkflow

    try:
        update: WorkflowUpdateHandle[Any] = await clusters.entity(client, cluster_id).start_update(
            ClusterWorkflow.scale, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(f"{innermost_message(exc)}; nothing was changed") from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise clusters.ClusterNotFound(cluster_id) from None
        raise
    try:
        await asyncio.wait_for(update.result(), timeout=REFUSAL_CHECK_SECONDS)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        pass  # still running: accepted
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(f"{innermost_message(exc)}; nothing was changed") from None
    return update


async def report(cluster_id: str, update: WorkflowUpdateHandle[Any]) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    from models.errors import innermost_message
    from models.operations import UpgradeOutcome
    from starter.upgrade_commands import EXIT_FAILED

    try:
        result: ScaleResult = await update.result()
    except WorkflowUpdateFailedError as exc:
        err.print(f"[red]scale failed:[/] {escape(innermost_message(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    if result.outcome is UpgradeOutcome.ABORTED:
        err.print(f"[yellow]aborted:[/] {cluster_id} has {result.workers} workers")
        raise typer.Exit(EXIT_FAILED)
    changed = (["added " + ", ".join(result.added)] if result.added else []) + (
        ["removed " + ", ".join(result.removed)] if result.removed else []
    )
    out.print(f"[green]scaled[/] {escape(cluster_id)} to {result.workers} workers: {'; '.join(changed) or 'no change'}")


def register(app: typer.Typer) -> None:
    """Add ``scale`` to the ``tenantctl`` app."""
    app.command("scale")(run_command(scale))
