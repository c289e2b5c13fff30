"""``python -m bench.floor_worker``: the floor's worker, configured like the product's (same settings,
same sandbox, same activity thread pool and slots), polling ``TENANTCTL_TEMPORAL_TASK_QUEUE``."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from bench.floor_workflows import NOOP_ACTIVITY, FloorOperationWorkflow, FloorRunbookWorkflow
from config.settings import load_settings

READY_TEXT = "polling task queue"  # what the product's worker logs too; the bench waits for it
log = logging.getLogger("tenantctl.bench.floor")


@activity.defn(name=NOOP_ACTIVITY)
def noop() -> None:
    """Does nothing: the floor measures Temporal's cost of running an activity, not the work."""


def build_floor_worker(
    client: Client, task_queue: str, activity_executor: ThreadPoolExecutor, max_concurrent_activities: int
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorOperationWorkflow, FloorRunbookWorkflow],
        activities=[noop],
        activity_executor=activity_executor,
        max_concurrent_activities=max_concurrent_activities,
        workflow_runner=SandboxedWorkflowRunner(),
    )


async def serve() -> None:
    settings = load_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, data_converter=pydantic_data_converter
    )
    with ThreadPoolExecutor(settings.activity_threads, thread_name_prefix="activity") as pool:
        worker = build_floor_worker(client, settings.temporal_task_queue, pool, settings.max_concurrent_activities)
        async with worker:
            log.info("%s %r at %s", READY_TEXT, settings.temporal_task_queue, settings.temporal_address)
            await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
