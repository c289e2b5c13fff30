"""``tenantctl``: create, inspect, rotate, upgrade and delete tenant clusters; run the local stack."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from config.settings import Settings, load_settings
from models.cluster import ClusterPhase
from models.naming import entity_workflow_id
from models.spec import SpecError
from starter import clusters
from starter.render import OutputFormat, clusters_table, console, dump, status_view
from starter.spec_file import load_spec
from starter.watch import watch
from worker.clients import connect_temporal

app = typer.Typer(
    name="tenantctl",
    help="Run fleets of tenant Kubernetes clusters with durable Temporal workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")
OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json or yaml")]
ClusterArg = Annotated[str, typer.Argument(help="cluster id")]

out = console()
err = console(stderr=True)


def run(coro_fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command; turn the errors users cause into a one-line message and exit code 1."""

    @functools.wraps(coro_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(coro_fn(*args, **kwargs))
        except SpecError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from None
        except (clusters.ClusterExists, clusters.ClusterNotFound, clusters.RequestRefused) as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from None
        except RuntimeError as exc:
            if "connect" in str(exc).lower():
                err.print(f"[red]error:[/] cannot reach Temporal: {exc}. Is the stack up? ('tenantctl dev up')")
                raise typer.Exit(3) from None
            raise

    return wrapper


async def temporal(settings: Settings) -> Any:
    return await connect_temporal(settings)


@app.command()
@run
async def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="cluster spec (YAML)")],
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow progress until Ready or failed")] = False,
) -> None:
    """Create a tenant cluster from a spec file."""
    spec = load_spec(file)  # invalid specs stop here, before anything is started
    settings = load_settings()
    client = await temporal(settings)
    handle = await clusters.start_cluster(client, spec, settings.temporal_task_queue)
    out.print(f"creating cluster [bold]{spec.id}[/] (workflow {handle.id})")
    out.print(f"Temporal UI: {settings.workflow_ui_url(handle.id)}")
    if watch_:
        status = await watch(client, spec.id)
        _exit_for(status.phase, status.message)


@app.command()
@run
async def status(cluster_id: ClusterArg, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show a cluster's phase, version, certificates and current operation."""
    settings = load_settings()
    result = await clusters.get_status(await temporal(settings), cluster_id)
    if output is OutputFormat.TABLE:
        out.print(status_view(result, settings.workflow_ui_url(entity_workflow_id(cluster_id))))
    else:
        out.print(dump(result, output), markup=False, highlight=False)


@app.command("list")
@run
async def list_(
    output: OutputOption = OutputFormat.TABLE,
    all_: Annotated[bool, typer.Option("--all", "-a", help="include deleted clusters")] = False,
) -> None:
    """List tenant clusters (from search attributes)."""
    rows = await clusters.list_clusters(await temporal(load_settings()), include_closed=all_)
    if output is OutputFormat.TABLE:
        out.print(clusters_table(rows))
    else:
        out.print(dump(rows, output), markup=False, highlight=False)


@app.command("watch")
@run
async def watch_command(cluster_id: ClusterArg) -> None:
    """Follow a cluster's current operation until it settles."""
    settings = load_settings()
    out.print(f"Temporal UI: {settings.workflow_ui_url(entity_workflow_id(cluster_id))}")
    status = await watch(await temporal(settings), cluster_id)
    _exit_for(status.phase, status.message)


def _exit_for(phase: ClusterPhase, message: str) -> None:
    if phase is ClusterPhase.FAILED:
        err.print(f"[red]failed:[/] {message}")
        raise typer.Exit(1)
    out.print(f"[green]{phase}[/]")


def _mount_optional_groups() -> None:
    """Sub-commands that live in their own modules."""
    from starter.dev_commands import dev_app

    app.add_typer(dev_app, name="dev", help="Run the embedded local stack (Temporal, OpenBao, moto, host API).")


_mount_optional_groups()

if __name__ == "__main__":
    app()
