"""Tenant virtual clusters under /tenants/<name>: own stores, nodes, eviction vs PDBs, node registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devstack.kube_emulator import KUBELET_VERSION, NEVER_READY, TENANT_NODE, TENANT_PODS, Emulator


@pytest.fixture
def tenant(emulator: Emulator, tmp_path: Path, kit: Any) -> Any:
    name = kit.unique("tenant")
    with kit.tenant_client(emulator, name, tmp_path) as api:
        yield name, client.CoreV1Api(api)


def test_tenants_are_separate_clusters(emulator: Emulator, core: client.CoreV1Api, tmp_path: Path, kit: Any) -> None:
    with (
        kit.tenant_client(emulator, "alpha", tmp_path) as a_api,
        kit.tenant_client(emulator, "beta", tmp_path) as b_api,
    ):
        assert a_api.configuration.host == f"{emulator.url}/tenants/alpha"
        a, b = client.CoreV1Api(a_api), client.CoreV1Api(b_api)
        assert client.CoreApi(a_api).get_api_versions().versions == ["v1"]
        assert "apps" in {g.name for g in client.ApisApi(b_api).get_api_versions().groups}
        assert {n.metadata.name for n in a.list_namespace().items} >= {"default", "kube-system"}
        a.create_namespaced_config_map("default", {"metadata": {"name": "only-in-alpha"}})
        b.create_node({"metadata": {"name": "beta-node"}})
        assert [c.metadata.name for c in a.list_namespaced_config_map("default").items] == ["only-in-alpha"]
        assert not b.list_namespaced_config_map("default").items
        assert not core.list_namespaced_config_map("default", field_selector="metadata.name=only-in-alpha").items
        assert [n.metadata.name for n in b.list_node().items] == ["beta-node"]
        assert not a.list_node().items
        assert not core.list_node(field_selector="metadata.name=beta-node").items
        _, body = kit.api_error(a.read_node, "beta-node")
        assert body["reason"] == "NotFound"


def test_node_cordon_and_status(tenant: Any) -> None:
    _, core = tenant
    core.create_node(
        {
            "metadata": {"name": "n1", "labels": {"pool": "a"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    assert core.read_node("n1").status.conditions[0].status == "True"  # nodes register with status
    cordoned = core.patch_node("n1", {"spec": {"unschedulable": True}})
    assert cordoned.spec.unschedulable is True
    assert [n.metadata.name for n in core.list_node(field_selector="spec.unschedulable=true").items] == ["n1"]
    patched = core.patch_node_status("n1", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert patched.status.conditions[0].status == "False"
    assert core.patch_node("n1", {"status": {"conditions": []}}).status.conditions[0].status == "False"


def _pods(core: client.CoreV1Api, count: int, labels: dict[str, str], ns: str = "default") -> list[str]:
    names = []
    for i in range(count):
        name = f"{labels.get('app', 'pod')}-{i}"
        core.create_namespaced_pod(
            ns,
            {
                "metadata": {"name": name, "labels": labels},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            },
        )
        names.append(name)
    return names


def _evict(core: client.CoreV1Api, name: str, ns: str = "default") -> Any:
    return core.create_namespaced_pod_eviction(
        name, ns, client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns))
    )


@pytest.mark.parametrize(
    ("budget", "allowed"),
    [
        ({"minAvailable": 2}, 1),
        ({"maxUnavailable": 1}, 1),
        ({"minAvailable": "50%"}, 1),
        ({"maxUnavailable": "50%"}, 2),
        ({"minAvailable": 3}, 0),
        ({"maxUnavailable": 0}, 0),
        ({"minAvailable": "100%"}, 0),
        ({"maxUnavailable": "0%"}, 0),
    ],
)
def test_disruptions_allowed(tenant: Any, kit: Any, budget: dict[str, Any], allowed: int) -> None:
    """Budgets are computed over the matching pods that exist now (3 healthy pods here)."""
    _, core = tenant
    policy = client.PolicyV1Api(core.api_client)
    pods = _pods(core, 3, {"app": "db"})
    policy.create_namespaced_pod_disruption_budget(
        "default", {"metadata": {"name": "db-pdb"}, "spec": {**budget, "selector": {"matchLabels": {"app": "db"}}}}
    )
    pdb = kit.wait_for(
        lambda: (
            (p := policy.read_namespaced_pod_disruption_budget("db-pdb", "default")).status.expected_pods == 3 and p
        ),
        what="pdb status",
    )
    assert (pdb.status.disruptions_allowed, pdb.status.current_healthy) == (allowed, 3)
    if allowed:
        _evict(core, pods[0])
        kit.wait_for(
            lambda: policy.read_namespaced_pod_disruption_budget("db-pdb", "default").status.expected_pods == 2,
            what="pdb status after eviction",
        )
    else:
        err, body = kit.api_error(_evict, core, pods[0])
        assert (err.status, err.reason, body["reason"]) == (429, "Too Many Requests", "TooManyRequests")


def test_eviction_refused_names_the_budget(tenant: Any, kit: Any) -> None:
    _, core = tenant
    pods = _pods(core, 3, {"app": "db"})
    client.PolicyV1Api(core.api_client).create_namespaced_pod_disruption_budget(
        "default",
        {"metadata": {"name": "db-pdb"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}},
    )
    assert _evict(core, pods[0]).kind == "Status"  # 201 with a Status Success body
    err, body = kit.api_error(_evict, core, pods[1])
    assert (err.status, err.reason, body["reason"]) == (429, "Too Many Requests", "TooManyRequests")
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": "The disruption budget db-pdb needs 2 healthy pods and has 2 currently",
        }
    ]
    remaining = [p.metadata.name for p in core.list_namespaced_pod("default", label_selector="app=db").items]
    assert remaining == pods[1:]


def test_eviction_without_budget_unhealthy_pods_and_errors(tenant: Any, kit: Any) -> None:
    _, core = tenant
    policy = client.PolicyV1Api(core.api_client)
    _pods(core, 1, {"app": "free"})
    _evict(core, "free-0")  # no PDB covers it
    _, body = kit.api_error(core.read_namespaced_pod, "free-0", "default")
    assert body["reason"] == "NotFound"
    _pods(core, 2, {"app": "tight"})
    policy.create_namespaced_pod_disruption_budget(
        "default",
        {"metadata": {"name": "tight"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "tight"}}}},
    )
    core.patch_namespaced_pod_status(
        "tight-1", "default", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    )
    kit.api_error(_evict, core, "tight-0")  # healthy pod: budget exhausted (1 healthy < 2)
    _evict(core, "tight-1")  # an unhealthy pod may always go
    err, body = kit.api_error(_evict, core, "absent")
    assert (err.status, body["reason"]) == (404, "NotFound")


def test_host_deployment_registers_tenant_node(
    emulator: Emulator, apps: client.AppsV1Api, ns: str, tmp_path: Path, kit: Any
) -> None:
    tenant = kit.unique("acme")
    annotations = {TENANT_NODE: f"{tenant}/worker-1", KUBELET_VERSION: "v1.31.4", TENANT_PODS: "2"}
    labels = {"node-role.kubernetes.io/worker": "", "topology.kubernetes.io/zone": "z1", "unrelated": "x"}
    apps.create_namespaced_deployment(ns, kit.deployment("vm-worker-1", annotations=annotations, labels=labels))
    with kit.tenant_client(emulator, tenant, tmp_path) as api:
        tcore = client.CoreV1Api(api)

        def ready_version() -> tuple[str, str] | None:
            nodes = tcore.list_node(field_selector="metadata.name=worker-1").items
            if not nodes:
                return None
            cond = {c.type: c.status for c in nodes[0].status.conditions}["Ready"]
            return cond, nodes[0].status.node_info.kubelet_version

        assert kit.wait_for(ready_version, what="node registered") == ("True", "v1.31.4")
        node = tcore.read_node("worker-1")
        assert node.metadata.labels == {
            "node-role.kubernetes.io/worker": "",
            "topology.kubernetes.io/zone": "z1",
            "kubernetes.io/hostname": "worker-1",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        pods = tcore.list_namespaced_pod("default", label_selector="app=workload").items
        assert sorted(p.metadata.name for p in pods) == ["worker-1-workload-0", "worker-1-workload-1"]
        assert {p.spec.node_name for p in pods} == {"worker-1"} and {p.status.phase for p in pods} == {"Running"}

        tcore.patch_node("worker-1", {"spec": {"unschedulable": True}})  # cordon through the tenant API
        apps.patch_namespaced_deployment(
            "vm-worker-1",
            ns,
            {
                "metadata": {"annotations": {KUBELET_VERSION: "v1.32.1"}},
                "spec": {"template": {"metadata": {"labels": {"app": "vm-worker-1", "rev": "2"}}}},
            },
        )
        assert kit.wait_for(lambda: (v := ready_version()) and v[1] == "v1.32.1" and v, what="upgrade") == (
            "True",
            "v1.32.1",
        )
        assert tcore.read_node("worker-1").spec.unschedulable is True  # kept across re-registration

        apps.patch_namespaced_deployment("vm-worker-1", ns, {"metadata": {"annotations": {NEVER_READY: "true"}}})
        assert kit.wait_for(lambda: (v := ready_version()) and v[0] == "False" and v, what="not ready")
        apps.delete_namespaced_deployment("vm-worker-1", ns)
        kit.wait_for(lambda: not tcore.list_node().items, what="node removed")
        assert not tcore.list_namespaced_pod("default", field_selector="spec.nodeName=worker-1").items


def test_never_ready_vm_never_registers(
    emulator: Emulator, apps: client.AppsV1Api, ns: str, tmp_path: Path, kit: Any
) -> None:
    tenant = kit.unique("ghost")
    apps.create_namespaced_deployment(
        ns, kit.deployment("vm-ghost", annotations={TENANT_NODE: f"{tenant}/ghost-1", NEVER_READY: "true"})
    )
    kit.wait_for(lambda: apps.read_namespaced_deployment("vm-ghost", ns).status.observed_generation)
    with kit.tenant_client(emulator, tenant, tmp_path) as api:
        assert not client.CoreV1Api(api).list_node().items


def test_tenant_kubeconfig(emulator: Emulator, tmp_path: Path, kit: Any) -> None:
    path = emulator.write_tenant_kubeconfig("kc-tenant", tmp_path / "tenant.yaml")
    with kit.client_for(path) as api:
        assert api.configuration.host == emulator.tenant_url("kc-tenant")
        status, body, _ = kit.raw(api, "GET", "/api/v1/namespaces/default")
        assert status == 200 and body["metadata"]["name"] == "default"
    status, body, _ = kit.raw(
        client.ApiClient(client.Configuration(host=emulator.url)), "GET", "/tenants/Not_Valid/api/v1/namespaces"
    )
    assert status == 404 and json.dumps(body)
