"""The local stack supervisor: ``LocalStack(state_dir).up()``, ``.status()``, ``.down()``.

It starts, on loopback ports and detached from the caller (each in its own session, so they outlive
the CLI), one process per service (``devstack.services`` says which, with which command lines; the
state folder layout is ``devstack.services.StackLayout``).

``up`` is idempotent: a recorded process that is still alive (same pid *and* the same start time
and cmdline in ``/proc``), was started with the same configuration and answers its readiness check
is kept; anything else is (re)started. A service that died a moment ago (SIGKILL, a crash) may
still hold its ports while the kernel tears it down: ``up`` waits for them to be released, and
names the process holding a port when it is someone else's. ``down`` signals exactly the processes
recorded in ``stack.json`` (and any process they started in their session), SIGTERM first, SIGKILL
after a grace period. Linux only (``/proc``).

The module is split by concern: ``devstack.services`` (what runs), ``devstack.readiness`` (when
it answers), ``devstack.processes`` (process control), ``devstack.network`` (ports and HTTP),
``devstack.state`` (``stack.json``); the names below stay importable from here.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field

from devstack.errors import PortInUseError, StackError
from devstack.files import env_quote, write_private
from devstack.network import LOOPBACK, await_free_ports
from devstack.processes import (
    MARKER_ENV,
    cmdline,
    proc_stat,
    settled_cmdline,
    spawn_detached,
    stop_session,
)
from devstack.readiness import Readiness
from devstack.services import (
    BASE_SERVICES,
    DEFAULT_STOP_TIMEOUT,
    EMULATOR,
    KEEP_CHECK_TIMEOUT,
    MOTO,
    MOTO_NOTE,
    NAMESPACE,
    OPENBAO,
    OWN_ENTRIES,
    PORT_TITLES,
    PROJECT_ROOT,
    READY_TIMEOUT,
    SERVICE_PORTS,
    SERVICE_TITLES,
    STACK_FILE,
    STATUS_TIMEOUT,
    STOP_TIMEOUT,
    TEMPORAL,
    WORKER,
    Launch,
    ServiceNotReady,
    StackEndpoints,
    StackLayout,
    StackPorts,
    server_binary,
    service_launch,
    service_url,
    stack_endpoints,
    worker_launch,
    write_openbao_config,
)
from devstack.state import ProcessRecord, StackState, load_state, locked, save_state
from devstack.vault_identity import WorkerIdentity, ensure_worker_identity, recorded_identity

__all__ = [
    "BASE_SERVICES",
    "EMULATOR",
    "LOOPBACK",
    "MARKER_ENV",
    "MOTO",
    "MOTO_NOTE",
    "NAMESPACE",
    "OPENBAO",
    "PORT_TITLES",
    "PROJECT_ROOT",
    "SERVICE_PORTS",
    "SERVICE_TITLES",
    "STACK_FILE",
    "TEMPORAL",
    "WORKER",
    "LocalStack",
    "PortInUseError",
    "ProcessRecord",
    "ServiceNotReady",
    "ServiceStatus",
    "StackEndpoints",
    "StackError",
    "StackPorts",
    "StackState",
    "server_binary",
]

log = logging.getLogger("tenantctl.devstack")
T = TypeVar("T")


class ServiceStatus(BaseModel):
    name: str
    pid: int | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    url: str = ""
    healthy: bool = False
    detail: str = ""
    log: str = ""


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
        self.layout = StackLayout(self.state_dir)
        self._requested_ports = ports
        self.with_worker = with_worker
        self.emulator_ready_delay = emulator_ready_delay
        self.started: list[str] = []  # set by up(): services (re)started by the last call
        self.kept: list[str] = []  # set by up(): services found running and healthy
        self.stopped: list[str] = []  # set by up(): the worker, stopped by an up without it
        self._cancel = threading.Event()
        self._readiness = Readiness(self.layout, self._cancel)

    # --- paths ----------------------------------------------------------------------------------

    @property
    def stack_file(self) -> Path:
        return self.layout.stack_file

    @property
    def env_file(self) -> Path:
        return self.layout.env_file

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def logs_dir(self) -> Path:
        return self.layout.logs_dir

    @property
    def openbao_init_file(self) -> Path:
        return self.layout.openbao_init_file

    def log_file(self, service: str) -> Path:
        return self.layout.log_file(service)

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
        for directory in self.layout.directories:
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        self.started, self.kept, self.stopped = [], [], []
        self._cancel.clear()
        with locked(self.state_dir):
            state = self._load_state()
            ports = self.ports
            state.ports = ports
            write_openbao_config(self.layout, ports)
            launches = [service_launch(name, self.layout, ports, self.emulator_ready_delay) for name in BASE_SERVICES]
            self._ensure(state, launches)
            endpoints = self._endpoints(ports, self._ensure_worker_identity(ports))
            self._write_env_file(endpoints)
            if self.with_worker:
                self._ensure(state, [worker_launch(self.layout, endpoints)])
            elif WORKER in state.services:  # asked for a stack without our worker (you run your own)
                log.info("%s", self._stop(state.services.pop(WORKER)))
                self.stopped.append(WORKER)
                self._save_state(state)
            owner_only(self.state_dir)
        log.info(
            "local stack up in %.1fs (started: %s; kept: %s)",
            time.monotonic() - began,
            ", ".join(self.started) or "none",
            ", ".join(self.kept) or "none",
        )
        return endpoints

    def _ensure(self, state: StackState, launches: list[Launch]) -> None:
        """Keep what runs and answers; (re)start the rest in parallel; all or nothing for this call."""
        to_start: list[Launch] = []
        candidates: list[tuple[Launch, ProcessRecord]] = []
        for launch in launches:
            record = state.services.get(launch.name)
            if record is not None and record.is_ours() and record.fingerprint == launch.fingerprint:
                candidates.append((launch, record))
                continue
            if record is not None:
                if record.is_ours():
                    log.info("restarting %s: its configuration changed", launch.name)
                else:
                    log.info("%s (pid %d) is no longer running: starting it again", launch.name, record.pid)
                self._stop(record)  # also waits for a process killed a moment ago to be gone
                del state.services[launch.name]
            to_start.append(launch)
        if candidates:  # running: prove it answers (this also unseals a sealed OpenBao)
            results = self._parallel(
                {
                    launch.name: functools.partial(self._readiness.check, record, KEEP_CHECK_TIMEOUT, True)
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
        # every port checked before anything starts; a crashed service's sockets may take a moment to close
        wanted = {field: port for launch in to_start for field, port in ports.of(launch.name).items()}
        await_free_ports(wanted, PORT_TITLES, self.layout.marker)
        spawned: list[ProcessRecord] = []
        try:
            for launch in to_start:
                record = self._spawn(launch, ports.of(launch.name))
                spawned.append(record)
                state.services[launch.name] = record
                self._save_state(state)
            results = self._parallel(
                {r.name: functools.partial(self._readiness.check, r, READY_TIMEOUT[r.name], True) for r in spawned}
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
            record.cmdline = cmdline(record.pid) or record.cmdline
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

    def _spawn(self, launch: Launch, ports: dict[str, int]) -> ProcessRecord:
        log_path = self.log_file(launch.name)
        proc = spawn_detached(launch.name, launch.argv, launch.env, log_path, self.state_dir)
        stat = proc_stat(proc.pid)
        log.info("started %s (pid %d), log %s", launch.name, proc.pid, log_path)
        return ProcessRecord(
            name=launch.name,
            pid=proc.pid,
            start_ticks=stat.start_ticks if stat else 0,
            cmdline=settled_cmdline(proc.pid) or launch.argv,
            fingerprint=launch.fingerprint,
            ports=ports,
            log=str(log_path),
            started_at=datetime.now(UTC),
        )

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
                name=name, ports=service_ports, url=service_url(name, service_ports), log=str(self.log_file(name))
            )
            if record is None:
                return base.model_copy(update={"detail": "not running ('tenantctl dev up' starts it)"})
            base = base.model_copy(update={"pid": record.pid})
            if not record.is_ours():
                return base.model_copy(update={"detail": f"not running (pid {record.pid} exited; see {record.log})"})
            try:
                detail = self._readiness.check(record, STATUS_TIMEOUT, repair=False)
            except Exception as exc:
                return base.model_copy(update={"detail": str(exc).splitlines()[0]})
            return base.model_copy(update={"healthy": True, "detail": detail})

        results = self._parallel({name: functools.partial(one, name) for name in names})
        return [
            value if isinstance(value, ServiceStatus) else ServiceStatus(name=name, detail=f"check failed: {value}")
            for name, value in results.items()
        ]

    def endpoints(self) -> StackEndpoints:
        """The endpoints of this state folder's stack (whether or not it runs right now): Vault
        through the worker's AppRole (policy ``tenantctl_worker``), recorded by the last ``up``."""
        identity = recorded_identity(self.layout.openbao_worker_identity)
        return self._endpoints(self.ports, identity)

    def vault_root_token(self) -> str:
        """OpenBao's root token: for setup and inspection, asked for explicitly; the worker never gets it."""
        return str(self._readiness.openbao_secrets()["root_token"])

    def _ensure_worker_identity(self, ports: StackPorts) -> WorkerIdentity:
        addr = stack_endpoints(self.layout, ports, None, None).vault_addr
        return ensure_worker_identity(addr, self.vault_root_token(), self.layout.openbao_worker_identity)

    def _endpoints(self, ports: StackPorts, identity: WorkerIdentity | None) -> StackEndpoints:
        if identity is None:
            return stack_endpoints(self.layout, ports, None, None)
        return stack_endpoints(self.layout, ports, identity.role_id, identity.secret_id)

    def _write_env_file(self, endpoints: StackEndpoints) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        lines = [
            f"# written by 'tenantctl dev up' at {stamp}: settings of the local stack in {self.state_dir}",
            "# holds the worker's AppRole secret id (policy tenantctl_worker; never the root token): mode 0600",
            *(f"{key}={env_quote(value)}" for key, value in endpoints.as_env().items()),
        ]
        write_private(self.env_file, "\n".join(lines) + "\n")

    # --- down -----------------------------------------------------------------------------------

    def down(self, purge: bool = False) -> list[str]:
        """Stop exactly the recorded processes; with ``purge`` also delete the state folder."""
        if not self.state_dir.exists():
            return [f"nothing to stop: {self.state_dir} does not exist"]
        if purge:
            _check_purgeable(self.state_dir)
        messages: list[str] = []
        with locked(self.state_dir):
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
        timeout = STOP_TIMEOUT.get(record.name, DEFAULT_STOP_TIMEOUT)
        return stop_session(record.name, record.pid, record.start_ticks, self.layout.marker, timeout)

    # --- state file -----------------------------------------------------------------------------

    def _load_state(self) -> StackState:
        return load_state(self.stack_file)

    def _save_state(self, state: StackState) -> None:
        save_state(self.stack_file, state)


def owner_only(state_dir: Path) -> None:
    """Every file of the state folder 0600, every folder 0700 (keys, tokens, logs, Temporal's db):
    files written before this rule, or by a service that set its own mode, are tightened too."""
    for root, dirs, files in os.walk(state_dir):
        for name in dirs:
            _chmod(Path(root) / name, 0o700)
        for name in files:
            _chmod(Path(root) / name, 0o600)
    _chmod(state_dir, 0o700)


def _chmod(path: Path, mode: int) -> None:
    try:
        if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & ~mode:
            path.chmod(mode)
    except FileNotFoundError:  # a service removed it meanwhile (a temporary file)
        pass


def _check_purgeable(state_dir: Path) -> None:
    """Refuse to delete a folder that holds anything the stack did not put there."""
    foreign = sorted(p.name for p in state_dir.iterdir() if p.name not in OWN_ENTRIES and not p.name.startswith("."))
    if foreign:
        raise StackError(
            f"not purging {state_dir}: it holds files the local stack did not write "
            f"({', '.join(foreign[:5])}); delete it yourself if you mean it"
        )
