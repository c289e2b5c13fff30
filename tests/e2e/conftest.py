"""End-to-end fixtures: a real local stack (``devstack.LocalStack`` on free ports, in a temp state
folder), worker processes that tests may kill, and the ``tenantctl`` CLI run as users run it.

The CLI and the worker find the stack through ``TENANTCTL_STATE_DIR`` and the ``stack.env`` that
``up`` writes there — no flags, exactly as on a developer's machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.stack import LocalStack, StackPorts

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
            env={**self.env, "COLUMNS": "200", "NO_COLOR": "1", **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"tenantctl {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
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
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        log = self.log.with_suffix(f".{self.starts}.log")
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker"], env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
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
    worker = WorkerProcess(env={**local_stack.env, "TENANTCTL_STICKY_QUEUE_TIMEOUT_SECONDS": "1"}, log=tmp_path / "worker")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
