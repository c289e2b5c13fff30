"""A worker that takes over a SIGKILLed worker's call moves the dead worker's cached workflows off
its sticky queue (worker/takeover.py), on a real Temporal dev server: the call's workflow and its
parent take their next workflow tasks from the shared queue at once, not after the sticky timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from temporalio import activity
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.faults.sticky_victim import STICKY_TIMEOUT
from tests.faults.takeover_workflows import CALL, HEARTBEAT_TIMEOUT, CallingChild, TakeoverParent
from worker.registry import build_worker

ROOT = Path(__file__).resolve().parents[2]


@activity.defn(name=CALL)
def quick_call() -> str:
    return f"attempt {activity.info().attempt}"


async def sticky_timeouts(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
        and e.workflow_task_timed_out_event_attributes.timeout_type == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START
    )


async def test_the_worker_taking_over_a_dead_workers_call_moves_its_cached_workflows(
    temporal_env: WorkflowEnvironment,
) -> None:
    client = temporal_env.client
    queue = f"takeover-{uuid.uuid4().hex[:8]}"
    address = client.service_client.config.target_host
    victim = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.sticky_victim", address, queue],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        handle = await client.start_workflow(TakeoverParent.run, id=f"{queue}-parent", task_queue=queue)
        assert victim.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(victim.stdout.readline), timeout=60)
        assert line.strip() == "call started", line
        # the survivor starts polling only now: both workflows and the call's first attempt are the victim's
        async with build_worker(client, queue, [quick_call], workflows=[TakeoverParent, CallingChild]):
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            result = await asyncio.wait_for(handle.result(), timeout=60)
            took = time.monotonic() - killed
    finally:
        victim.kill()
        victim.wait()
    assert result == "attempt 2"
    for workflow_id in (f"{queue}-parent/child", f"{queue}-parent"):
        assert await sticky_timeouts(client, workflow_id) == 0, (
            f"{workflow_id} waited out the dead worker's sticky queue"
        )
    # the heartbeat timeout, then the rest at once; each sticky timeout waited out would add 5 s
    assert took < HEARTBEAT_TIMEOUT.total_seconds() + STICKY_TIMEOUT.total_seconds(), took
    print(f"\nworkflow done {took:.1f}s after the kill (heartbeat timeout {HEARTBEAT_TIMEOUT.total_seconds():.0f}s)")  # noqa: T201
