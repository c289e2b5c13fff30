"""``tenantctl``: create, inspect, rotate, upgrade and delete tenant clusters; run the local stack."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from starter.command import ClusterArg, OutputFormat, OutputOption, err, fail_line, out, run_command

if TYPE_CHECKING:
    from models.cluster import ClusterPhase

# Start-up matters (``tenantctl --help`` runs often): this module and the command modules import
# typer and rich only; Temporal, pydantic models and backends are imported when a command runs.
app = typer.Typer(
    name="tenantctl",
    help="Run fleets of tenant Kubernetes clusters with durable Temporal workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# One error boundary for every command (starter/command.py); ``run`` is its short name here.
run = run_command


@app.command()
@run
async def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="cluster spec (YAML)")],
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow progress until Ready or failed")] = False,
) -> None:
    """Create a tenant cluster from a spec file."""
    from config.settings import load_settings
    from starter import clusters
    from starter.errors import NoWorkerPolling, WorkerDidNotAnswer
    from starter.spec_file import load_spec
    from starter.watch import watch

    spec = load_spec(file)  # invalid specs stop here, before anything is started
    settings = load_settings()
    client = await clusters.connect(settings, need_worker=False)
    try:
        await clusters.require_worker(client, settings.temporal_task_queue)
    except NoWorkerPolling as exc:
        if watch_:
            raise  # nothing would move while we watch
        waiting = f"no worker is polling task queue {exc.task_queue}{exc.detail}: the cluster starts when one does"
        err.print(fail_line("warning", waiting, style="yellow"))
    handle = await clusters.start_cluster(client, spec, settings.temporal_task_queue)
    out.print(f"creating cluster [bold]{spec.id}[/] (workflow {escape(handle.id)})")
    out.print(f"Temporal UI: {escape(settings.workflow_ui_url(handle.id))}", soft_wrap=True)
    if watch_:
        try:
            status = await watch(client, spec.id, since=0)
        except NoWorkerPolling as exc:  # the worker stopped after the check above: the create waits for one
            outcome = f"the cluster's workflow {handle.id} was started and goes on when a worker polls"
            raise NoWorkerPolling(exc.task_queue, exc.detail, outcome) from None
        except WorkerDidNotAnswer as exc:  # likewise, when the worker had only just stopped
            outcome = f"the cluster's workflow {handle.id} was started and goes on when a worker polls"
            raise WorkerDidNotAnswer(exc.seconds, outcome) from None
        _exit_for(status.phase, status.message)


@app.command()
@run
async def status(cluster_id: ClusterArg, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show a cluster's phase, version, certificates and current operation."""
    from config.settings import load_settings
    from models.naming import entity_workflow_id
    from starter.render import dump, status_view
    from starter.status_reader import read_status

    settings = load_settings()
    result, retrying = await read_status(settings, cluster_id)  # no temporalio.client: see status_reader
    if output is OutputFormat.TABLE:
        ui_url = settings.workflow_ui_url(entity_workflow_id(cluster_id))
        out.print(status_view(result, ui_url, retrying), soft_wrap=True)
    else:
        shown = result.model_copy(update={"retrying": retrying})
        # soft_wrap: a long value (an upgrade's pause message) must not be folded into invalid JSON
        out.print(dump(shown, output), markup=False, highlight=False, soft_wrap=True)


@app.command("list")
@run
async def list_(
    output: OutputOption = OutputFormat.TABLE,
    all_: Annotated[bool, typer.Option("--all", "-a", help="include deleted clusters")] = False,
    where: Annotated[
        str | None,
        typer.Option("--where", help="visibility query as in the Temporal UI, e.g. 'ClusterOwner = \"acme\"'"),
    ] = None,
) -> None:
    """List tenant clusters: id, owner, provider, version, phase, current operation, earliest
    certificate expiry, last drift check (from visibility: search attributes and each entity's memo)."""
    from config.settings import load_settings
    from starter import clusters
    from starter.render import clusters_table, dump

    settings = load_settings()
    client = await clusters.connect(settings, need_worker=False)
    rows = await clusters.list_clusters(client, include_closed=all_, where=where)
    if output is OutputFormat.TABLE:
        out.print(clusters_table(rows))
    else:
        out.print(dump(rows, output), markup=False, highlight=False)


@app.command("watch")
@run
async def watch_command(cluster_id: ClusterArg) -> None:
    """Follow a cluster's current operation until it settles."""
    from config.settings import load_settings
    from models.naming import entity_workflow_id
    from starter import clusters
    from starter.watch import watch

    settings = load_settings()
    client = await clusters.connect(settings)
    out.print(f"Temporal UI: {escape(settings.workflow_ui_url(entity_workflow_id(cluster_id)))}", soft_wrap=True)
    status = await watch(client, cluster_id)
    _exit_for(status.phase, status.message)


def _exit_for(phase: ClusterPhase, message: str) -> None:
    from models.cluster import ClusterPhase

    if phase is ClusterPhase.FAILED:
        err.print(f"[red]failed:[/] {escape(message)}")
        raise typer.Exit(1)
    out.print(f"[green]{phase}[/]")


def _mount_optional_groups() -> None:
    """Sub-commands that live in their own modules."""
    from starter import lifecycle_commands
    from starter.dev_commands import dev_app

    lifecycle_commands.register(app)  # delete, protect

    app.add_typer(dev_app, name="dev", help="Run the embedded local stack (Temporal, OpenBao, moto, host API).")
    from starter import rotation_commands

    rotation_commands.register(app)  # rotate, schedule, kubeconfig
    from starter import upgrade_commands

    upgrade_commands.register(app)  # upgrade ID --version X.Y.Z, upgrade pause|resume|abort ID
    from starter import scale_commands

    scale_commands.register(app)  # scale ID --workers N
    from starter import apply_commands

    apply_commands.register(app)  # apply -f FILE [--dry-run]
    from starter import fleet_commands

    fleet_commands.register(app)  # fleet upgrade|rotate|approve|reject|status|list|pause|resume|abort
    from starter import reconcile_commands

    reconcile_commands.register(app)  # reconcile ID [--dry-run] [--watch] [--pause-checks|--resume-checks]


_mount_optional_groups()


def main() -> None:
    """The ``tenantctl`` console script: the app, then an exit that skips interpreter teardown.

    The Temporal client's Rust runtime keeps threads that may call into Python while the
    interpreter finalizes, which aborts or segfaults a short-lived process now and then (seen here
    for about 1 in 40 runs of ``tenantctl list``; temporalio/sdk-python#300). Output is flushed and
    the exit code kept, so nothing a user sees changes.
    """
    code: int = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
