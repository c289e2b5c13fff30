"""``python -m worker``: poll the task queue until SIGTERM/SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Interceptor

from config.settings import Settings, load_settings
from worker.backends import build_activities
from worker.clients import connect_temporal
from worker.health import WorkerHealth, serve_health
from worker.metrics import OperationMetrics, WorkerMetrics, install_sdk_metrics, serve_metrics
from worker.registry import GRACEFUL_SHUTDOWN, WORKFLOWS, build_worker

log = logging.getLogger("tenantctl.worker")


async def serve(
    settings: Settings, stop: asyncio.Event | None = None, interceptors: Sequence[Interceptor] = ()
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    health = WorkerHealth()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stopper(stop, health))
    chain = list(interceptors)
    with contextlib.ExitStack() as serving:
        if settings.health_address:
            serving.enter_context(serve_health(health, settings.health_address))
        metrics: WorkerMetrics | None = None
        if settings.metrics_address:
            # The SDK exports on loopback; /metrics appends its text to tenantctl's own.
            sdk_bind = f"127.0.0.1:{_free_port()}"
            install_sdk_metrics(sdk_bind)
            metrics = WorkerMetrics()
            chain.append(OperationMetrics())
            serving.enter_context(serve_metrics(metrics, settings.metrics_address, sdk_bind))
        tasks = [asyncio.create_task(health.beat_forever(), name="health-beat")]
        serving.callback(lambda: [task.cancel() for task in tasks])
        client = await connect_temporal(settings)
        if metrics is not None:
            tasks.append(
                asyncio.create_task(
                    metrics.refresh_forever(client, timedelta(seconds=settings.metrics_refresh_seconds)),
                    name="fleet-metrics",
                )
            )
        await _run_worker(settings, client, stop, health, chain)
    log.info("worker stopped")


def _stopper(stop: asyncio.Event, health: WorkerHealth) -> Callable[[], None]:
    def on_signal() -> None:
        health.set_polling(False)  # not ready at once: no rollout waits on a worker that is leaving
        stop.set()

    return on_signal


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run_worker(
    settings: Settings, client: Client, stop: asyncio.Event, health: WorkerHealth, interceptors: list[Interceptor]
) -> None:
    with ThreadPoolExecutor(settings.activity_threads, thread_name_prefix="activity") as pool:
        activities = build_activities(settings, client)
        worker = build_worker(
            client,
            settings.temporal_task_queue,
            activities,
            activity_executor=pool,
            max_concurrent_activities=settings.max_concurrent_activities,
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.sticky_queue_timeout_seconds),
            interceptors=interceptors,
        )
        async with worker:
            health.set_polling(True)
            log.info(
                "polling task queue %r in namespace %r at %s (%d workflows, %d activities)",
                settings.temporal_task_queue,
                settings.temporal_namespace,
                settings.temporal_address,
                len(WORKFLOWS),
                len(activities),
            )
            await stop.wait()
            health.set_polling(False)
            log.info("shutting down: in-flight activities get up to %s to finish", GRACEFUL_SHUTDOWN)


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
