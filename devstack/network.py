"""Loopback ports and HTTP for the local stack: free-port choice, port holders, readiness probes.

Ports for tests are chosen below the kernel's ephemeral range (no server's own randomly picked
port, such as Temporal's internal services, can take one before it is bound) and *reserved*
across processes: a byte-range lock per port on one file in the temp folder, held until the
process exits. Two test sessions running side by side therefore never pick the same port, even
while one of them has a service down (its port is free by probing, but still reserved).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack.errors import PortInUseError, StackError
from devstack.processes import cmdline, exiting, marker_of

log = logging.getLogger("tenantctl.devstack")

LOOPBACK = "127.0.0.1"
PORT_RELEASE_TIMEOUT = 20.0  # how long 'up' waits for a port held by an exiting process or by nobody visible
FOREIGN_HOLDER_GRACE = 1.0  # a port held this long by a live process of no stack of ours is someone else's
TEST_PORT_SPAN = 12000  # test ports come from the span just below the ephemeral range
_TCP_LISTEN = "0A"
_TCP_TIME_WAIT = "06"  # sockets with no owner; SO_REUSEADDR binds over them


# --- choosing ports -------------------------------------------------------------------------------


def ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_free(port: int) -> bool:
    """Nothing is bound to ``port`` on loopback (TIME_WAIT, which servers bind over, is no conflict)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno in {errno.EADDRINUSE, errno.EACCES}:
                return False
            raise
    return True


class _Reservations:
    """Ports this process holds a cross-process lock on (one byte per port of a shared file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.held: set[int] = set()

    def _file(self) -> int:
        if self._fd is None:  # one descriptor for the process's lifetime: closing any would drop every lock
            path = Path(tempfile.gettempdir()) / f"tenantctl-ports-{os.getuid()}.lock"
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def take(self, port: int) -> bool:
        with self._lock:
            if port in self.held:
                return False
            try:
                fcntl.lockf(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
            except OSError as exc:
                if exc.errno in {errno.EACCES, errno.EAGAIN}:
                    return False  # another process reserved it
                raise
            self.held.add(port)
            return True


_RESERVATIONS = _Reservations()


def reserve_free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports, free now and reserved for this process's lifetime."""
    low = ephemeral_low()
    chosen: list[int] = []
    for _ in range(4000):
        port = random.randrange(max(1024, low - TEST_PORT_SPAN), low)
        if port in chosen or not _RESERVATIONS.take(port):
            continue
        if port_free(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise StackError(f"could not find {count} free loopback ports below {low}")


def free_port() -> int:
    """One free, reserved loopback port (for a test server)."""
    return reserve_free_ports(1)[0]


# --- who holds a port -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PortHolder:
    pid: int
    cmdline: str
    exiting: bool
    marker: str | None

    def describe(self) -> str:
        state = " (exiting)" if self.exiting else ""
        return f"pid {self.pid}{state}: {self.cmdline[:120]}"


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets bound to ``port`` (listening or not; not TIME_WAIT, which has no owner)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            if len(parts) <= 9 or parts[3] == _TCP_TIME_WAIT or parts[9] == "0":
                continue
            if int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    return inodes


def port_holders(port: int) -> list[PortHolder]:
    """Best effort: the processes holding a socket bound to ``port`` (those this user may inspect)."""
    inodes = _socket_inodes(port)
    if not inodes:
        return []
    holders: list[PortHolder] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            held = any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir())
        except OSError:
            continue
        if held:
            pid = int(entry.name)
            argv = cmdline(pid)
            holders.append(PortHolder(pid, " ".join(argv or ["?"]), argv is None or exiting(pid), marker_of(pid)))
    return holders


def port_owner(port: int) -> str | None:
    """'pid N: cmdline' of the processes holding ``port``, or None when none is visible."""
    holders = port_holders(port)
    return "; ".join(holder.describe() for holder in holders) if holders else None


def await_free_ports(
    wanted: dict[str, int],
    titles: dict[str, str],
    marker: str,
    timeout: float = PORT_RELEASE_TIMEOUT,
    grace: float = FOREIGN_HOLDER_GRACE,
) -> None:
    """Return once every port in ``wanted`` (by name) is free, or raise ``PortInUseError`` naming
    the holder. A port held by a process of no stack of ours that is alive fails after ``grace``
    (it will not let go); one held by an exiting process (a service killed a moment ago whose
    sockets are not closed yet), by a process of this stack or by nobody visible is waited for up
    to ``timeout``."""
    deadline = time.monotonic() + timeout
    foreign_since: dict[str, float] = {}
    reported: set[str] = set()
    while True:
        taken = {name: port for name, port in wanted.items() if not port_free(port)}
        if not taken:
            return
        now = time.monotonic()
        for name, port in taken.items():
            holders = port_holders(port)
            owner = "; ".join(holder.describe() for holder in holders) if holders else None
            foreign = [h for h in holders if not h.exiting and h.marker != marker]
            if not foreign:
                foreign_since.pop(name, None)
            elif now - foreign_since.setdefault(name, now) >= grace:
                raise PortInUseError(port, titles.get(name, name), owner, name)
            if now >= deadline:
                raise PortInUseError(port, titles.get(name, name), owner, name)
            if name not in reported:
                reported.add(name)
                log.info("port %d (%s) is still held (%s): waiting for it", port, titles.get(name, name), owner)
        time.sleep(0.05)


# --- probes ---------------------------------------------------------------------------------------


def tcp_open(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=1):
        pass


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxies


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_http(url: str, timeout: float = 30.0, ok: tuple[int, ...] = (200,)) -> None:
    """Poll ``url`` until it answers with a status in ``ok``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status = http_status(url)
            if status in ok:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise StackError(f"{url} not ready after {timeout:.0f}s: {last}")
