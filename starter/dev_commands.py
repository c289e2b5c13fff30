"""``tenantctl dev up | status | down``: the embedded local stack (also ``python -m devstack``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    # The supervisor is imported when a dev command runs: 'tenantctl --help' must not pay for it.
    from devstack.stack import LocalStack, ServiceStatus, StackError, StackPorts

dev_app = typer.Typer(
    name="dev",
    help="Run the embedded local stack: Temporal dev server, OpenBao, moto and the host Kubernetes API emulator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", help="state folder (default: $TENANTCTL_STATE_DIR or .tenantctl)", show_default=False),
]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table, json or yaml")]
FORMATS = ("table", "json", "yaml")


def _stack(state_dir: Path | None, ports: StackPorts | None = None, with_worker: bool = False) -> LocalStack:
    from config.settings import state_dir_from_env
    from devstack.stack import LocalStack

    return LocalStack(state_dir or state_dir_from_env(), ports=ports, with_worker=with_worker)


def _check_format(output: str) -> str:
    if output not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--output")
    return output


def _parse_ports(stack: LocalStack, overrides: list[str]) -> StackPorts | None:
    if not overrides:
        return None
    from devstack.stack import StackPorts

    values: dict[str, Any] = stack.ports.model_dump()
    for item in overrides:
        name, sep, port = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in values or not port.strip().isdigit():
            raise typer.BadParameter(
                f"{item!r}: use NAME=PORT with NAME one of {', '.join(values)}", param_hint="--port"
            )
        values[name] = int(port)
    try:
        return StackPorts(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--port") from None


def _fail(exc: StackError) -> typer.Exit:
    from devstack.stack import PortInUseError

    err.print(f"[red]error:[/] {escape(str(exc))}")
    if isinstance(exc, PortInUseError) and exc.field:
        err.print(f"  e.g. [bold]tenantctl dev up --port {exc.field}=<free port>[/]")
    return typer.Exit(1)


def _table(rows: list[ServiceStatus], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("service", "health", "pid", "url"):
        table.add_column(column, no_wrap=True)
    table.add_column("ports", overflow="fold")
    table.add_column("detail", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(
            row.name,
            "[green]● healthy[/]" if row.healthy else "[red]✗ down[/]",
            str(row.pid or "-"),
            escape(row.url or "-"),
            ", ".join(str(port) for port in row.ports.values()) or "-",
            escape(row.detail),
        )
    return table


def _print_data(data: Any, output: str) -> None:
    import yaml

    text = json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False)
    out.print(text, markup=False, highlight=False, soft_wrap=True)


@dev_app.command()
def up(
    state_dir: StateDirOption = None,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="also run the tenantctl worker")] = True,
    port: Annotated[
        list[str] | None,
        typer.Option("--port", help="NAME=PORT, e.g. temporal=17233 (repeatable; remembered for later 'up's)"),
    ] = None,
    output: OutputOption = "table",
) -> None:
    """Start every service (keeping those already running) and write stack.env and the kubeconfig."""
    from devstack.stack import MOTO_NOTE, StackError

    _check_format(output)
    stack = _stack(state_dir, with_worker=worker)
    stack = _stack(state_dir, ports=_parse_ports(stack, port or []), with_worker=worker)
    began = time.monotonic()
    try:
        if output == "table":
            with err.status(f"starting the local stack in {escape(str(stack.state_dir))} …"):
                endpoints = stack.up()
        else:
            endpoints = stack.up()
    except StackError as exc:
        raise _fail(exc) from None
    seconds = time.monotonic() - began
    rows = stack.status()
    if output != "table":
        _print_data(
            {
                "seconds": round(seconds, 2),
                "started": stack.started,
                "kept": stack.kept,
                "stopped": stack.stopped,
                "endpoints": endpoints.model_dump(mode="json"),
                "env_file": str(stack.env_file),
                "services": [row.model_dump(mode="json") for row in rows],
            },
            output,
        )
        return
    out.print(_table(rows))
    out.print(f"\n[bold]Temporal UI:[/] [bold cyan]{escape(endpoints.temporal_ui_url)}[/]")
    out.print(f"settings:    {escape(str(stack.env_file))}  (the worker and CLI read it; no flags needed)")
    out.print(f"kubeconfig:  {escape(str(endpoints.kubeconfig))}")
    out.print(f"[dim]moto is {MOTO_NOTE}[/]")
    started = ", ".join(stack.started) or "nothing"
    kept = f"; already running: {', '.join(stack.kept)}" if stack.kept else ""
    stopped = f"; stopped: {', '.join(stack.stopped)}" if stack.stopped else ""
    out.print(f"up in {seconds:.1f}s (started: {started}{kept}{stopped})")


@dev_app.command()
def status(state_dir: StateDirOption = None, output: OutputOption = "table") -> None:
    """Health of every service; exits 1 if any is not healthy."""
    from devstack.stack import StackError

    _check_format(output)
    stack = _stack(state_dir)
    try:
        rows = stack.status()
    except StackError as exc:
        raise _fail(exc) from None
    if output == "table":
        out.print(_table(rows, title=escape(f"local stack in {stack.state_dir}")))
        temporal = next((row for row in rows if row.name == "temporal" and row.healthy), None)
        if temporal is not None:
            out.print(f"[bold]Temporal UI:[/] [bold cyan]{escape(temporal.url or '')}[/]")
    else:
        _print_data([row.model_dump(mode="json") for row in rows], output)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


@dev_app.command()
def down(
    state_dir: StateDirOption = None,
    purge: Annotated[bool, typer.Option("--purge", help="also delete the state folder (all data)")] = False,
) -> None:
    """Stop exactly the processes 'up' started; keep the data unless --purge."""
    from devstack.stack import StackError

    stack = _stack(state_dir)
    try:
        messages = stack.down(purge=purge)
    except StackError as exc:
        raise _fail(exc) from None
    for message in messages:
        out.print(message, markup=False)
