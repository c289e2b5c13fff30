"""An HTTP proxy that answers a share of requests with an error instead of forwarding them.

For backends without a fault switch of their own (OpenBao, moto): the real server sits behind it, and
the proxy records every request it forwarded or failed, so a test can tell a retried call from one
that was sent once. ``only`` narrows the faults to some requests (e.g. Secret writes), and
``error_body``/``content_type`` shape the answer as the backend would (AWS: a 400 ``Throttling``
error document, which botocore's retry modes retry).
"""

from __future__ import annotations

import http.client
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ERROR_BODY = b'{"errors":["injected fault"]}'


@dataclass
class FaultPlan:
    error_rate: float = 0.0
    status: int = 503
    seed: int = 14
    only: Callable[[str, bytes], bool] | None = None
    """Fail only requests for which this holds (given "METHOD /path" and the body); None: any."""
    error_body: bytes = DEFAULT_ERROR_BODY
    content_type: str = "application/json"
    respond: Callable[[str, Any], tuple[int, bytes, str]] | None = None
    """Shape each injected error from the request ("METHOD /path", headers): (status, body, content type)."""
    forwarded: Counter[str] = field(default_factory=Counter)  # "METHOD /path" -> count
    failed: Counter[str] = field(default_factory=Counter)
    _random: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def decide(self, key: str, body: bytes = b"") -> bool:
        """True: fail this request (before it reaches the server)."""
        with self._lock:
            eligible = self.only is None or self.only(key, body)
            fail = eligible and self._random.random() < self.error_rate
            (self.failed if fail else self.forwarded)[key] += 1
            return fail


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan) -> Iterator[str]:
    """Serve on a free local port; yields the proxy's base URL."""
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            key = f"{self.command} {self.path.split('?')[0]}"
            if plan.decide(key, body or b""):
                status, payload, content_type = (
                    plan.respond(key, self.headers)
                    if plan.respond
                    else (plan.status, plan.error_body, plan.content_type)
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                connection.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        def do_LIST(self) -> None:  # Vault's LIST verb
            self._handle()

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client killed mid-request (a SIGKILLed worker) resets its connection: not news

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
