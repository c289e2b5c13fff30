"""A worker process for tests/faults/test_sticky_takeover.py, to be SIGKILLed: it runs the parent and
child workflows (so both are cached on its sticky queue) and the call's first attempt, which
heartbeats and never ends. ``python -m tests.faults.sticky_victim ADDRESS QUEUE``."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from tests.faults.takeover_workflows import CALL, CallingChild, TakeoverParent

STICKY_TIMEOUT = timedelta(seconds=5)
"""Longer than the product's, so a test can tell a reset sticky queue from a timed-out one."""


@activity.defn(name=CALL)
async def endless_call() -> str:
    print("call started", flush=True)  # noqa: T201  (the test waits for this line)
    while True:
        activity.heartbeat()
        await asyncio.sleep(0.3)


async def main(address: str, queue: str) -> None:
    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[TakeoverParent, CallingChild],
        activities=[endless_call],
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        max_heartbeat_throttle_interval=timedelta(milliseconds=300),
    )
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
