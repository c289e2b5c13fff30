"""Every activity heartbeats while its worker lives (worker/liveness.py), on a real Temporal dev server:
a sync call that runs for longer than its heartbeat timeout without heartbeating itself completes, and
the details a call heartbeated itself are what a retried attempt finds (the liveness beats repeat them,
never replace them)."""

from __future__ import annotations

import time
import uuid

from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from tests.faults.liveness_workflow import HEARTBEAT_TIMEOUT, OneSlowCall
from worker.registry import build_worker

QUIET_SECONDS = HEARTBEAT_TIMEOUT.total_seconds() * 2.5
"""Longer than the heartbeat timeout: without liveness beats, the attempt would time out."""


@activity.defn(name="test.quiet_call")
def quiet_call() -> list[str]:
    time.sleep(QUIET_SECONDS)  # one slow backend call: no heartbeat of its own
    return ["done"]


@activity.defn(name="test.resumable_call")
def resumable_call() -> list[str]:
    info = activity.info()
    if info.attempt == 1:
        activity.heartbeat("started-at-1")
        time.sleep(QUIET_SECONDS)  # the liveness beats carry on meanwhile
        raise RuntimeError("transient: try again")
    return [str(d) for d in info.heartbeat_details]


async def test_calls_heartbeat_while_their_worker_lives(temporal_env: WorkflowEnvironment) -> None:
    client = temporal_env.client
    queue = f"liveness-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, queue, [quiet_call, resumable_call], workflows=[OneSlowCall]):
        quiet = await client.execute_workflow(OneSlowCall.run, "test.quiet_call", id=f"{queue}-q", task_queue=queue)
        resumed = await client.execute_workflow(
            OneSlowCall.run, "test.resumable_call", id=f"{queue}-r", task_queue=queue
        )
    assert quiet == ["done"]
    assert resumed == ["started-at-1"]
