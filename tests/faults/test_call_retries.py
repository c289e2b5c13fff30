"""Per-call retries (worker/retries.py) on every backend client the worker builds, each against its
real backend with faults: the host API emulator's fault switch, a fault proxy in front of OpenBao,
and a botocore event hook that answers a share of moto calls with ``RequestLimitExceeded``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from botocore.awsrequest import AWSResponse
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from kubernetes.client.exceptions import ApiException
from temporalio.testing import ActivityEnvironment

from activities.kvm.provider import KvmProvider
from activities.tenant.clusters import plain_http_factory
from config.settings import Settings
from devstack.kube_emulator import Emulator
from models.provider import ClusterRef
from tests.faults.fault_proxy import FaultPlan, fault_proxy
from tests.servers import OpenBao
from tests.specs import small_kvm
from worker.clients import aws_clients, kube_client
from worker.retries import CallRetries, RateLimit, call_retry, tenant_api_with_retries, vault_session


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """An emulator of our own: its faults are seeded, so every run sees the same failures."""
    emu = Emulator(port=0, ready_delay=0.05, fault_seed=14)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(autouse=True)
def no_leftover_faults(emulator: Emulator) -> Iterator[None]:
    yield
    emulator.clear_faults()


def provider_over(api: ApiClient) -> KvmProvider:
    return KvmProvider(api, poll_interval=0.05)


def bare_client(url: str) -> ApiClient:
    config = Configuration(host=url)
    config.retries = False  # what an activity saw before: every failed call fails it
    return ApiClient(config)


def test_host_api_activity_rides_out_30_percent_503s(emulator: Emulator) -> None:
    """At 30% the default five retries leave about one call in 1,400 failing (0.3 ** 6), which the
    activity's own Temporal retry would cover; here no activity may fail at all, so eight retries."""
    env = ActivityEnvironment()
    with_retries = provider_over(kube_client(Configuration(host=emulator.url), CallRetries(attempts=8)))
    without = provider_over(bare_client(emulator.url))
    emulator.set_faults(error_rate=0.3, error_codes=[503])

    failures_without = 0
    for _ in range(5):
        try:
            env.run(without.ensure_foundation, ClusterRef(spec=small_kvm()))
        except Exception:  # an ApplicationError, or the ApiException itself
            failures_without += 1
    began = time.monotonic()
    for _ in range(5):
        spec = small_kvm()
        env.run(with_retries.ensure_foundation, ClusterRef(spec=spec))
        env.run(with_retries.ensure_endpoint, ClusterRef(spec=spec))
    seconds = time.monotonic() - began
    print(  # noqa: T201
        f"\nhost API at 30% 503s: 5 of 5 foundation+endpoint activities succeeded with per-call retries "
        f"({seconds:.1f}s); without them {failures_without} of 5 foundation activities failed"
    )
    assert failures_without >= 3  # the faults are real: without retries most activities fail


def test_host_api_mixed_errors_and_retry_after(emulator: Emulator) -> None:
    """500, 503 and 429 (with Retry-After: 1) at 20% on every method the activities use."""
    core = CoreV1Api(kube_client(Configuration(host=emulator.url), CallRetries()))
    emulator.set_faults(error_rate=0.2, error_codes=[500, 503, 429])
    name = f"retries-{random.randrange(10**6)}"
    core.create_namespace({"metadata": {"name": name}})
    for i in range(15):
        core.create_namespaced_config_map(name, {"metadata": {"name": f"c{i}"}, "data": {"v": "1"}})
        core.patch_namespaced_config_map(f"c{i}", name, {"data": {"v": "2"}})
        assert core.read_namespaced_config_map(f"c{i}", name).data == {"v": "2"}
    core.replace_namespaced_config_map("c0", name, {"metadata": {"name": "c0"}, "data": {"v": "3"}})
    assert len(core.list_namespaced_config_map(name).items) == 15
    for i in range(15):
        core.delete_namespaced_config_map(f"c{i}", name)
    emulator.clear_faults()
    assert core.list_namespaced_config_map(name).items == []


def test_retries_give_up_and_hand_the_status_to_the_client(emulator: Emulator) -> None:
    """An outage longer than the retries: the client raises its own error with the status (which
    activities classify as temporary), after about a second and a half, not a minute."""
    core = CoreV1Api(kube_client(Configuration(host=emulator.url), CallRetries()))
    emulator.set_faults(error_rate=1.0, error_codes=[503])
    began = time.monotonic()
    with pytest.raises(ApiException) as info:
        core.list_namespace()
    assert info.value.status == 503
    assert 1.0 < time.monotonic() - began < 6


def test_tenant_api_clients_retry_reads_and_patches(emulator: Emulator) -> None:
    spec = small_kvm()
    make = tenant_api_with_retries(plain_http_factory(lambda s: f"{emulator.url}/tenants/{s.id}"), CallRetries())
    core = CoreV1Api(make(spec))
    core.create_node({"metadata": {"name": "n1"}})
    emulator.set_faults(error_rate=0.2, error_codes=[500, 503, 429])
    for i in range(20):
        assert [n.metadata.name for n in core.list_node().items] == ["n1"]
        core.patch_node("n1", {"metadata": {"labels": {"round": str(i)}}})


