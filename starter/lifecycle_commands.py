"""``tenantctl delete | protect``: tear a cluster down, and guard it against that."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from starter.command import ClusterArg, err, out, run_command

if TYPE_CHECKING:
    from models.operations import ConfigureResult


async def delete(
    cluster_id: ClusterArg,
    cancel_running: Annotated[
        bool,
        typer.Option(
            "--cancel-running",
            help="cancel the operation running now instead of waiting for it to finish",
        ),
    ] = False,
) -> None:
    """Tear a cluster down: schedule, nodes, endpoint, key pairs, namespace, then its PKI.

    Refused while deletion protection is on ('tenantctl protect ID --off' first). Safe to run again
    on a cluster whose create or earlier delete died halfway.
    """
    from config.settings import load_settings
    from models.cluster import ClusterPhase, OperationKind
    from models.naming import entity_workflow_id
    from models.operations import DeleteRequest, RunningOperationPolicy, TeardownResult
    from starter import clusters
    from starter.watch import update_and_watch
    from workflows.cluster import ClusterWorkflow

    settings = load_settings()
    client = await clusters.connect(settings)
    request = DeleteRequest(
        running_operation=RunningOperationPolicy.CANCEL if cancel_running else RunningOperationPolicy.WAIT,
        requested_by=clusters.whoami(),
    )
    out.print(f"deleting cluster [bold]{cluster_id}[/]")
    out.print(f"Temporal UI: {escape(settings.workflow_ui_url(entity_workflow_id(cluster_id)))}", soft_wrap=True)
    status, report = await update_and_watch(client, cluster_id, OperationKind.DELETE, ClusterWorkflow.delete, request)
    if status.phase is not ClusterPhase.DELETED or not isinstance(report, TeardownResult):
        err.print(f"[red]teardown did not finish:[/] {escape(status.message)}")
        err.print(f"run 'tenantctl delete {cluster_id}' again once the cause is fixed; it resumes where it stopped")
        raise typer.Exit(1)
    out.print(
        f"[green]deleted[/] {cluster_id}: removed {len(report.removed)} objects, revoked "
        f"{report.revoked_certificates} certificates in {report.duration_seconds:.1f}s"
    )


async def protect(
    cluster_id: ClusterArg,
    off: Annotated[bool, typer.Option("--off", help="turn deletion protection off")] = False,
) -> None:
    """Turn deletion protection on (or off with --off)."""
    from config.settings import load_settings
    from models.operations import ConfigureRequest
    from starter import clusters
    from workflows.cluster import ClusterWorkflow

    client = await clusters.connect(load_settings())
    result: ConfigureResult = await clusters.update(
        client,
        cluster_id,
        ClusterWorkflow.configure,
        ConfigureRequest(deletion_protection=not off, requested_by=clusters.whoami()),
    )
    state = "on" if result.spec.deletion_protection else "off"
    change = "now" if result.changed else "already"
    out.print(f"deletion protection of {cluster_id} is {change} {state}")


def register(app: typer.Typer) -> None:
    app.command("delete")(run_command(delete))
    app.command("protect")(run_command(protect))
