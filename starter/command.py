"""What every ``tenantctl`` command shares: consoles, common options, and the error boundary."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer

from models.spec import SpecError
from starter.clusters import UserError
from starter.render import OutputFormat, console

T = TypeVar("T")
OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json or yaml")]
ClusterArg = Annotated[str, typer.Argument(help="cluster id")]

out = console()
err = console(stderr=True)

EXIT_REFUSED = 1
EXIT_INVALID_SPEC = 2
EXIT_UNREACHABLE = 3


def run_command(coro_fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command; errors users cause become one line on stderr and an exit code."""

    @functools.wraps(coro_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(coro_fn(*args, **kwargs))
        except SpecError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(EXIT_INVALID_SPEC) from None
        except UserError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(EXIT_REFUSED) from None
        except RuntimeError as exc:
            if "connect" in str(exc).lower():
                err.print(f"[red]error:[/] cannot reach Temporal: {exc}. Is the stack up? ('tenantctl dev up')")
                raise typer.Exit(EXIT_UNREACHABLE) from None
            raise

    return wrapper
