"""``python -m worker``: poll the task queue until SIGTERM/SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.worker import Interceptor

from config.settings import Settings, load_settings
from worker.backends import build_activities
from worker.clients import connect_temporal
from worker.registry import GRACEFUL_SHUTDOWN, WORKFLOWS, build_worker

log = logging.getLogger("tenantctl.worker")


async def serve(
    settings: Settings, stop: asyncio.Event | None = None, interceptors: Sequence[Interceptor] = ()
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = await connect_temporal(settings)
    with ThreadPoolExecutor(settings.activity_threads, thread_name_prefix="activity") as pool:
        activities = build_activities(settings, client)
        worker = build_worker(
            client,
            settings.temporal_task_queue,
            activities,
            activity_executor=pool,
            max_concurrent_activities=settings.max_concurrent_activities,
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.sticky_queue_timeout_seconds),
            interceptors=list(interceptors),
        )
        async with worker:
            log.info(
                "polling task queue %r in namespace %r at %s (%d workflows, %d activities)",
                settings.temporal_task_queue,
                settings.temporal_namespace,
                settings.temporal_address,
                len(WORKFLOWS),
                len(activities),
            )
            await stop.wait()
            log.info("shutting down: in-flight activities get up to %s to finish", GRACEFUL_SHUTDOWN)
    log.info("worker stopped")


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
