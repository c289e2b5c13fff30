"""Node health as node auto-repair observes it on AWS: ``aws.list_nodes`` (the cluster's tagged
instances and their status checks, against moto in server mode) and ``tenant.check_health`` (the
local stack's simulated kubelets in the host API emulator's tenant API). Called twice, the same
answer; a stopped instance and a terminated one are seen, and a Ready=False condition set through
the tenant API survives the simulated kubelet of an ensure_node that starts the instance again."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import cast

import pytest
from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
from temporalio.testing import ActivityEnvironment

from activities.aws.key_pairs import SecretsManagerSink
from activities.aws.provider import AwsProvider
from activities.tenant.clusters import TenantClusters, plain_http_factory
from devstack.aws_seed import seed_amis
from devstack.kube_emulator import Emulator
from devstack.tenant_kubelets import LocalStackNodes, SimulatedKubelets
from models.node_health import observed_unhealthy
from models.provider import ClusterRef, NodesResult
from models.spec import ClusterSpec
from models.tenant import HealthInput, HealthResult
from tests.activities.provider_helpers import node_ref, run
from tests.activities.test_aws_provider import NEXT_VERSION, VERSION, clients_for, create, small_aws, teardown
from tests.activities.test_node_health_kvm import set_ready
from tests.aws_inventory import instance_ids
from worker.clients import AwsClients


@pytest.fixture(scope="module")
def aws(moto_url: str) -> AwsClients:
    clients = clients_for(moto_url)
    seed_amis(clients.client("ec2"), "tenantctl-node", [VERSION, NEXT_VERSION])  # idempotent
    return clients


@pytest.fixture
def emulator(kube_emulator: object) -> Emulator:
    return cast(Emulator, kube_emulator)


@pytest.fixture
def provider(aws: AwsClients, emulator: Emulator) -> Iterator[AwsProvider]:
    with ApiClient(Configuration(host=emulator.url)) as host:
        nodes = LocalStackNodes(AppsV1Api(host), SimulatedKubelets(emulator.tenant_url))
        yield AwsProvider(aws, simulated_nodes=nodes, poll_interval=0.02, instance_timeout=10, delete_timeout=10)


@pytest.fixture
def env() -> ActivityEnvironment:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, start_to_close_timeout=timedelta(minutes=10))
    return environment


def observe(env: ActivityEnvironment, provider: AwsProvider, tenants: TenantClusters, spec: ClusterSpec) -> object:
    nodes = spec.node_names()
    machines: NodesResult = run(env, provider.list_nodes, ClusterRef(spec=spec))
    tenant: HealthResult = run(env, tenants.check_health, HealthInput(spec=spec, expected_nodes=nodes))
    assert tenant.api_reachable, tenant.api_detail
    return observed_unhealthy(nodes, machines, tenant)


def test_aws_node_health_stopped_terminated_and_notready(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, emulator: Emulator
) -> None:
    spec = small_aws(masters={"count": 1}, workers={"count": 3, "instance_type": "m5.large"})
    tenants = TenantClusters(plain_http_factory(lambda s: emulator.tenant_url(s.id)), poll_interval=0.05)
    create(env, provider, spec)
    try:
        assert observe(env, provider, tenants, spec) == {}
        ids = instance_ids(aws, spec)
        ec2 = aws.client("ec2")
        ec2.stop_instances(InstanceIds=[ids["worker-0"]])
        ec2.terminate_instances(InstanceIds=[ids["worker-1"]])
        set_ready(emulator, spec.id, "worker-2", False)
        found = observe(env, provider, tenants, spec)
        assert found == {
            "worker-0": f"VM/instance: instance {ids['worker-0']} is stopped",
            "worker-1": "no VM/instance",
            "worker-2": "tenant API: Ready=False TestSaysSo: test",
        }, found
        assert observe(env, provider, tenants, spec) == found  # twice: the same answer

        # ensure_node starts the stopped instance; the simulated kubelet keeps worker-2's condition
        run(env, provider.ensure_node, node_ref(spec, "worker-0"))
        run(env, provider.ensure_node, node_ref(spec, "worker-2"))
        after = observe(env, provider, tenants, spec)
        assert after == {"worker-1": "no VM/instance", "worker-2": "tenant API: Ready=False TestSaysSo: test"}, after
        with ApiClient(Configuration(host=emulator.tenant_url(spec.id))) as tenant:
            node = CoreV1Api(tenant).read_node("worker-2")
        assert node.status.node_info.kubelet_version == f"v{VERSION}"
    finally:
        teardown(env, provider, SecretsManagerSink(aws.client("secretsmanager")), spec)
