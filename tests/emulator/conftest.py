"""Fixtures: one in-process emulator per session on a free port, reached only through the official client.

Helpers are handed out through the `kit` fixture rather than imported, so the tests work under any
pytest import mode without a tests/__init__.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from devstack.kube_emulator import Emulator

T = TypeVar("T")
READY_DELAY = 0.2


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator(port=0, ready_delay=READY_DELAY) as emu:
        yield emu


@pytest.fixture(scope="session")
def kubeconfig(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return emulator.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")


def client_for(kubeconfig: Path, retries: bool | None = None) -> client.ApiClient:
    """An ApiClient from a kubeconfig, without touching the client's global default configuration.

    retries=False turns off urllib3's retries, which otherwise honour Retry-After on 429 responses.
    """
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.retries = retries
    return client.ApiClient(cfg)


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    with client_for(kubeconfig) as api_client:
        yield api_client


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:
    name = unique("ns")
    core.create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(autouse=True)
def _no_faults(emulator: Emulator) -> Iterator[None]:
    yield
    emulator.clear_faults()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tenant_client(emulator: Emulator, tenant: str, tmp_path: Path) -> client.ApiClient:
    return client_for(emulator.write_tenant_kubeconfig(tenant, tmp_path / f"{tenant}.kubeconfig"))


def wait_for(probe: Callable[[], T | None], timeout: float = 5.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.03)


def api_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[ApiException, dict[str, Any]]:
    """Call, expect an ApiException, return it with its decoded Status body."""
    with pytest.raises(ApiException) as info:
        fn(*args, **kwargs)
    body = json.loads(info.value.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == info.value.status
    return info.value, body


def raw(
    api: client.ApiClient, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    """A request through the official client's REST layer (for admin endpoints and odd verbs)."""
    hdrs = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    resp = api.call_api(method, api.configuration.host + path, header_params=hdrs, body=body)
    data = resp.read()
    try:
        decoded = json.loads(data) if data else None
    except ValueError:
        decoded = data.decode()
    return resp.status, decoded, resp.headers


def deployment(
    name: str,
    replicas: int = 1,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    image: str = "nginx:1.27",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations or {}, "labels": labels or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


class Kit:
    """The helpers above, as a fixture value."""

    unique = staticmethod(unique)
    wait_for = staticmethod(wait_for)
    api_error = staticmethod(api_error)
    raw = staticmethod(raw)
    deployment = staticmethod(deployment)
    client_for = staticmethod(client_for)
    tenant_client = staticmethod(tenant_client)


@pytest.fixture
def kit() -> Kit:
    return Kit()
