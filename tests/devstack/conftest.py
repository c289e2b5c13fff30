"""A real local stack (Temporal dev server, OpenBao, moto, host API emulator) for the module's tests."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import MARKER_ENV, LocalStack, StackPorts

# binds and listens on argv[1], says so, holds it for argv[2] seconds, then closes it and exits
HOLD_PORT = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("bound", flush=True)
time.sleep(float(sys.argv[2]))
sock.close()
"""

TIMINGS: dict[str, float] = {}  # wall times of the stack's operations, shown in the terminal summary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.write_line(
            "local stack wall times: " + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in TIMINGS.items())
        )


def stack_processes(state_dir: Path) -> list[str]:
    """Every live process whose cmdline points into ``state_dir`` or that carries its stack marker."""
    needle, marker = str(state_dir), f"{MARKER_ENV}={state_dir}".encode()
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] in {"Z", "X"}:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in cmdline or marker in environ:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def running(pid: int, start_ticks: int) -> bool:
    """The very process (pid and start time) still exists: alive, or a zombie this test process has not
    reaped. A zombie of another parent is gone as far as the stack can tell: a service restarted by a
    ``tenantctl dev up`` subprocess is re-parented when that exits, and reaping it is its new parent's
    business (in a container, pid 1 may never do it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    state, parent = fields[0], int(fields[1])
    if state in {"Z", "X"} and parent != os.getpid():
        return False
    return int(fields[19]) == start_ticks


def wait_until(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One stack for the module on free ports; purged (and proven gone) at the end."""
    state_dir = tmp_path_factory.mktemp("devstack") / "state"
    local = LocalStack(state_dir, ports=StackPorts.free())
    began = time.monotonic()
    try:
        local.up()
        TIMINGS["cold up"] = time.monotonic() - began
        yield local
    finally:
        local.down(purge=True)
        assert not state_dir.exists()
        assert stack_processes(state_dir) == []


@pytest.fixture
def stack(module_stack: LocalStack) -> LocalStack:
    """The module's stack brought to the state every test starts from, whatever an earlier test
    left: every base service running and answering, no worker (an ``up`` without one stops it)."""
    module_stack.up()
    return module_stack
