"""Simulated kubelets for AWS clusters on the local stack.

On KVM the host API emulator registers a tenant Node when a node's Deployment becomes available.
moto runs no instances, so nothing would ever join an AWS cluster's tenant API; this stands in for
the kubelet: when the AWS provider has a node's instance running it registers the Node (Ready, at
its version) in the emulator's tenant cluster, and removes it with the instance. The worker wires
it in only when ``TENANTCTL_KUBE_SIMULATE_TENANT_NODES`` is on (the local stack).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from models.naming import node_role

log = logging.getLogger(__name__)


class SimulatedKubelets:
    def __init__(self, tenant_url: Callable[[str], str]) -> None:
        self.tenant_url = tenant_url

    def _core(self, cluster_id: str) -> k8s.CoreV1Api:
        configuration = k8s.Configuration()
        configuration.host = self.tenant_url(cluster_id)
        return k8s.CoreV1Api(k8s.ApiClient(configuration))

    def __call__(self, cluster_id: str, node: str, version: str | None) -> None:
        core = self._core(cluster_id)
        if version is None:
            try:
                core.delete_node(node)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            return
        now = datetime.now(UTC).isoformat()
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node, "labels": {"node.tenantctl.io/role": node_role(node)}},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "simulated kubelet (local stack)",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": f"v{version}",
                    "kubeProxyVersion": f"v{version}",
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "osImage": "tenantctl node image (simulated)",
                    "kernelVersion": "6.1.0",
                    "containerRuntimeVersion": "containerd://1.7.0",
                    "bootID": f"{cluster_id}-{node}",
                    "machineID": f"{cluster_id}-{node}",
                    "systemUUID": f"{cluster_id}-{node}",
                },
            },
        }
        try:
            core.create_node(body)  # type: ignore[arg-type]  # the client serialises plain dicts as they are
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.patch_node_status(node, {"status": body["status"]})
        log.info("simulated kubelet of %s/%s registered at v%s", cluster_id, node, version)