def test_tenant_api_posts_are_not_repeated(emulator: Emulator) -> None:
    """A POST to a tenant API (an eviction) is sent once: its 429 is a PodDisruptionBudget's answer."""
    make = tenant_api_with_retries(plain_http_factory(lambda s: f"{emulator.url}/tenants/{s.id}"), CallRetries())
    core = CoreV1Api(make(small_kvm()))
    emulator.set_faults(error_rate=1.0, error_codes=[429])
    began = time.monotonic()
    with pytest.raises(ApiException) as info:
        core.create_namespace({"metadata": {"name": "x"}})
    assert info.value.status == 429 and time.monotonic() - began < 0.9  # no Retry-After wait: not retried


# --- Vault ---------------------------------------------------------------------------------------------
def test_vault_rides_out_503s_on_reads_and_writes(openbao: OpenBao) -> None:
    plan = FaultPlan(error_rate=0.3, status=503)
    with fault_proxy(openbao.addr, plan) as url:
        vault = hvac.Client(url=url, token=openbao.token, session=vault_session(CallRetries(), RateLimit(100)))
        path = f"retries-{random.randrange(10**6)}"
        for i in range(20):
            vault.secrets.kv.v2.create_or_update_secret(f"{path}/s{i}", secret={"i": i}, mount_point="secret")
            assert vault.secrets.kv.v2.read_secret_version(f"{path}/s{i}", mount_point="secret")["data"]["data"] == {
                "i": i
            }
    assert sum(plan.failed.values()) >= 10  # the faults were real
    writes = {k: v for k, v in plan.forwarded.items() if k.startswith("POST") or k.startswith("PUT")}
    assert all(count == 1 for count in writes.values()), writes  # each write reached Vault once


def test_vault_writes_are_not_repeated_after_a_500(openbao: OpenBao) -> None:
    """A 500 may come after Vault acted (a certificate issued): a write is not sent again; reads are."""
    plan = FaultPlan(error_rate=1.0, status=500)
    with fault_proxy(openbao.addr, plan) as url:
        vault = hvac.Client(url=url, token=openbao.token, session=vault_session(CallRetries()))
        with pytest.raises(hvac.exceptions.InternalServerError):
            vault.secrets.kv.v2.create_or_update_secret("once", secret={"a": 1}, mount_point="secret")
        with pytest.raises(hvac.exceptions.InternalServerError):
            vault.secrets.kv.v2.read_secret_version("once", mount_point="secret")
    posts = sum(v for k, v in plan.failed.items() if not k.startswith("GET"))
    gets = sum(v for k, v in plan.failed.items() if k.startswith("GET"))
    assert (posts, gets) == (1, 1 + CallRetries().attempts), plan.failed  # the read: first try + retries


# --- AWS -------------------------------------------------------------------------------------------------
class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


THROTTLED = (
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    b"</Error></Errors><RequestID>fault</RequestID></Response>"
)


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_aws_calls_ride_out_throttling(moto_url: str, mode: str, tmp_path: Path) -> None:
    settings = Settings(
        aws_endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_retry_mode=mode,
        state_dir=tmp_path,
    )
    ec2 = aws_clients(settings).client("ec2")
    chance = random.Random(14)
    throttled = {"count": 0}

    def throttle(request: Any, **_: Any) -> AWSResponse | None:
        if chance.random() < 0.3:
            throttled["count"] += 1
            return AWSResponse(request.url, 503, {"Content-Type": "text/xml"}, _Body(THROTTLED))
        return None  # the real call goes to moto

    ec2.meta.events.register("before-send.ec2", throttle)
    began = time.monotonic()
    for i in range(10):
        vpc = ec2.create_vpc(CidrBlock=f"10.{i}.0.0/16")["Vpc"]["VpcId"]
        assert [v["VpcId"] for v in ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"]] == [vpc]
        ec2.delete_vpc(VpcId=vpc)
    print(f"\nAWS ({mode}): 30 calls, {throttled['count']} throttled, {time.monotonic() - began:.1f}s")  # noqa: T201
    assert throttled["count"] >= 5


def test_rate_limit_spreads_calls() -> None:
    limit = RateLimit(per_second=50, burst=5)
    began = time.monotonic()
    for _ in range(30):
        limit.acquire()
    assert time.monotonic() - began >= (30 - 5) / 50 * 0.9


def test_retry_copies_keep_their_settings() -> None:
    retry = call_retry(CallRetries(), {"GET"}, any_method_statuses=(429, 503))
    copy = retry.new(total=1)
    assert copy.any_method_statuses == {429, 503} and copy.retry_after_cap == retry.retry_after_cap
    assert copy.is_retry("POST", 503) and not copy.is_retry("POST", 500) and copy.is_retry("GET", 500)
