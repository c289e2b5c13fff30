"""Process control for the local stack, read from Linux ``/proc``: identity, liveness, stopping.

A service is identified by its pid *and* its start time (``/proc/<pid>/stat`` field 22), so a
recycled pid is never taken for it. Processes are started detached, each in its own session and
with ``DEVSTACK_STATE_DIR`` (``MARKER_ENV``) in its environment: stopping a service signals the
members of its session that carry that marker, nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("tenantctl.devstack")

MARKER_ENV = "DEVSTACK_STATE_DIR"  # set in every child's environment: which stack a process belongs to
PF_EXITING = 0x00000004  # /proc/<pid>/stat flags: the task is inside exit() (its files may still be open)
EXIT_WAIT_SECONDS = 10.0  # how long a stop waits for a process already exiting (e.g. SIGKILLed) to be gone

# Popen objects of the children this interpreter started, so stopping them reaps them (no zombies).
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcStat:
    state: str
    session: int
    flags: int
    start_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # comm (field 2) may hold spaces and parentheses
    return ProcStat(state=fields[0], session=int(fields[3]), flags=int(fields[6]), start_ticks=int(fields[19]))


def cmdline(pid: int) -> list[str] | None:
    """The process's argv; None once it is gone, and also while it exits (its memory is released
    before its files are closed, so an empty cmdline does not mean its sockets are closed)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def settled_cmdline(pid: int, timeout: float = 2.0) -> list[str] | None:
    """/proc/<pid>/cmdline reads empty while the kernel is still inside exec: wait that out."""
    deadline = time.monotonic() + timeout
    while True:
        found = cmdline(pid)
        if found or time.monotonic() >= deadline or not alive(pid):
            return found
        time.sleep(0.01)


def reap(pid: int) -> bool:
    """True once a child of this interpreter has exited (and is then reaped: no zombie is left)."""
    proc = CHILDREN.get(pid)
    if proc is None or proc.poll() is None:
        return False
    CHILDREN.pop(pid, None)
    return True


def threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def alive(pid: int, start_ticks: int | None = None) -> bool:
    """Running or still exiting. A Go server's main thread turns zombie before its other threads
    are gone, and it cannot be reaped until they are: that still counts as alive."""
    if reap(pid):
        return False
    stat = proc_stat(pid)
    if stat is None or (start_ticks is not None and stat.start_ticks != start_ticks):
        return False
    if stat.state in {"Z", "X", "x"}:
        return pid in CHILDREN or threads(pid) > 1
    return True


def exiting(pid: int, start_ticks: int | None = None) -> bool:
    """Alive but on its way out (killed, inside exit(), or a zombie whose threads still run)."""
    stat = proc_stat(pid)
    if stat is None or (start_ticks is not None and stat.start_ticks != start_ticks) or not alive(pid, start_ticks):
        return False
    return bool(stat.flags & PF_EXITING) or stat.state in {"Z", "X", "x"} or cmdline(pid) is None


def is_running(pid: int, start_ticks: int, argv: list[str]) -> bool:
    """The pid still runs the process that was started (same start time and cmdline)."""
    return alive(pid, start_ticks) and cmdline(pid) == argv


def marker_of(pid: int) -> str | None:
    """The stack a process belongs to: ``DEVSTACK_STATE_DIR`` in its (initial) environment."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = f"{MARKER_ENV}=".encode()
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def session_members(leader: int, leader_start_ticks: int, marker: str) -> list[tuple[int, int]]:
    """(pid, start ticks) of the live processes of the session ``leader`` started (itself and any
    children), each carrying ``marker``, so a recycled pid is never taken for one of them."""
    members: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = proc_stat(pid)
        if (
            stat is not None
            and stat.session == leader
            and stat.start_ticks >= leader_start_ticks
            and marker_of(pid) == marker
            and alive(pid)
        ):
            members.append((pid, stat.start_ticks))
    return members


def signal_all(members: list[tuple[int, int]], sig: signal.Signals) -> None:
    for pid, start_ticks in members:
        if alive(pid, start_ticks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _wait_gone(members: list[tuple[int, int]], timeout: float) -> list[tuple[int, int]]:
    """Wait until none of ``members`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        members = [(pid, ticks) for pid, ticks in members if alive(pid, ticks)]
        if not members or time.monotonic() >= deadline:
            return members
        time.sleep(0.05)


def stop_session(name: str, pid: int, start_ticks: int, marker: str, timeout: float) -> str:
    """SIGTERM the service's processes, wait, SIGKILL what is left; say what happened.

    A service that was killed a moment ago (its cmdline and environment already unreadable, so no
    member is recognised) may still hold its files and sockets: wait for it to be gone first."""
    members = session_members(pid, start_ticks, marker) if start_ticks else []
    if not members:
        if start_ticks and exiting(pid, start_ticks):
            log.info("%s (pid %d) is exiting: waiting for it to be gone", name, pid)
            if _wait_gone([(pid, start_ticks)], EXIT_WAIT_SECONDS):
                log.warning("%s (pid %d) is still exiting after %.0fs", name, pid, EXIT_WAIT_SECONDS)
        reap(pid)
        return f"{name} was not running (pid {pid})"
    signal_all(members, signal.SIGTERM)
    members = _wait_gone(members, timeout)
    if not members:
        reap(pid)
        return f"stopped {name} (pid {pid})"
    log.warning(
        "%s did not stop within %.0fs of SIGTERM: sending SIGKILL to %s", name, timeout, [p for p, _ in members]
    )
    signal_all(members, signal.SIGKILL)
    # a killed process with a large heap can take seconds to be torn down on a loaded machine
    _wait_gone(members, EXIT_WAIT_SECONDS)
    reap(pid)
    return f"stopped {name} (pid {pid}, killed after {timeout:.0f}s)"


def spawn_detached(
    name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (it outlives the caller), output appended to ``log_path``
    after a start marker line; the Popen is kept in ``CHILDREN`` so it can be reaped."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # owner-only: logs may quote tokens or keys; the child's umask keeps what it creates private too
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        out.write(f"\n=== {stamp} devstack starting {name}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(  # its /proc cmdline may read empty until exec completes
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            umask=0o077,
        )
    CHILDREN[proc.pid] = proc
    return proc


def log_since_start(path: Path) -> str:
    """The part of a service log written since its last start marker."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    marker = text.rfind("\n=== ")
    return text[marker:] if marker >= 0 else text


def tail(path: Path, lines: int = 8) -> str:
    text = log_since_start(path).strip().splitlines()[1:]  # without the start marker
    return "\n".join(text[-lines:])
