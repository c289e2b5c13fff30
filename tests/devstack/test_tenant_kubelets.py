"""Simulated kubelets register AWS nodes in the emulator's tenant API (real emulator over HTTP)."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from devstack.tenant_kubelets import SimulatedKubelets
from tests.specs import unique_id


def test_nodes_join_follow_versions_and_leave(kube_emulator: Any) -> None:
    cluster_id = unique_id("aws")
    kubelets = SimulatedKubelets(kube_emulator.tenant_url)
    configuration = k8s.Configuration()
    configuration.host = kube_emulator.tenant_url(cluster_id)
    core = k8s.CoreV1Api(k8s.ApiClient(configuration))

    kubelets(cluster_id, "worker-0", "1.32.4")
    kubelets(cluster_id, "worker-0", "1.32.4")  # twice = once
    node = core.read_node("worker-0")
    assert node.status.node_info.kubelet_version == "v1.32.4"
    assert [(c.type, c.status) for c in node.status.conditions] == [("Ready", "True")]
    assert node.metadata.labels["node.tenantctl.io/role"] == "worker"
    assert [n.metadata.name for n in core.list_node().items] == ["worker-0"]

    kubelets(cluster_id, "worker-0", "1.33.0")
    assert core.read_node("worker-0").status.node_info.kubelet_version == "v1.33.0"

    kubelets(cluster_id, "worker-0", None)
    kubelets(cluster_id, "worker-0", None)  # already gone: fine
    assert core.list_node().items == []
