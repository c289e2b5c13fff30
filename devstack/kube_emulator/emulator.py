"""The in-process entry point: `Emulator(...).start()` serves the API on a background thread."""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .controllers import Controllers
from .faults import FaultInjector
from .resources import DNS1123_LABEL
from .server import Server
from .store import GroupKey, Store, WatchEvent
from .tls import ServingCertificate, serving_certificate
from .tokens import DEFAULT_ISSUER, MIN_EXPIRATION_SECONDS, ServiceAccountTokens

log = logging.getLogger(__name__)


class Emulator:
    """A Kubernetes API emulator: host cluster at the root, tenant virtual clusters under /tenants/<name>."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        ready_delay: float = 0.5,
        state_file: str | os.PathLike[str] | None = None,
        history_size: int = 1000,
        save_debounce: float = 0.2,
        fault_seed: int | None = None,
        advertise_url: str | None = None,
        token_issuer: str = DEFAULT_ISSUER,
        min_token_expiration_seconds: int = MIN_EXPIRATION_SECONDS,
        tls_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host, self._port = host, port
        # what kubeconfigs point at when clients reach the server by another name (docker compose)
        self.advertise_url = advertise_url.rstrip("/") if advertise_url else None
        self.state_file = Path(state_file) if state_file else None
        self.save_debounce = save_debounce
        # what the last save wrote, per group: (its version, its text, id -> (stored object, its span in the text))
        self._group_texts: dict[GroupKey, tuple[int, bytes, dict[int, tuple[Any, int, int]]]] = {}
        self.store = Store(history_size)
        self.faults = FaultInjector(fault_seed)
        self.controllers = Controllers(self.store, ready_delay)
        # service account tokens; the signing key lives beside the state file so tokens survive restarts
        key_file = self.state_file.with_name(f"{self.state_file.name}.sa-key.pem") if self.state_file else None
        self.tokens = ServiceAccountTokens(
            self.store, key_file, issuer=token_issuer, min_expiration_seconds=min_token_expiration_seconds
        )
        # https with a CA and server certificate kept in tls_dir (made on first start), else plain http
        self.tls_dir = Path(tls_dir) if tls_dir else None
        self.tls: ServingCertificate | None = None
        self._server: Server | None = None
        self._threads: list[threading.Thread] = []
        self._dirty = threading.Event()
        self._stopping = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Emulator:
        if self.state_file and self.state_file.exists():
            self.store.restore(json.loads(self.state_file.read_text()))
            log.info("restored state from %s (resourceVersion %s)", self.state_file, self.store.rv)
        self.store.cluster("")  # the host cluster always exists
        if self.tls_dir is not None:
            self.tls = serving_certificate(self.tls_dir, (self.host,))
        self.controllers.tokens, self.controllers.ca_pem = self.tokens, self.tls.ca_pem if self.tls else None
        self._server = Server((self.host, self._port), self, self.tls.server_context() if self.tls else None)
        self._port = int(self._server.server_address[1])
        self.controllers.start()
        self._spawn(lambda: self._server.serve_forever(poll_interval=0.1) if self._server else None, "http")
        if self.state_file:
            self.store.listeners.append(self._mark_dirty)
            self.save_state()  # the file exists (and is valid) from the first moment on
            self._spawn(self._saver, "saver")
        log.info("kube emulator serving on %s", self.url)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        self.store.close()
        self.controllers.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.state_file:
            self.save_state()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=f"kube-emulator-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- addressing, kubeconfig -----------------------------------------------------------------

    @property
    def ready_delay(self) -> float:
        """Default seconds until a deployment (rollout) becomes available; settable at run time."""
        return self.controllers.ready_delay

    @ready_delay.setter
    def ready_delay(self, seconds: float) -> None:
        self.controllers.ready_delay = seconds

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_dir is not None else "http"
        return self.advertise_url or f"{scheme}://{self.host}:{self._port}"

    def tenant_url(self, tenant: str) -> str:
        if not DNS1123_LABEL.match(tenant):
            raise ValueError(f"tenant name must be a DNS-1123 label: {tenant!r}")
        return f"{self.url}/tenants/{tenant}"

    def kubeconfig(self, tenant: str | None = None, namespace: str = "default") -> dict[str, Any]:
        name = f"emulator-{tenant}" if tenant else "emulator"
        server = self.tenant_url(tenant) if tenant else self.url
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": name, "cluster": self._cluster_entry(server)}],
            "users": [{"name": name, "user": {"token": "emulator"}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
            "current-context": name,
        }

    def _cluster_entry(self, server: str) -> dict[str, str]:
        entry = {"server": server}
        if self.tls is not None:
            entry["certificate-authority-data"] = base64.b64encode(self.tls.ca_pem.encode()).decode()
        return entry

    def write_kubeconfig(self, path: str | os.PathLike[str], tenant: str | None = None) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig(tenant), sort_keys=False))
        return target

    def write_tenant_kubeconfig(self, tenant: str, path: str | os.PathLike[str]) -> Path:
        return self.write_kubeconfig(path, tenant=tenant)

    # --- faults ---------------------------------------------------------------------------------

    def set_faults(self, **fields: Any) -> dict[str, Any]:
        """Same fields as PUT /_emulator/faults (latency_ms, error_rate, error_codes, outage_*)."""
        return self.faults.set(fields)

    def clear_faults(self) -> dict[str, Any]:
        return self.faults.clear()

    # --- state file -----------------------------------------------------------------------------

    def _mark_dirty(self, cluster: str, event: WatchEvent) -> None:
        self._dirty.set()

    def _saver(self) -> None:
        while not self._stopping.is_set():
            if self._dirty.wait(0.5) and not self._stopping.wait(self.save_debounce):
                self.save_state()

    def _serialized(self) -> list[bytes]:
        """``json.dumps(self.store.snapshot())`` as UTF-8 pieces, to be written one after the other,
        encoding only what changed since the last save: a state of many clusters is megabytes, saved
        every fraction of a second while they change.

        The objects of one kind in one namespace of one cluster are one group; a group whose version
        did not move is the text it had, and in one that moved, an object that is still the same dict
        is its slice of the group's old text. Stored objects are never mutated after they are
        committed, and the spans hold the dict itself, so its id is not reused. Only the groups'
        texts are kept (with each object's span in it), so the state's text is held once.
        """
        head, groups = self.store.snapshot_groups({key: kept[0] for key, kept in self._group_texts.items()})
        kept_groups: dict[GroupKey, tuple[int, bytes, dict[int, tuple[Any, int, int]]]] = {}
        by_cluster: dict[str, list[bytes]] = {name: [] for name in head["clusters"]}
        for group in groups:
            if group.objects is None:
                kept = self._group_texts[group.key]
            else:
                _, old_text, old_spans = self._group_texts.get(group.key, (0, b"", {}))
                parts: list[bytes] = []
                spans: dict[int, tuple[Any, int, int]] = {}
                at = 0
                for obj in group.objects:
                    hit = old_spans.get(id(obj))
                    text = old_text[hit[1] : hit[2]] if hit is not None and hit[0] is obj else json.dumps(obj).encode()
                    at += 2 if parts else 0  # the ", " before it
                    spans[id(obj)] = (obj, at, at + len(text))
                    at += len(text)
                    parts.append(text)
                kept = (group.version, b", ".join(parts), spans)
            kept_groups[group.key] = kept
            by_cluster[group.key[0]].append(kept[1])
        self._group_texts = kept_groups
        pieces = [json.dumps({k: v for k, v in head.items() if k != "clusters"})[:-1].encode(), b', "clusters": {']
        for n, (name, texts_of_cluster) in enumerate(by_cluster.items()):
            pieces.append(f"{', ' if n else ''}{json.dumps(name)}: [".encode())
            for i, text in enumerate(texts_of_cluster):  # not joined: that would copy the whole state
                pieces += [b", ", text] if i else [text]
            pieces.append(b"]")
        pieces.append(b"}}")
        return pieces

    def save_state(self) -> None:
        """Atomically replace the state file (temp file in the same directory, then rename)."""
        if not self.state_file:
            return
        self._dirty.clear()
        pieces = self._serialized()
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".kube-emulator-", dir=self.state_file.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.writelines(pieces)
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
