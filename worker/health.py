"""The worker's liveness and readiness over HTTP, for the Deployment's probes (deploy/base).

- ``/livez``: the worker's event loop is turning (a beat every second; a loop stuck for
  ``LIVENESS_STALL`` fails it, and the kubelet restarts the pod).
- ``/readyz``: the worker is polling its task queue: from the moment the Temporal worker started
  until shutdown begins (SIGTERM makes it not ready at once, so no new rollout waits on it).

Served from a thread with the standard library's HTTP server: probes must answer even while the
event loop is busy, which is what makes ``/livez`` able to say the loop is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from worker.registry import GRACEFUL_SHUTDOWN

log = logging.getLogger(__name__)

LIVENESS_STALL: Final = 30.0
"""Seconds without an event-loop beat after which the worker reports itself not alive."""
BEAT_INTERVAL: Final = 1.0
TERMINATION_GRACE: Final = GRACEFUL_SHUTDOWN + timedelta(seconds=15)
"""The pod's terminationGracePeriodSeconds (deploy/base/worker-deployment.yaml): the worker's
graceful shutdown, in which running activities finish or are cancelled and handed back to Temporal
for another worker, plus time to close the Temporal connection. A test keeps the two equal."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) as a bindable pair; a clear error otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


class WorkerHealth:
    """What the probes report; the worker's serve loop sets it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_beat = clock()
        self._polling = False
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self._clock()

    def set_polling(self, polling: bool) -> None:
        with self._lock:
            self._polling = polling
        log.info("readiness: %s", "polling the task queue" if polling else "not polling")

    def alive(self) -> tuple[bool, str]:
        with self._lock:
            stalled = self._clock() - self._last_beat
        if stalled > LIVENESS_STALL:
            return False, f"event loop stalled for {stalled:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        alive, why = self.alive()
        if not alive:
            return False, why
        with self._lock:
            polling = self._polling
        return (True, "polling") if polling else (False, "not polling the task queue")

    async def beat_forever(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(BEAT_INTERVAL)


def _handler(health: WorkerHealth) -> type[BaseHTTPRequestHandler]:
    probes = {"/livez": health.alive, "/readyz": health.ready, "/healthz": health.alive}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            probe = probes.get(self.path.split("?", 1)[0])
            if probe is None:
                self.send_error(404)
                return
            ok, why = probe()
            body = (why + "\n").encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would drown the worker's log

    return Handler


@contextmanager
def serve_health(health: WorkerHealth, address: str) -> Iterator[ThreadingHTTPServer]:
    """Serve ``/livez`` and ``/readyz`` on ``address`` until the block ends."""
    server = ThreadingHTTPServer(split_address(address), _handler(health))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="health", daemon=True)
    thread.start()
    log.info("health probes on http://%s:%d (/livez, /readyz)", *server.server_address[:2])
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
