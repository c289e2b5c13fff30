"""The local stack's stand-in for kubelets joining tenant clusters: one hook for both providers.

Nothing real boots on the local stack, so nothing would ever join a tenant API. Both providers
call the same hook (``LocalStackNodes``, the provider contract's ``SimulatedNodes``) when a node is
ensured or removed; what stands in for the kubelet depends on what the provider made:

- KVM: the node's host Deployment gets the host API emulator's annotations, so the emulator
  registers the tenant Node once the Deployment is available (and, for workers, a few workload
  pods to drain), following the VM as a kubelet would;
- AWS: moto runs no instances, so ``SimulatedKubelets`` registers the Node (Ready, at its version)
  in the emulator's tenant cluster directly, and removes it with the instance.

The worker wires it in only when ``TENANTCTL_KUBE_SIMULATE_TENANT_NODES`` is on (the local stack);
production objects never carry the emulator's annotations.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from activities.common.kube_rest import DEPLOYMENTS, MERGE_PATCH, KubeRest
from activities.nodes.bootstrap import NODE_ROLE_LABEL
from activities.providers.contract import HostObjectMetadata
from devstack.kube_emulator import KUBELET_VERSION, TENANT_NODE, TENANT_PODS
from models.naming import kvm_namespace, node_role
from models.spec import ClusterSpec, Provider

log = logging.getLogger(__name__)

WORKLOAD_PODS = 3
SIMULATED_MESSAGE = "simulated kubelet (local stack)"
"""Pods the emulator places on each simulated KVM worker, so upgrades have something to drain."""


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
            "metadata": {"name": node, "labels": {NODE_ROLE_LABEL: node_role(node)}},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": SIMULATED_MESSAGE,
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
            status = body["status"]
            if _foreign_not_ready(core, node):
                # Someone (a test, 'kubectl patch node --subresource=status') made the node NotReady:
                # that stays until they clear it; only the version follows the instance.
                status = {"nodeInfo": status["nodeInfo"]}
            core.patch_node_status(node, {"status": status})
        log.info("simulated kubelet of %s/%s registered at v%s", cluster_id, node, version)


def _foreign_not_ready(core: k8s.CoreV1Api, node: str) -> bool:
    """Whether the Node's Ready condition is not True and was set by someone else than this stand-in."""
    response: Any = core.read_node(node, _preload_content=False)
    try:
        live = json.loads(response.data)
    finally:
        response.release_conn()
    for condition in (live.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") != "True" and condition.get("message") != SIMULATED_MESSAGE)
    return False


class LocalStackNodes:
    """``SimulatedNodes`` for both providers (see the module docstring)."""

    def __init__(
        self, host_apps: k8s.AppsV1Api, kubelets: SimulatedKubelets, workload_pods: int = WORKLOAD_PODS
    ) -> None:
        self.host = KubeRest(host_apps.api_client)  # JSON in and out (activities/common/kube_rest.py)
        self.kubelets = kubelets
        self.workload_pods = workload_pods

    def vm_metadata(self, spec: ClusterSpec, node: str, version: str) -> HostObjectMetadata:
        """On KVM, the emulator's annotations (and the role label) on the node's Deployment."""
        if spec.provider is not Provider.KVM:
            return HostObjectMetadata()  # AWS: the Node is registered directly, nothing is read from EC2
        role = node_role(node)
        annotations = {TENANT_NODE: f"{spec.id}/{node}", KUBELET_VERSION: f"v{version}"}
        if role == "worker" and self.workload_pods > 0:
            annotations[TENANT_PODS] = str(self.workload_pods)
        return HostObjectMetadata(annotations=annotations, labels={NODE_ROLE_LABEL: role})

    def node_ensured(self, spec: ClusterSpec, node: str, version: str, vm: dict[str, Any] | None = None) -> None:
        if spec.provider is Provider.KVM:
            self._annotate_vm(spec, node, version, vm)
        else:
            self.kubelets(spec.id, node, version)

    def node_removed(self, spec: ClusterSpec, node: str) -> None:
        if spec.provider is not Provider.KVM:  # on KVM the emulator drops the Node with its Deployment
            self.kubelets(spec.id, node, None)

    def _annotate_vm(self, spec: ClusterSpec, node: str, version: str, vm: dict[str, Any] | None) -> None:
        """The emulator's annotations on the node's Deployment; written only when they differ.

        ``vm`` is the Deployment as the provider left it (``KvmProvider`` writes ``vm_metadata``
        with it, so this writes nothing then); without it, it is read."""
        wanted = self.vm_metadata(spec, node, version)
        annotations, labels = wanted.annotations, wanted.labels
        namespace = kvm_namespace(spec.id)
        meta = (vm or self.host.read(DEPLOYMENTS, namespace, node))["metadata"]
        have_annotations, have_labels = meta.get("annotations") or {}, meta.get("labels") or {}
        if all(have_annotations.get(k) == v for k, v in annotations.items()) and all(
            have_labels.get(k) == v for k, v in labels.items()
        ):
            return
        patch = {"metadata": {"annotations": annotations, "labels": labels}}
        self.host.patch(DEPLOYMENTS, namespace, node, patch, content_type=MERGE_PATCH)
        log.info("simulated kubelet of %s/%s follows its VM at v%s", spec.id, node, version)
