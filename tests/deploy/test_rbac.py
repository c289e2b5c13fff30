"""The shipped ClusterRole is exactly what a KVM cluster's lifecycle asks of the host API.

The worker's activity classes (KVM provider, Kubernetes Secret sink of the PKI, the tenant API's
admin key pair reader) run a whole lifecycle against the host API emulator through a recording
proxy; the requests, mapped to RBAC (group, resource, verb) the way the API server does, must
equal the rules of deploy/components/kvm/clusterrole.yaml: a missing rule breaks a real cluster,
an extra one is privilege the worker does not use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hvac
import pytest
from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
from temporalio.testing import ActivityEnvironment

from activities.kvm.provider import KvmProvider
from activities.pki.vault import VaultPki
from activities.providers.contract import Providers
from devstack.tenant_kubelets import LocalStackNodes, SimulatedKubelets
from tests.deploy.lifecycle import kvm_lifecycle
from tests.deploy.recording_proxy import RecordingProxy, rbac_request
from tests.deploy.rendering import DEPLOY, KUBECTL, NO_KUBECTL, one, rbac_rules, render
from tests.servers import OpenBao
from tests.specs import small_kvm, unique_id

pytestmark = pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)


@pytest.fixture
def proxy(kube_emulator: Any) -> Iterator[RecordingProxy]:
    with RecordingProxy(kube_emulator.url).running() as running:
        yield running


def test_request_info_matches_the_api_servers_mapping() -> None:
    assert rbac_request("GET", "/api/v1/namespaces/tenant-a", "") == rbac_request("GET", "/api/v1/namespaces/x", "")
    namespace = rbac_request("DELETE", "/api/v1/namespaces/tenant-a", "")
    assert namespace is not None and (namespace.resource, namespace.verb) == ("namespaces", "delete")
    listed = rbac_request("GET", "/apis/apps/v1/deployments", "labelSelector=a%3Db")
    assert listed is not None and (listed.api_group, listed.verb, listed.cluster_wide) == ("apps", "list", True)
    evict = rbac_request("POST", "/api/v1/namespaces/n/pods/p/eviction", "")
    assert evict is not None and (evict.resource, evict.verb) == ("pods/eviction", "create")
    watch = rbac_request("GET", "/api/v1/namespaces/n/secrets", "watch=true")
    assert watch is not None and watch.verb == "watch"
    assert rbac_request("GET", "/apis/apps/v1", "") is None and rbac_request("GET", "/version", "") is None


def test_shipped_cluster_role_is_exactly_what_the_kvm_lifecycle_uses(
    proxy: RecordingProxy, openbao: OpenBao, kube_emulator: Any
) -> None:
    spec = small_kvm(id=unique_id("rbac"))
    config = Configuration(host=proxy.url)
    with ApiClient(config) as api:
        core, apps = CoreV1Api(api), AppsV1Api(api)
        # node registration is simulated through the proxy too (the annotation is a host API write); the
        # simulated kubelets talk to the tenant API directly, which is not the host API's RBAC
        kubelets = SimulatedKubelets(lambda cluster_id: f"{kube_emulator.url}/tenants/{cluster_id}")
        provider = KvmProvider(api, simulated_nodes=LocalStackNodes(apps, kubelets), poll_interval=0.05)
        pki = VaultPki(hvac.Client(url=openbao.addr, token=openbao.token), Providers([provider]))
        with ApiClient(Configuration(host=kube_emulator.url)) as direct:
            proxy.requests.clear()
            facts = kvm_lifecycle(ActivityEnvironment(), pki, provider, core, direct, spec, upgrade_to="1.32.5")
    # the lifecycle really ran to the end, and repaired drift of every kind on the way
    assert facts["left"].resources == []
    assert facts["repaired"] == sorted(
        ["configmap", "deployment", "ingress", "namespace", "networkpolicy", "service", "serviceaccount"]
    )
    used = {(r.api_group, r.resource, r.verb) for r in proxy.rbac_requests()}

    role = one(render("kvm"), "ClusterRole", "tenantctl-worker")
    shipped = rbac_rules(role)
    missing, extra = sorted(used - shipped), sorted(shipped - used)
    assert not missing, f"deploy/components/kvm/clusterrole.yaml misses rules the worker uses: {missing}"
    assert not extra, f"deploy/components/kvm/clusterrole.yaml grants rules the worker never uses: {extra}"


def test_cluster_role_is_bound_to_the_worker_only() -> None:
    objects = render("kvm")
    binding = one(objects, "ClusterRoleBinding", "tenantctl-worker")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "tenantctl-worker",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tenantctl-worker", "namespace": "tenantctl"}]
    account = one(objects, "ServiceAccount", "tenantctl-worker")
    assert account["metadata"]["namespace"] == "tenantctl"
    # AWS-only: the worker needs nothing of the host API, so no role is shipped at all
    aws = render("aws")
    assert not [o for o in aws if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    assert (DEPLOY / "components" / "kvm" / "clusterrole.yaml").is_file()
