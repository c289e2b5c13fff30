"""What every ``tenantctl`` command shares: consoles, common options, and the error boundary.

Light to import on purpose: ``tenantctl --help`` loads this module and the command modules' signatures
only. Backend and Temporal libraries are imported by the commands that use them, when they run.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from starter.errors import Unavailable, UserError

T = TypeVar("T")

EXIT_REFUSED = 1
EXIT_INVALID_SPEC = 2
EXIT_UNREACHABLE = 3
EXIT_UNEXPECTED = 70
EXIT_INTERRUPTED = 130
MAX_MESSAGE_LENGTH = 2000
"""An error is a line or a few, never a flood: longer messages are cut (a spec's values are cut earlier)."""
DEBUG_ENV = "TENANTCTL_DEBUG"


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def _cluster_id_argument(value: str) -> str:
    from models.spec import cluster_id_problem

    problem = cluster_id_problem(value)
    if problem is not None:
        raise typer.BadParameter(problem)
    return value


OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json or yaml")]
ClusterArg = Annotated[str, typer.Argument(help="cluster id", callback=_cluster_id_argument)]
"""A cluster id, checked like the spec's ``id`` before anything connects: what is printed back is a
DNS label, never console markup."""


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


out = console()
err = console(stderr=True)


def clipped(message: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    return message if len(message) <= limit else f"{message[:limit]}... ({len(message)} characters, cut)"


def fail_line(label: str, message: str, style: str = "red") -> Text:
    """``label: message`` with only the label styled: the message is plain text, never markup."""
    return Text.assemble((f"{label}: ", style), clipped(message))


def describe_failure(exc: Exception) -> tuple[int, str]:
    """The exit code and the one-line message for an error that ends a command."""
    spec_module = sys.modules.get("models.spec")
    if spec_module is not None and isinstance(exc, spec_module.SpecError):
        return EXIT_INVALID_SPEC, str(exc)
    if isinstance(exc, Unavailable):
        return EXIT_UNREACHABLE, str(exc)
    if isinstance(exc, UserError):
        return EXIT_REFUSED, str(exc)
    service = sys.modules.get("temporalio.service")
    if service is not None and isinstance(exc, service.RPCError):
        codes = service.RPCStatusCode
        if exc.status in (codes.UNAVAILABLE, codes.DEADLINE_EXCEEDED):
            return EXIT_UNREACHABLE, f"Temporal did not answer ({exc.status.name}): {exc.message}"
        return EXIT_REFUSED, f"Temporal refused the request ({exc.status.name}): {exc.message}"
    if isinstance(exc, RuntimeError) and "connect" in str(exc).lower():
        return EXIT_UNREACHABLE, f"cannot reach Temporal: {exc}. Is the stack up? ('tenantctl dev up')"
    pydantic_core = sys.modules.get("pydantic_core")
    if pydantic_core is not None and isinstance(exc, pydantic_core.ValidationError):
        # Only settings are validated here (specs raise SpecError): a TENANTCTL_* value is wrong.
        lines = [
            (f"TENANTCTL_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors(include_url=False)
        ]
        return EXIT_INVALID_SPEC, "invalid settings (TENANTCTL_* variables or stack.env): " + "; ".join(lines)
    if isinstance(exc, OSError):
        return EXIT_REFUSED, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return EXIT_UNEXPECTED, (
        f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see the traceback; please report it)"
    )


def run_command(coro_fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command; every error becomes one line on stderr and an exit code, no traceback.

    Usage errors (``typer.BadParameter``) and exits pass through to click, which prints them.
    """

    @functools.wraps(coro_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(coro_fn(*args, **kwargs))
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors: click prints them
            raise
        except KeyboardInterrupt:
            err.print(fail_line("interrupted", "nothing more was sent; what was accepted before goes on"))
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            code, message = describe_failure(exc)
            err.print(fail_line("error", message))
            raise typer.Exit(code) from None

    return wrapper
