"""Server-side printing (Table responses) as kubectl shows it, with and without `-o wide`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devstack.kube_emulator import KUBELET_VERSION, TENANT_NODE, Emulator

from .test_emu_kubectl import KUBECTL, SKIP_REASON, kubectl

pytestmark = pytest.mark.skipif(KUBECTL is None, reason=SKIP_REASON)


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def test_tenant_nodes_show_status_roles_version(
    emulator: Emulator, apps: client.AppsV1Api, ns: str, tmp_path: Path, kit: Any
) -> None:
    """`kubectl get nodes` against a tenant shows STATUS, ROLES (node-role labels) and the kubelet VERSION;
    `-o wide` adds INTERNAL-IP ... CONTAINER-RUNTIME."""
    tenant = kit.unique("tenant")
    labels = {"node-role.kubernetes.io/worker": ""}
    annotations = {TENANT_NODE: f"{tenant}/worker-0", KUBELET_VERSION: "v1.31.2"}
    apps.create_namespaced_deployment(ns, kit.deployment("worker-0", annotations=annotations, labels=labels))
    config = emulator.write_tenant_kubeconfig(tenant, tmp_path / "tenant.kubeconfig")
    kit.wait_for(lambda: "worker-0" in kubectl(config, "get", "nodes").stdout, what="node registered")
    rows = _rows(kubectl(config, "get", "nodes").stdout)
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows[1][:3] == ["worker-0", "Ready", "worker"] and rows[1][4] == "v1.31.2"
    wide = _rows(kubectl(config, "get", "nodes", "-o", "wide").stdout)
    assert wide[0][5:] == ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert wide[1][-1] == "containerd://1.7.24"
    kubectl(config, "cordon", "worker-0")
    assert _rows(kubectl(config, "get", "nodes").stdout)[1][1] == "Ready,SchedulingDisabled"


def test_workload_and_config_columns(
    kubeconfig: Path, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str, kit: Any
) -> None:
    """Deployments READY/UP-TO-DATE/AVAILABLE (+ CONTAINERS, IMAGES, SELECTOR wide), services TYPE/CLUSTER-IP/
    PORT(S), config maps and secrets DATA, namespaces STATUS, pods READY/STATUS/RESTARTS (+ IP, NODE wide)."""
    apps.create_namespaced_deployment(ns, kit.deployment("web", replicas=2))
    kit.wait_for(lambda: (apps.read_namespaced_deployment("web", ns).status.available_replicas or 0) == 2)
    svc = core.create_namespaced_service(
        ns, {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    )
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "sec"}, "stringData": {"k": "v"}})
    node = kit.unique("node")  # not n1: other tests select pods on n1 across namespaces
    core.create_namespaced_pod(
        ns, {"metadata": {"name": "p"}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}}
    )
    deploy = _rows(kubectl(kubeconfig, "get", "deployments", "-n", ns, "-o", "wide").stdout)
    assert deploy[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert deploy[1][:4] == ["web", "2/2", "2", "2"] and deploy[1][5:] == ["main", "nginx:1.27", "app=web"]
    service = _rows(kubectl(kubeconfig, "get", "services", "-n", ns).stdout)
    assert service[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert service[1][:5] == ["web", "ClusterIP", svc.spec.cluster_ip, "<none>", "80/TCP"]
    assert _rows(kubectl(kubeconfig, "get", "configmap", "cfg", "-n", ns).stdout)[1][:2] == ["cfg", "2"]
    assert _rows(kubectl(kubeconfig, "get", "secret", "sec", "-n", ns).stdout)[1][:3] == ["sec", "Opaque", "1"]
    assert _rows(kubectl(kubeconfig, "get", "namespace", ns).stdout)[1][:2] == [ns, "Active"]
    pod = _rows(kubectl(kubeconfig, "get", "pod", "p", "-n", ns, "-o", "wide").stdout)
    assert pod[0][:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert pod[1][:4] == ["p", "0/1", "Pending", "0"] and pod[1][6] == node


def test_ingress_columns(kubeconfig: Path, ns: str, kit: Any, api: client.ApiClient) -> None:
    """Ingresses show CLASS, HOSTS, ADDRESS and PORTS."""
    ingress = {
        "metadata": {"name": "web"},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "web.example.com"}],
            "tls": [{"hosts": ["web.example.com"]}],
        },
    }
    client.NetworkingV1Api(api).create_namespaced_ingress(ns, ingress)
    rows = _rows(kubectl(kubeconfig, "get", "ingress", "-n", ns).stdout)
    assert rows[0] == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert rows[1][:5] == ["web", "nginx", "web.example.com", "80,", "443"]
