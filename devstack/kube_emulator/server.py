"""HTTP front end: routing of Kubernetes REST paths onto the store, discovery, watches, admin endpoints.

`ThreadingHTTPServer` with HTTP/1.1 keep-alive; watches are chunked JSON lines. A path prefix
`/tenants/<name>` selects a tenant virtual cluster; without it the host cluster is served.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import yaml

from .openapi import v2_document, v3_document, v3_root
from .patching import APPLY_PATCH
from .printers import table
from .resources import (
    DNS1123_LABEL,
    FOREGROUND_FINALIZER,
    ORPHAN_FINALIZER,
    REVIEWS,
    VERSION_INFO,
    ApiError,
    Obj,
    ResourceType,
    WriteOptions,
    api_group,
    api_group_list,
    api_resource_list,
    groups,
    lookup,
    scale_view,
)
from .schema import field_validation
from .selectors import object_matcher
from .store import key_of
from .tokens import bearer_of, token_request_from_protobuf

if TYPE_CHECKING:
    from .emulator import Emulator

log = logging.getLogger(__name__)
HEALTH = ("/healthz", "/livez", "/readyz")
TLS_HANDSHAKE_TIMEOUT = 10.0
PROTOBUF = "application/vnd.kubernetes.protobuf"
# kubectl's generators (`kubectl create namespace|configmap|secret|deployment|...`) send protobuf
PROTOBUF_HINT = (
    ". The tenantctl API emulator does not decode protobuf bodies; send JSON instead, e.g. "
    "`kubectl create ... --dry-run=client -o yaml | kubectl apply -f -`"
)


def not_found() -> ApiError:  # fresh instances: exceptions carry per-raise tracebacks
    return ApiError(404, "the server could not find the requested resource", details={})


def not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource", details={})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator, tls: ssl.SSLContext | None = None) -> None:
        self.emulator = emulator
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, Handler)
        if tls is not None:  # the handshake happens in the request's thread, not the accepting one
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(TLS_HANDSHAKE_TIMEOUT)
                request.do_handshake()
                request.settimeout(None)
            except OSError as exc:  # ssl.SSLError included: a client that does not trust the CA
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:  # tracked so stop() can cut keep-alive connections and watches
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls
    server: Server
    _warnings: list[str]  # of the request being handled: sent as Warning headers with its response

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # --- plumbing -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, code: int, data: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        for text in self._warnings:  # one header per warning, as kube-apiserver sends them
            self.send_header("Warning", f"299 - {json.dumps(text)}")
        self._warnings = []
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), headers=headers)

    def _options(self, q: dict[str, str], dry: bool) -> WriteOptions:
        """fieldManager (else the User-Agent's product, as the apiserver derives it; apply must name
        one), fieldValidation, force."""
        agent = self.headers.get("User-Agent", "").split("/", maxsplit=1)[0][:128] or "unknown"
        applying = self.headers.get("Content-Type", "").startswith(APPLY_PATCH)
        opts = WriteOptions(
            manager=q.get("fieldManager") or (None if applying else agent),
            validation=field_validation(q),
            dry_run=dry,
            force=q.get("force") == "true",
        )
        self._warnings = opts.warnings  # filled by the store while it handles the write
        return opts

    def _json(self, raw: bytes) -> Any:
        """Decode a JSON (or YAML) body. Protobuf is not spoken: no maintained, installable source of the
        Kubernetes .proto definitions exists on PyPI, so it gets a 415 that says how to send JSON."""
        ctype = self.headers.get("Content-Type", "application/json").split(";", maxsplit=1)[0].strip()
        if ctype not in ("application/json", "application/yaml", "*/*", ""):
            hint = PROTOBUF_HINT if ctype == PROTOBUF else ""
            raise ApiError(
                415,
                f"the body of the request was in an unknown format ({ctype}) - accepted "
                f"media types include: application/json, application/yaml{hint}",
            )
        try:
            if ctype == "application/yaml":
                return yaml.safe_load(raw) if raw.strip() else None
            return json.loads(raw) if raw.strip() else None
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, f"couldn't get version/kind; json parse error: {exc}") from exc

    def _handle(self) -> None:
        self._warnings = []
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        emu = self.server.emulator
        try:
            body = self._read_body()
            if path.startswith("/_emulator/"):
                return self._admin(path, body)
            cluster, _, rest = (
                path.removeprefix("/tenants/").partition("/")
                if path.startswith("/tenants/")
                else ("", "", path.lstrip("/"))
            )
            path = "/" + rest
            if path in HEALTH:  # never fault-injected: supervisors probe these
                return self._send(200, b"ok", "text/plain")
            emu.faults.apply()
            if cluster and not DNS1123_LABEL.match(cluster):
                raise not_found()
            self._api(cluster, path, query, body)
        except ApiError as err:
            self._send_json(err.code, err.status(), err.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # report like an apiserver would instead of dropping the connection
            log.exception("internal error serving %s %s", self.command, self.path)
            self._send_json(500, ApiError(500, f"Internal error occurred: {exc}").status())

    def _admin(self, path: str, raw: bytes) -> None:
        faults = self.server.emulator.faults
        if path != "/_emulator/faults":
            raise not_found()
        if self.command == "GET":
            return self._send_json(200, faults.get())
        if self.command == "PUT":
            try:  # any content type: `curl -d` sends form-urlencoded
                body = json.loads(raw or b"{}")
            except ValueError as exc:
                raise ApiError(400, f"invalid JSON: {exc}") from exc
            return self._send_json(200, faults.set(body))
        if self.command == "DELETE":
            return self._send_json(200, faults.clear())
        raise not_allowed()

    # --- Kubernetes API -------------------------------------------------------------------------

    def _api(self, cluster: str, path: str, q: dict[str, str], raw: bytes) -> None:
        parts = path.strip("/").split("/")
        discovery: Obj | None = None
        if path == "/version":
            discovery = VERSION_INFO
        elif path == "/api":
            host, port = self.server.server_address[:2]
            discovery = {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{host!s}:{port}"}],
            }
        elif path == "/apis":
            discovery = api_group_list()
        elif len(parts) == 2 and parts[0] == "apis" and parts[1] in groups():
            discovery = api_group(parts[1])
        elif path == "/openapi/v3":
            discovery = v3_root()
        elif path == "/openapi/v2" or path.startswith("/openapi/v3/"):
            gv = parts[2:]
            if path == "/openapi/v2":
                document = v2_document()
            elif gv[:1] == ["api"] and len(gv) == 2 and gv[1] == "v1":
                document = v3_document("", "v1")
            elif gv[:1] == ["apis"] and len(gv) == 3 and gv[2] in groups().get(gv[1], []):
                document = v3_document(gv[1], gv[2])
            else:
                raise not_found()
            if self.command != "GET":
                raise not_allowed()
            return self._send(200, document)
        if discovery is not None:
            if self.command != "GET":
                raise not_allowed()
            return self._send_json(200, discovery)
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise not_found()
        if version not in (groups().get(group, []) if group else ["v1"]):
            raise not_found()
        if not rest:
            if self.command != "GET":
                raise not_allowed()
            return self._send_json(200, api_resource_list(group, version))
        if any((group, version, rest[0]) == review[:3] for review in REVIEWS) and len(rest) == 1:
            if self.command != "POST":
                raise not_allowed()
            bearer = bearer_of(self.headers.get("Authorization"))
            return self._send_json(201, self.server.emulator.tokens.review(cluster, self._json(raw), bearer))
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (nrt := lookup(group, version, rest[2])) and nrt.namespaced:
            ns, rest = rest[1], rest[2:]
        rt = lookup(group, version, rest[0])
        if rt is None or len(rest) > 3 or (rt.namespaced and ns is None and len(rest) > 1):
            raise not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in rt.subresources:
            raise not_found()
        self._verb(cluster, rt, ns, name, sub, q, raw)

    def _verb(
        self, cluster: str, rt: ResourceType, ns: str | None, name: str | None, sub: str, q: dict[str, str], raw: bytes
    ) -> None:
        store, method = self.server.emulator.store, self.command
        dry = q.get("dryRun") == "All"
        if sub == "token":  # TokenRequest: create only, nothing stored
            if method != "POST" or ns is None or name is None:
                raise not_allowed()
            protobuf = self.headers.get("Content-Type", "").startswith(PROTOBUF)  # kubectl create token
            body = token_request_from_protobuf(raw) if protobuf else self._json(raw)
            return self._send_json(201, self.server.emulator.tokens.request(cluster, ns, name, body))
        if method == "GET" and name is None:
            if q.get("watch") in ("true", "1"):
                return self._watch(cluster, rt, ns, q)
            return self._list(cluster, rt, ns, q)
        if method == "GET" and sub != "eviction":
            assert name is not None
            obj = store.get(cluster, rt, ns or "", name)
            if sub == "scale":
                obj = scale_view(rt, obj)
            if "as=Table" in self.headers.get("Accept", "") and not sub:
                return self._send_json(
                    200, table(rt, [obj], q.get("includeObject", "Metadata"), obj["metadata"]["resourceVersion"])
                )
            return self._send_json(200, obj)
        if method == "POST" and name is None and (ns is not None or not rt.namespaced):
            body = self._json(raw)
            return self._send_json(201, store.create(cluster, rt, ns or "", body, self._options(q, dry)))
        if method == "POST" and sub == "eviction" and ns is not None and name is not None:
            eviction = self._json(raw)
            if not isinstance(eviction, dict) or (eviction.get("metadata") or {}).get("name", name) != name:
                raise ApiError(400, "name in URL does not match name in Eviction object")
            store.evict(cluster, ns, name)
            return self._send_json(
                201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
            )
        if method == "PUT" and name is not None and sub != "eviction":
            body = self._json(raw)
            return self._send_json(200, store.update(cluster, rt, ns or "", name, body, sub, self._options(q, dry)))
        if method == "PATCH" and name is not None and sub != "eviction":
            ctype = self.headers.get("Content-Type", "")
            obj, created = store.patch(cluster, rt, ns or "", name, ctype, raw, sub, self._options(q, dry))
            return self._send_json(201 if created else 200, obj)
        if method == "DELETE" and not sub:
            options = self._json(raw) or {}
            if not isinstance(options, dict):
                raise ApiError(400, "DeleteOptions must be a JSON object")
            for param in ("propagationPolicy", "orphanDependents"):  # DeleteOptions as query parameters
                if param in q and param not in options:
                    options[param] = q[param] == "true" if param == "orphanDependents" else q[param]
            if name is None:  # deletecollection
                match = object_matcher(rt, q.get("labelSelector"), q.get("fieldSelector"))
                items, rv = store.list(cluster, rt, ns, match)
                deleted = [store.delete(cluster, rt, *key_of(o), options, dry)[0] for o in items]
                return self._send_json(200, self._list_body(rt, deleted, rv, None))
            obj, gone = store.delete(cluster, rt, ns or "", name, options, dry or options.get("dryRun") == ["All"])
            finalizers = set(obj["metadata"].get("finalizers") or [])
            if not gone and not dry and finalizers & {FOREGROUND_FINALIZER, ORPHAN_FINALIZER}:
                self.server.emulator.controllers.garbage.settle(cluster)
            if gone and not rt.return_deleted:  # most registries answer Status Success
                details = {**rt.details(name), "uid": obj["metadata"]["uid"]}
                return self._send_json(
                    200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
                )
            return self._send_json(200, obj)
        raise not_allowed()

    @staticmethod
    def _list_body(rt: ResourceType, items: list[Obj], rv: int, cont: str | None) -> Obj:
        meta: Obj = {"resourceVersion": str(rv)}
        if cont:
            meta["continue"] = cont
        stripped = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": stripped}

    def _list(self, cluster: str, rt: ResourceType, ns: str | None, q: dict[str, str]) -> None:
        match = object_matcher(rt, q.get("labelSelector"), q.get("fieldSelector"))
        items, rv = self.server.emulator.store.list(cluster, rt, ns, match, read_only=True)  # only encoded
        if q.get("continue"):
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(q["continue"])))
            except (ValueError, binascii.Error) as exc:
                raise ApiError(400, f"invalid continue token: {exc}") from exc
            items = [o for o in items if key_of(o) > after]
        cont = None
        limit = int(q.get("limit") or 0) if (q.get("limit") or "0").isdigit() else 0
        if limit and len(items) > limit:
            items = items[:limit]
            cont = base64.urlsafe_b64encode(json.dumps(key_of(items[-1])).encode()).decode()
        if "as=Table" in self.headers.get("Accept", ""):
            return self._send_json(200, table(rt, items, q.get("includeObject", "Metadata"), str(rv), cont))
        self._send_json(200, self._list_body(rt, items, rv, cont))

    def _watch(self, cluster: str, rt: ResourceType, ns: str | None, q: dict[str, str]) -> None:
        match = object_matcher(rt, q.get("labelSelector"), q.get("fieldSelector"))
        since = q.get("resourceVersion")
        if since and not since.isdigit():
            raise ApiError(400, f'Invalid value: "{since}": resourceVersion must be an integer')
        try:
            timeout = float(q.get("timeoutSeconds") or 1800)
        except ValueError as exc:
            raise ApiError(400, f"invalid timeoutSeconds: {exc}") from exc
        events = self.server.emulator.store.watch(cluster, rt, ns, match, since, timeout)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away
            self.close_connection = True
        finally:
            events.close()
