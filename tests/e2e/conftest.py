"""End-to-end fixtures: a real local stack (``devstack.LocalStack`` on free ports, in a temp state
folder), worker processes that tests may kill, and the ``tenantctl`` CLI run as users run it.

The CLI and the worker find the stack through ``TENANTCTL_STATE_DIR`` and the ``stack.env`` that
``up`` writes there — no flags, exactly as on a developer's machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from config.settings import Settings
from devstack.stack import LocalStack, StackPorts
from models.spec import ClusterSpec
from starter.clusters import get_status
from worker.clients import connect_temporal

ROOT = Path(__file__).resolve().parents[2]
TENANTCTL = str(Path(sys.executable).parent / "tenantctl")


@dataclass
class Stack:
    state_dir: Path
    env: dict[str, str]
    stack: LocalStack

    def cli(self, *args: str, check: bool = True, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``tenantctl ARGS`` as a user would; output is kept for assertions and failures."""
        result = subprocess.run(
            [TENANTCTL, *args],
            check=False,
            env={**self.env, "COLUMNS": "200", "NO_COLOR": "1", **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"tenantctl {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("stack")
    stack = LocalStack(state_dir, ports=StackPorts.free(), with_worker=False, emulator_ready_delay=0.3)
    endpoints = stack.up()
    env = {
        **os.environ,
        **endpoints.as_env(),
        "TENANTCTL_STATE_DIR": str(state_dir),
        "TENANTCTL_TEMPORAL_TASK_QUEUE": f"e2e-{uuid.uuid4().hex[:8]}",
    }
    try:
        yield Stack(state_dir=state_dir, env=env, stack=stack)
    finally:
        stack.down()


@dataclass
class WorkerProcess:
    """``python -m worker`` as a child process, with its log, that a test can SIGKILL and restart."""

    env: dict[str, str]
    log: Path
    module: str = "worker"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        log = self.log.with_suffix(f".{self.starts}.log")
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module], env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "polling task queue" in log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"worker did not start polling:\n{log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight activities are simply lost (as on a node crash)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)


@pytest.fixture
def worker_process(local_stack: Stack, tmp_path: Path) -> Iterator[WorkerProcess]:
    # A short sticky-queue timeout lets a restarted worker pick up workflow tasks a killed one held.
    worker = WorkerProcess(
        env={**local_stack.env, "TENANTCTL_STICKY_QUEUE_TIMEOUT_SECONDS": "1"}, log=tmp_path / "worker"
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def stack_settings(stack: Stack) -> Settings:
    """The settings the CLI and worker of this stack see (its stack.env plus the test's queue)."""
    return Settings(
        _env_file=stack.state_dir / "stack.env",
        temporal_task_queue=stack.env["TENANTCTL_TEMPORAL_TASK_QUEUE"],
    )


def root_settings(stack: Stack) -> Settings:
    """``stack_settings`` with OpenBao's root token, for a test that inspects what the worker's
    policy does not let it see (the policy listing, a CA certificate); the worker never gets it."""
    return stack_settings(stack).model_copy(update={"vault_token": SecretStr(stack.stack.vault_root_token())})


def write_spec(directory: Path, spec: ClusterSpec) -> Path:
    path = directory / f"{spec.id}.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return path


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def slow_host_api(stack: Stack, latency_ms: int) -> Iterator[None]:
    """A slow host API widens the window in which a test can kill a worker mid-operation."""
    set_emulator_faults(stack, {"latency_ms": latency_ms})
    try:
        yield
    finally:
        set_emulator_faults(stack, None)


async def kill_worker_at_step(stack: Stack, worker: WorkerProcess, cluster_id: str, step: str) -> None:
    """SIGKILL ``worker`` once the cluster's running operation has reached ``step``."""
    client = await connect_temporal(stack_settings(stack))

    async def reached() -> bool:
        current = (await get_status(client, cluster_id)).current  # the running operation's own steps
        return current is not None and any(s.name == step and s.state == "running" for s in current.steps)

    await wait_for(reached, f"{cluster_id} to reach step {step}")
    worker.kill()


def set_emulator_faults(stack: Stack, faults: dict[str, object] | None) -> None:
    """Fault injection on the stack's host API emulator (None clears it)."""
    url = stack.env["TENANTCTL_TENANT_API_URL_TEMPLATE"].split("/tenants/", 1)[0] + "/_emulator/faults"
    request = urllib.request.Request(
        url,
        data=json.dumps(faults).encode() if faults is not None else None,
        method="PUT" if faults is not None else "DELETE",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 204)
