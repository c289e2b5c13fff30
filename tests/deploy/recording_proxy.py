"""A small recording HTTP proxy in front of the host API emulator, and what RBAC makes of a request.

Every request the worker's Kubernetes client sends goes through unchanged; the proxy keeps the
method and path of each, so a test can turn a real activity lifecycle into the RBAC rules it needs
(Kubernetes' own request-info mapping: path -> API group, resource, subresource; method -> verb).
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    status: int


@dataclass(frozen=True, order=True)
class RbacRequest:
    """One request as RBAC sees it (``resource`` includes the subresource: ``pods/eviction``)."""

    api_group: str
    resource: str
    verb: str
    cluster_wide: bool  # a list across all namespaces, or a cluster-scoped kind


def rbac_request(method: str, path: str, query: str) -> RbacRequest | None:
    """Kubernetes' request-info for a resource request; None for discovery and non-resource paths."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
    params = urllib.parse.parse_qs(query)
    verb = {
        "GET": "watch" if params.get("watch", ["false"])[0] in ("true", "1") else ("get" if name else "list"),
        "HEAD": "get" if name else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[method]
    full = f"{resource}/{sub}" if sub else resource
    return RbacRequest(api_group=group, resource=full, verb=verb, cluster_wide=namespace is None)


class RecordingProxy:
    """Forwards every request to ``upstream`` (plain HTTP) and records it."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._prefix = parsed.path.rstrip("/")
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    upstream.request(self.command, proxy._prefix + self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                finally:
                    upstream.close()
                split = urllib.parse.urlsplit(self.path)
                with proxy._lock:
                    proxy.requests.append(Recorded(self.command, split.path, split.query, response.status))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def rbac_requests(self) -> set[RbacRequest]:
        with self._lock:
            recorded = list(self.requests)
        found = (rbac_request(r.method, r.path, r.query) for r in recorded)
        return {request for request in found if request is not None}

    @contextmanager
    def running(self) -> Iterator[RecordingProxy]:
        thread = threading.Thread(target=self._server.serve_forever, name="recording-proxy", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)
