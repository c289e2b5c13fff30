"""Fault injection, switched at run time over the admin endpoint and the Python API."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from devstack.kube_emulator import Emulator

DEFAULTS = {"latency_ms": 0.0, "error_rate": 0.0, "error_codes": [500, 503, 429], "outage_until": None}


def test_admin_endpoint_round_trip(api: client.ApiClient, kit: Any) -> None:
    assert kit.raw(api, "GET", "/_emulator/faults")[1] == DEFAULTS
    status, body, _ = kit.raw(api, "PUT", "/_emulator/faults", {"latency_ms": 5, "error_codes": [503]})
    assert status == 200 and body == {**DEFAULTS, "latency_ms": 5.0, "error_codes": [503]}
    assert kit.raw(api, "GET", "/_emulator/faults")[1] == body
    for bad in ({"error_rate": 2}, {"error_codes": [418]}, {"latency_ms": -1}, {"bogus": 1}, [1]):
        status, body, _ = kit.raw(api, "PUT", "/_emulator/faults", bad)
        assert (status, body["reason"]) == (400, "BadRequest"), bad
    status, body, _ = kit.raw(api, "DELETE", "/_emulator/faults")
    assert status == 200 and body == DEFAULTS


def test_latency(api: client.ApiClient, core: client.CoreV1Api, kit: Any) -> None:
    kit.raw(api, "PUT", "/_emulator/faults", {"latency_ms": 250})
    began = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - began >= 0.25
    began = time.monotonic()
    assert kit.raw(api, "GET", "/readyz")[0] == 200  # health endpoints are never slowed down
    assert time.monotonic() - began < 0.2


@pytest.fixture
def no_retry(kubeconfig: Path, kit: Any) -> Iterator[client.CoreV1Api]:
    with kit.client_for(kubeconfig, retries=False) as api:
        yield client.CoreV1Api(api)


@pytest.mark.parametrize(
    ("code", "reason"), [(500, "InternalError"), (503, "ServiceUnavailable"), (429, "TooManyRequests")]
)
def test_every_request_fails_with_the_chosen_code(
    emulator: Emulator, no_retry: client.CoreV1Api, kit: Any, code: int, reason: str
) -> None:
    emulator.set_faults(error_rate=1.0, error_codes=[code])
    err, body = kit.api_error(no_retry.create_namespaced_config_map, "default", {"metadata": {"name": "x"}})
    assert (err.status, body["reason"]) == (code, reason)
    err, body = kit.api_error(no_retry.list_namespace)
    assert (err.status, body["reason"]) == (code, reason)
    if code == 429:
        assert err.headers["Retry-After"] == "1" and body["details"]["retryAfterSeconds"] == 1
    else:
        assert "Retry-After" not in err.headers


def test_default_client_retries_429_after_retry_after(emulator: Emulator, core: client.CoreV1Api) -> None:
    emulator.set_faults(error_rate=1.0, error_codes=[429])
    threading.Timer(0.5, emulator.clear_faults).start()
    began = time.monotonic()
    assert core.read_namespace("default").metadata.name == "default"  # urllib3 waited Retry-After: 1
    assert time.monotonic() - began >= 0.9


def test_error_share(api: client.ApiClient, no_retry: client.CoreV1Api, kit: Any) -> None:
    kit.raw(api, "PUT", "/_emulator/faults", {"error_rate": 0.5, "error_codes": [500, 429]})
    outcomes: Counter[int] = Counter()
    for _ in range(120):
        try:
            no_retry.read_namespace("default")
            outcomes[200] += 1
        except ApiException as exc:
            outcomes[exc.status] += 1
    assert set(outcomes) <= {200, 500, 429}
    assert 30 <= outcomes[200] <= 90 and outcomes[500] > 5 and outcomes[429] > 5
    for path in ("/healthz", "/livez", "/readyz", "/_emulator/faults"):
        assert all(kit.raw(api, "GET", path)[0] == 200 for _ in range(20)), path


def test_outage_window(api: client.ApiClient, core: client.CoreV1Api, emulator: Emulator, kit: Any) -> None:
    kit.raw(api, "PUT", "/_emulator/faults", {"outage_seconds": 0.6})
    err, body = kit.api_error(core.list_namespace)
    assert (err.status, body["reason"]) == (503, "ServiceUnavailable")
    assert kit.raw(api, "GET", "/livez")[0] == 200
    kit.wait_for(lambda: kit.raw(api, "GET", "/api/v1/namespaces")[0] == 200, what="outage over")
    emulator.set_faults(outage_until=time.time() + 30)
    assert kit.raw(api, "GET", "/api/v1/namespaces")[0] == 503
    emulator.set_faults(outage_until=time.time() - 1)  # a window in the past is no outage
    assert kit.raw(api, "GET", "/api/v1/namespaces")[0] == 200
