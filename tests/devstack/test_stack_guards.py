"""The local stack's guards: port conflicts, process identity, empty status, purge safety."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devstack.network import await_free_ports, free_port, port_free
from devstack.processes import MARKER_ENV, proc_stat
from devstack.stack import (
    BASE_SERVICES,
    PORT_TITLES,
    PROJECT_ROOT,
    LocalStack,
    PortInUseError,
    ProcessRecord,
    StackError,
    StackPorts,
    server_binary,
)
from starter.dev_commands import dev_app
from tests.devstack.conftest import HOLD_PORT, stack_processes, wait_until
from workflows.search_attributes import ALL_KEYS

runner = CliRunner()


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = StackPorts.free()
    values = list(ports.model_dump().values())
    assert len(set(values)) == len(values)
    with pytest.raises(ValueError, match="distinct"):
        StackPorts(temporal=5000, moto=5000)


def test_free_ports_are_reserved_across_processes() -> None:
    """A parallel test session cannot pick a port this one chose, even while nothing listens on it."""
    ports = list(StackPorts.free().model_dump().values())
    probe = (
        "import sys; from devstack.network import _RESERVATIONS as r; print(any(r.take(int(p)) for p in sys.argv[1:]))"
    )
    other = subprocess.run(
        [sys.executable, "-c", probe, *map(str, ports)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert other.stdout.strip() == "False"


def hold_port(port: int, seconds: float, marker: str | None) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if key != MARKER_ENV}
    if marker is not None:
        env[MARKER_ENV] = marker
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_PORT, str(port), str(seconds)], env=env, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"bound"
    return holder


def test_a_port_held_by_a_live_process_outside_the_stack_is_named_at_once() -> None:
    port = free_port()
    holder = hold_port(port, 60, marker=None)
    try:
        began = time.monotonic()
        with pytest.raises(PortInUseError) as info:
            await_free_ports({"moto": port}, PORT_TITLES, marker="/some/stack", timeout=30)
        assert time.monotonic() - began < 30  # it did not wait for the release timeout
        assert info.value.owner is not None and info.value.owner.startswith(f"pid {holder.pid}:")
        assert f"port {port} (moto (AWS)) is already in use by another process (pid {holder.pid}:" in str(info.value)
        assert info.value.field == "moto"
    finally:
        holder.kill()
        holder.wait()


def test_a_port_still_held_by_a_process_of_the_stack_is_waited_for() -> None:
    port = free_port()
    holder = hold_port(port, 1.5, marker="/some/stack")
    try:
        await_free_ports({"moto": port}, PORT_TITLES, marker="/some/stack", timeout=30)
        assert holder.wait(timeout=10) == 0  # it returned because the holder let go
        assert port_free(port)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.stack
def test_port_in_use_names_port_and_service_and_starts_nothing(tmp_path: Path) -> None:
    ports = StackPorts.free()
    state_dir = tmp_path / "state"
    with socket.socket() as squatter:  # someone else's server on the port moto wants
        squatter.bind(("127.0.0.1", ports.moto))
        squatter.listen()
        with pytest.raises(PortInUseError) as info:
            LocalStack(state_dir, ports=ports).up()
        message = str(info.value)
        assert f"port {ports.moto} (moto (AWS)) is already in use by another process" in message
        assert "stop it or set other ports" in message
        assert info.value.owner is not None and info.value.owner.startswith(f"pid {os.getpid()}:")
        assert stack_processes(state_dir.resolve()) == []  # nothing was started, not even the others
        state = json.loads((state_dir / "stack.json").read_text()) if (state_dir / "stack.json").exists() else {}
        assert not state.get("services")

        args = ["up", "--state-dir", str(state_dir), "--no-worker"]
        for name, port in ports.model_dump().items():
            args += ["--port", f"{name}={port}"]
        result = runner.invoke(dev_app, args)
        assert result.exit_code == 1
        assert f"port {ports.moto} (moto (AWS))" in result.output and "--port moto=" in result.output
        assert stack_processes(state_dir.resolve()) == []


def test_status_of_a_stack_never_started(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "nothing-here")
    rows = stack.status()
    assert [row.name for row in rows] == list(BASE_SERVICES)
    assert not any(row.healthy for row in rows) and all("not running" in row.detail for row in rows)
    result = runner.invoke(dev_app, ["status", "--state-dir", str(tmp_path / "nothing-here")])
    assert result.exit_code == 1
    assert "down" in result.output


def test_process_identity_needs_pid_start_time_and_cmdline() -> None:
    me = proc_stat(os.getpid())
    assert me is not None
    cmdline = [part.decode() for part in Path("/proc/self/cmdline").read_bytes().split(b"\0") if part]
    record = ProcessRecord(
        name="moto",
        pid=os.getpid(),
        start_ticks=me.start_ticks,
        cmdline=cmdline,
        fingerprint="x",
        log="/dev/null",
        started_at=datetime.now(UTC),
    )
    assert record.is_ours()
    assert not record.model_copy(update={"start_ticks": me.start_ticks + 1}).is_ours()  # a recycled pid
    assert not record.model_copy(update={"cmdline": ["moto_server"]}).is_ours()
    assert not record.model_copy(update={"pid": 2**22 + 1}).is_ours()


def test_purge_refuses_a_folder_with_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(StackError, match="not purging"):
        LocalStack(tmp_path).down(purge=True)
    assert (tmp_path / "thesis.tex").exists()


def test_down_without_a_state_folder(tmp_path: Path) -> None:
    assert LocalStack(tmp_path / "absent").down() == [f"nothing to stop: {tmp_path / 'absent'} does not exist"]
    assert not (tmp_path / "absent").exists()


@pytest.mark.stack
def test_search_attributes_missing_from_an_existing_temporal_db_are_registered(tmp_path: Path) -> None:
    """`temporal server start-dev --search-attribute` only registers when it creates the SQLite file:
    on an existing file new ones are silently ignored, so `up` adds them through the operator API."""
    state_dir = tmp_path / "state"
    ports = StackPorts.free()
    db = state_dir / "temporal" / "temporal.db"
    db.parent.mkdir(parents=True)
    old = subprocess.Popen(
        [
            server_binary("temporal"),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(ports.temporal),
            "--ui-port",
            str(ports.temporal_ui),
            "--headless",
            "--db-filename",
            str(db),
            "--search-attribute",
            "ClusterId=Keyword",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: _answers(ports.temporal), timeout=30)
    finally:
        old.terminate()
        old.wait(timeout=15)
    stack = LocalStack(state_dir, ports=ports)
    try:
        stack.up()
        temporal = next(row for row in stack.status() if row.name == "temporal")
        assert temporal.healthy, temporal.detail
        assert f"{len(ALL_KEYS)} search attributes registered" in temporal.detail
    finally:
        stack.down(purge=True)
    assert stack_processes(state_dir.resolve()) == []


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return db_ready(port)


def db_ready(port: int) -> bool:
    """The dev server answers gRPC (the SQLite file is created and the namespace registered)."""
    from temporalio.client import Client

    async def check() -> None:
        await Client.connect(f"127.0.0.1:{port}")

    try:
        asyncio.run(check())
    except Exception:
        return False
    return True
