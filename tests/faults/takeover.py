"""``make takeover``: how long a SIGKILLed worker delays an operation when a second worker runs (a
measurement, not a test: it prints figures and asserts nothing about time).

On a local stack of its own (free ports, a temporary state folder) two worker processes of this
checkout poll one task queue, with the product's default timeouts (sticky queue, heartbeats,
start-to-close: workflows/policies.py, config/settings.py). For each case it runs a KVM create or a
teardown, waits until the operation's step is running with an activity in flight, SIGKILLs the worker
that runs that activity (its pid is in the activity's ``last_worker_identity``), restarts it once the
operation has settled, and reports the operation's time against the median of unkilled runs
(issue 14's target: a delay of at most 5 s). Every operation must still end Ready (create) or
Deleted (teardown); one that does not is reported, and the script exits 1.

Run: ``make takeover`` (``ROUNDS=1`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage

from config.settings import load_settings
from devstack.stack import LocalStack, StackPorts
from models.cluster import ClusterPhase, StepState
from models.operations import DeleteRequest
from starter import clusters
from tests.e2e.conftest import WorkerProcess
from tests.faults.create_under_faults import set_faults
from tests.specs import small_kvm
from workflows.cluster import ClusterWorkflow

CASES: list[tuple[str, str]] = [
    ("create", "certificates"),
    ("create", "nodes"),
    ("create", "ready"),
    ("teardown", "nodes"),
    ("teardown", "pki"),  # the certificate revocation that once stalled 606 s
]
SETTLE_TIMEOUT_SECONDS = 900.0
HOST_API_LATENCY_MS = 250
"""Every host-API request this late, in every run: steps last long enough to be caught mid-call."""


async def settled(client: Client, cluster_id: str, goal: ClusterPhase) -> tuple[ClusterPhase, str]:
    began = time.monotonic()
    while time.monotonic() - began < SETTLE_TIMEOUT_SECONDS:
        status = await clusters.get_status(client, cluster_id)
        if status.current is None and status.phase in (goal, ClusterPhase.FAILED):
            return status.phase, status.message
        await asyncio.sleep(0.1)
    return ClusterPhase.FAILED, "timed out"


async def kill_at(client: Client, cluster_id: str, step: str, workers: list[WorkerProcess]) -> str:
    """SIGKILL the worker running an activity of ``step``, then time how long until another worker
    runs that activity again (the takeover); says which, or why no worker was killed."""
    while True:
        current = (await clusters.get_status(client, cluster_id)).current
        state = next((s.state for s in current.steps if s.name == step), StepState.PENDING) if current else None
        if state not in (StepState.PENDING, StepState.RUNNING):
            return "step not caught running"  # the operation ended or went past the step meanwhile
        if current is not None and state is StepState.RUNNING:
            handle = client.get_workflow_handle(current.workflow_id)
            for pending in (await handle.describe()).raw_description.pending_activities:
                pid = pending.last_worker_identity.split("@", 1)[0]
                victim = next((w for w in workers if w.proc is not None and str(w.proc.pid) == pid), None)
                if victim is None or pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                    continue
                victim.kill()
                killed_at = time.monotonic()
                name = pending.activity_type.name
                return f"killed pid {pid} in {name}; {await _retaken(handle, pending.activity_id, killed_at)}"
        await asyncio.sleep(0.02)


async def _retaken(handle: WorkflowHandle[Any, Any], activity_id: str, killed_at: float) -> str:
    """How long until the lost activity runs again elsewhere (its next attempt starts)."""
    while time.monotonic() - killed_at < SETTLE_TIMEOUT_SECONDS:
        pending = {p.activity_id: p for p in (await handle.describe()).raw_description.pending_activities}
        again = pending.get(activity_id)
        if again is None or (again.attempt > 1 and again.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED):
            return f"activity retaken after {time.monotonic() - killed_at:.1f}s"
        await asyncio.sleep(0.05)
    return "activity not retaken"


async def one_run(
    client: Client, queue: str, op: str, step: str | None, workers: list[WorkerProcess]
) -> tuple[float, str]:
    spec = small_kvm()
    await clusters.start_cluster(client, spec, queue)
    if op == "create":
        began = time.monotonic()
        killing = asyncio.create_task(kill_at(client, spec.id, step, workers)) if step else None
        phase, message = await settled(client, spec.id, ClusterPhase.READY)
        took = time.monotonic() - began
        goal = ClusterPhase.READY
    else:
        phase, message = await settled(client, spec.id, ClusterPhase.READY)
        if phase is not ClusterPhase.READY:
            return 0.0, f"create before teardown ended {phase}: {message}"
        began = time.monotonic()
        killing = asyncio.create_task(kill_at(client, spec.id, step, workers)) if step else None
        await clusters.entity(client, spec.id).start_update(
            ClusterWorkflow.delete,
            DeleteRequest(requested_by="make takeover"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        phase, message = await settled(client, spec.id, ClusterPhase.DELETED)
        took = time.monotonic() - began
        goal = ClusterPhase.DELETED
    killed = (await killing) if killing else "no kill"
    for worker in workers:  # back to two workers for the next run
        if worker.proc is not None and worker.proc.poll() is not None:
            worker.start()
    outcome = phase.value if phase is goal else f"{phase.value}: {message[:200]}"
    return took, f"{outcome}; {killed}"


async def measure(rounds: int, state_dir: Path, logs_dir: Path) -> bool:
    stack = LocalStack(state_dir, ports=StackPorts.free(), with_worker=False, emulator_ready_delay=0.3)
    print(f"starting a local stack in {state_dir} ...", flush=True)  # noqa: T201
    endpoints = stack.up()
    queue = f"takeover-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **endpoints.as_env(),
        "TENANTCTL_STATE_DIR": str(state_dir),
        "TENANTCTL_TEMPORAL_TASK_QUEUE": queue,
    }
    os.environ.update(env)
    workers = [WorkerProcess(env=env, log=logs_dir / f"worker-{n}") for n in (1, 2)]
    all_ok = True
    try:
        for worker in workers:
            worker.start()
        client = await clusters.connect(load_settings())
        set_faults(endpoints.kube_api_url, {"latency_ms": HOST_API_LATENCY_MS})
        await one_run(client, queue, "create", None, workers)  # warm-up: caches, first Vault mounts
        baseline: dict[str, list[float]] = {"create": [], "teardown": []}
        delays: dict[str, list[float]] = {f"{op} at {step}": [] for op, step in CASES}
        for round_ in range(1, rounds + 1):
            for op, times in [*baseline.items(), *baseline.items()]:
                took, outcome = await one_run(client, queue, op, None, workers)
                print(f"round {round_}: {op:8s} unkilled       {took:6.1f}s -> {outcome}", flush=True)  # noqa: T201
                all_ok &= outcome.startswith(("Ready", "Deleted"))
                times.append(took)
            for op, step in CASES:
                took, outcome = await one_run(client, queue, op, step, workers)
                delay = took - statistics.median(baseline[op])
                shown = f"round {round_}: {op:8s} kill at {step:12s} {took:6.1f}s (delay {delay:+5.1f}s) -> {outcome}"
                print(shown, flush=True)  # noqa: T201
                all_ok &= outcome.startswith(("Ready", "Deleted"))
                if "killed" in outcome:
                    delays[f"{op} at {step}"].append(delay)
        print("\ncase                     kills  median delay  worst")  # noqa: T201
        for case, values in delays.items():
            if values:
                print(f"{case:24s} {len(values):5d}  {statistics.median(values):+11.1f}s  {max(values):+5.1f}s")  # noqa: T201
            else:
                print(f"{case:24s} {0:5d}  {'-':>12s}  -")  # noqa: T201
        for op, values in baseline.items():
            print(f"unkilled {op}: median {statistics.median(values):.1f}s over {len(values)} runs")  # noqa: T201
        worst = max((max(v) for v in delays.values() if v), default=None)
        if worst is not None:
            verdict = "within" if worst <= 5 else "over"
            print(f"worst delay {worst:+.1f}s ({verdict} the 5 s target)")  # noqa: T201
        print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")  # noqa: T201
    finally:
        set_faults(endpoints.kube_api_url, None)
        for worker in workers:
            worker.stop()
        stack.down(purge=True)
    return all_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "1")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantctl-takeover-") as tmp:
        state_dir, logs_dir = Path(tmp) / "stack", Path(tmp) / "logs"
        state_dir.mkdir()
        logs_dir.mkdir()
        ok = asyncio.run(measure(args.rounds, state_dir, logs_dir))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
