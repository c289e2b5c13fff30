"""The processes a bench run starts (the product's worker and the floor's), and the stack's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import ProcessMeter
from devstack.stack import STACK_FILE, StackState

ROOT = Path(__file__).resolve().parents[1]
READY_TEXT = "polling task queue"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


@dataclass
class WorkerProcess:
    """``python -m MODULE`` with its own log; started and stopped by pid, nothing else."""

    name: str
    module: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module], env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_TEXT in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the {self.name} did not start polling (log {self.log}):\n{tail}")

    @property
    def meter(self) -> ProcessMeter:
        assert self.proc is not None
        return ProcessMeter(self.proc.pid, self.name)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stack_meters(state_dir: Path) -> dict[str, ProcessMeter]:
    """Meters for the local stack's services, by service name, from its ``stack.json``."""
    state = StackState.model_validate_json((state_dir / STACK_FILE).read_text())
    return {name: ProcessMeter(record.pid, name) for name, record in state.services.items()}


def worker_env(base: dict[str, str], task_queue: str) -> dict[str, str]:
    env = {**base, "TENANTCTL_TEMPORAL_TASK_QUEUE": task_queue, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
