"""Readiness checks of the local stack's services: each waits until its service answers for real
(and, when asked to ``repair``, registers Temporal's search attributes, initialises and unseals
OpenBao, seeds moto's node AMIs); ``status`` only looks."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml

from devstack.aws_seed import DEFAULT_PREFIX as DEFAULT_AMI_PREFIX
from devstack.aws_seed import local_stack_versions, seed_amis
from devstack.errors import StackError
from devstack.files import write_private
from devstack.network import LOOPBACK, http_status, tcp_open
from devstack.processes import alive, log_since_start
from devstack.services import (
    AWS_DUMMY_CREDENTIAL,
    AWS_REGION,
    EMULATOR,
    MOTO,
    MOTO_NOTE,
    NAMESPACE,
    OPENBAO,
    TEMPORAL,
    WORKER,
    ServiceNotReady,
    StackLayout,
)
from devstack.state import ProcessRecord

log = logging.getLogger("tenantctl.devstack")

WORKER_SETTLE_SECONDS = 2.0
WORKER_READY_TEXT = "polling task queue"
POLL_SECONDS = 0.15


class Readiness:
    """The readiness checks of one stack; ``cancel`` makes every wait give up at once (Ctrl-C)."""

    def __init__(self, layout: StackLayout, cancel: threading.Event) -> None:
        self.layout = layout
        self.cancel = cancel

    def check(self, record: ProcessRecord, timeout: float, repair: bool) -> str:
        """Wait until ``record``'s service answers; return a one-line detail."""
        # A fresh CLI process imports a client library on first use, which takes seconds on a busy
        # machine: that is not the service's answer time, so the clock starts after it.
        _import_client(record.name)
        deadline = time.monotonic() + timeout
        checks: dict[str, Callable[[ProcessRecord, float, bool], str]] = {
            TEMPORAL: self._temporal,
            OPENBAO: self._openbao,
            MOTO: self._moto,
            EMULATOR: self._emulator,
            WORKER: self._worker,
        }
        return checks[record.name](record, deadline, repair)

    def openbao_secrets(self) -> dict[str, Any]:
        init_file = self.layout.openbao_init_file
        try:
            data: dict[str, Any] = json.loads(init_file.read_text())
        except FileNotFoundError:
            raise StackError(
                f"OpenBao is initialized but {init_file} (unseal key, root token) "
                "is missing; 'tenantctl dev down --purge' starts over"
            ) from None
        return data

    def _wait(self, record: ProcessRecord, deadline: float, attempt: Callable[[], str | None]) -> str:
        """Call ``attempt`` until it returns a detail; fail early if the process dies."""
        last = "no answer yet"
        while True:
            if self.cancel.is_set():
                raise StackError(f"{record.name}: interrupted")
            if not alive(record.pid, record.start_ticks):
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
            time.sleep(POLL_SECONDS)

    def _temporal(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        address = f"{LOOPBACK}:{record.ports['temporal']}"

        def attempt() -> str | None:
            tcp_open(LOOPBACK, record.ports["temporal"])
            remaining = max(1.0, deadline - time.monotonic())
            return asyncio.run(asyncio.wait_for(temporal_check(address, repair), timeout=min(10.0, remaining)))

        detail = self._wait(record, deadline, attempt)
        return f"{detail}; SQLite {self.layout.temporal_db}"

    def _openbao(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        import hvac
        import requests

        session = requests.Session()
        session.trust_env = False  # loopback: never through an HTTP proxy from the environment
        client = hvac.Client(url=f"http://{LOOPBACK}:{record.ports['openbao']}", session=session, timeout=5)
        init_file = self.layout.openbao_init_file

        def attempt() -> str | None:
            health = vault_health(client)
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
                write_private(
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
                client.sys.submit_unseal_key(key=self.openbao_secrets()["unseal_keys_b64"][0])
                return None
            if health.get("standby"):
                return None  # raft is electing its only node
            client.token = self.openbao_secrets()["root_token"]
            client.auth.token.lookup_self()  # the recorded root token works
            return f"initialized, unsealed, active (raft in {self.layout.openbao_dir / 'data'})"

        return self._wait(record, deadline, attempt)

    def _moto(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        url = f"http://{LOOPBACK}:{record.ports['moto']}/moto-api/"
        note = self._wait(record, deadline, lambda: MOTO_NOTE if http_status(url) == 200 else None)
        if not repair:  # status only looks; 'up' seeds
            return note
        # moto starts empty: node AMIs (found by name by the AWS provider) are registered again.
        ec2 = boto3.client(
            "ec2",
            region_name=AWS_REGION,
            endpoint_url=f"http://{LOOPBACK}:{record.ports['moto']}",
            aws_access_key_id=AWS_DUMMY_CREDENTIAL,
            aws_secret_access_key=AWS_DUMMY_CREDENTIAL,
        )
        amis = seed_amis(ec2, DEFAULT_AMI_PREFIX, local_stack_versions())
        return f"{note}; {len(amis)} node AMIs {DEFAULT_AMI_PREFIX}-<version> registered"

    def _emulator(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        url = f"http://{LOOPBACK}:{record.ports['kube_emulator']}/readyz"
        kubeconfig = self.layout.kubeconfig

        def attempt() -> str | None:
            if http_status(url) != 200:
                return None
            config = yaml.safe_load(kubeconfig.read_text())  # written (not atomically) at start
            if not isinstance(config, dict) or not config.get("clusters"):
                return None
            return f"kubeconfig {kubeconfig}; objects kept in {self.layout.emulator_state_file}"

        return self._wait(record, deadline, attempt)

    def _worker(self, record: ProcessRecord, deadline: float, repair: bool) -> str:
        log_path = Path(record.log)
        started = record.started_at.timestamp()

        def attempt() -> str | None:
            if time.time() - started < WORKER_SETTLE_SECONDS:
                return None
            text = log_since_start(log_path)
            if WORKER_READY_TEXT not in text:
                return None
            line = next(ln for ln in text.splitlines() if WORKER_READY_TEXT in ln)
            return line.split(": ", 1)[-1].strip()

        return self._wait(record, deadline, attempt)


def _import_client(service: str) -> None:
    if service == TEMPORAL:
        importlib.import_module("temporalio.client")
        importlib.import_module("workflows.search_attributes")
    elif service == OPENBAO:
        importlib.import_module("hvac")


async def temporal_check(address: str, repair: bool) -> str | None:
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


def vault_health(client: Any) -> dict[str, Any]:
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
