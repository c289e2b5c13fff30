"""Node health as node auto-repair observes it on KVM: the provider's ``kvm.list_nodes`` (one list of
the node Deployments) and the tenant API's ``tenant.check_health`` (one list of Nodes), against the
host API emulator over HTTP. Called twice, the same answer; a Ready=False condition set through the
tenant API stays (nothing of the local stack overwrites it) until it is cleared."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
from temporalio.testing import ActivityEnvironment

from activities.kvm.provider import KvmProvider
from activities.tenant.clusters import TenantClusters, plain_http_factory
from devstack.kube_emulator import Emulator
from models.naming import kvm_namespace
from models.node_health import observed_unhealthy
from models.provider import ClusterRef, NodesResult
from models.spec import ClusterSpec
from models.tenant import HealthInput, HealthResult
from tests.activities.provider_helpers import local_stack_nodes, node_ref, run
from tests.activities.test_host_cluster import eventually, provision
from tests.specs import small_kvm, unique_id


@pytest.fixture
def api(kube_emulator: object) -> Iterator[ApiClient]:
    config = Configuration(host=cast(Emulator, kube_emulator).url)
    config.retries = False
    with ApiClient(config) as client:
        yield client


@pytest.fixture
def provider(api: ApiClient) -> KvmProvider:
    return KvmProvider(api, simulated_nodes=local_stack_nodes(api), poll_interval=0.05)


@pytest.fixture
def tenants(kube_emulator: object) -> TenantClusters:
    emulator = cast(Emulator, kube_emulator)
    return TenantClusters(plain_http_factory(lambda s: emulator.tenant_url(s.id)), poll_interval=0.05)


@pytest.fixture
def env() -> ActivityEnvironment:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, start_to_close_timeout=timedelta(minutes=10))
    return environment


def observe(env: ActivityEnvironment, provider: KvmProvider, tenants: TenantClusters, spec: ClusterSpec) -> Any:
    """What the entity does at each check: one call per backend, judged by ``unhealthy_nodes``."""
    nodes = spec.node_names()
    machines: NodesResult = run(env, provider.list_nodes, ClusterRef(spec=spec))
    tenant: HealthResult = run(env, tenants.check_health, HealthInput(spec=spec, expected_nodes=nodes))
    assert tenant.api_reachable, tenant.api_detail
    return observed_unhealthy(nodes, machines, tenant)


def set_ready(emulator: Emulator, cluster_id: str, node: str, ready: bool) -> None:
    """What ``kubectl patch node NODE --subresource=status`` sends: a merge patch of nodes/NODE/status."""
    condition = {"type": "Ready", "status": "True" if ready else "False", "reason": "TestSaysSo", "message": "test"}
    with ApiClient(Configuration(host=emulator.tenant_url(cluster_id))) as tenant:
        CoreV1Api(tenant).patch_node_status(
            node, {"status": {"conditions": [condition]}}, _content_type="application/merge-patch+json"
        )


def test_kvm_node_health_notready_and_scaled_to_zero(
    env: ActivityEnvironment, provider: KvmProvider, tenants: TenantClusters, api: ApiClient, kube_emulator: object
) -> None:
    emulator = cast(Emulator, kube_emulator)
    spec = small_kvm(id=unique_id("nh"))
    provision(env, provider, CoreV1Api(api), spec)
    eventually(lambda: observe(env, provider, tenants, spec) == {} or None, what="every node registered Ready")

    set_ready(emulator, spec.id, "worker-0", False)
    AppsV1Api(api).patch_namespaced_deployment_scale("worker-1", kvm_namespace(spec.id), {"spec": {"replicas": 0}})

    def both_seen() -> dict[str, str] | None:
        found: dict[str, str] = observe(env, provider, tenants, spec)
        return found if sorted(found) == ["worker-0", "worker-1"] and "spec.replicas=0" in found["worker-1"] else None

    found = eventually(both_seen, what="worker-0 NotReady and worker-1 scaled to 0")
    assert found["worker-0"] == "tenant API: Ready=False TestSaysSo: test"
    assert found["worker-1"].startswith("VM/instance: spec.replicas=0")
    assert observe(env, provider, tenants, spec) == found  # twice: the same answer

    # the hand-set condition stays while the local stack works on other nodes (a drift repair of worker-1)
    run(env, provider.ensure_node, node_ref(spec, "worker-1"))
    eventually(lambda: "worker-1" not in observe(env, provider, tenants, spec) or None, what="worker-1 back")
    assert observe(env, provider, tenants, spec) == {"worker-0": "tenant API: Ready=False TestSaysSo: test"}

    set_ready(emulator, spec.id, "worker-0", True)  # cleared
    assert observe(env, provider, tenants, spec) == {}
