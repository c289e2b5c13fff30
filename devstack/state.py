"""``stack.json``: what the local stack started (pid, start time, cmdline per service, ports),
read and written under an exclusive lock on ``<state_dir>/.lock``."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from devstack.errors import StackError
from devstack.files import write_private
from devstack.processes import is_running
from devstack.services import StackPorts


class ProcessRecord(BaseModel):
    """One started process, as kept in ``stack.json``."""

    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: with the pid, identifies the process
    cmdline: list[str]
    fingerprint: str  # hash of what it was started with: a change means restart
    ports: dict[str, int] = Field(default_factory=dict)
    log: str
    started_at: datetime

    def is_ours(self) -> bool:
        """The recorded pid still runs the process we started (same start time and cmdline)."""
        return is_running(self.pid, self.start_ticks, self.cmdline)


class StackState(BaseModel):
    version: int = 1
    ports: StackPorts | None = None
    services: dict[str, ProcessRecord] = Field(default_factory=dict)


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """One ``up``/``down`` at a time per state folder (across processes)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_state(path: Path) -> StackState:
    try:
        return StackState.model_validate_json(path.read_text())
    except FileNotFoundError:
        return StackState()
    except ValueError as exc:
        raise StackError(
            f"{path} is not a valid stack record ({exc}); stop its processes by hand and remove it"
        ) from None


def save_state(path: Path, state: StackState) -> None:
    write_private(path, state.model_dump_json(indent=2))
