"""Desired host-cluster objects of a KVM tenant cluster, as pure functions of its spec.

Every manifest is a plain camelCase dict, exactly what the Kubernetes API stores, so the provider
(``activities.kvm.provider``) can compare it field by field with a live object and tests can check
it without a server. Names and labels derive from the cluster id only (``models.naming``), so a
retried or resumed activity always finds what an earlier attempt created.

Layout per cluster (namespace ``tenant-<id>``)::

    Namespace       tenant-<id>                       (owner of everything below)
    NetworkPolicy   isolate-tenant                    ingress: same namespace + ingress controller
    ServiceAccount  tenant-node                       the VM pods' identity (no API token mounted)
    ConfigMap       tenant-cluster                    non-secret cluster facts
    Service         api (443 -> 6443), etcd (headless: 2379 client, 2380 peer)
    Ingress         api                               host api.<id>.<base-domain>, TLS passthrough
    ConfigMap       cloud-config-<role>-<version>     one per role and Kubernetes version
    Deployment      master-<i>, worker-<i>            one VM each: replicas 1, Recreate
    Secret          cert-<name>                       written by the PKI activities, mounted here
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

from activities.nodes.bootstrap import (
    API_PORT,
    APISERVER_PORT,
    CERTS_DIR,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    KUBELET_PORT,
    certificate_dir,
    cloud_config_document,
    dns_service_ip,
    etcd_domain,
    node_certificates,
)
from models.errors import InvalidInput
from models.naming import (
    CLUSTER_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NODE_LABEL,
    ROLE_LABEL,
    VERSION_LABEL,
    certificate_secret,
    kvm_namespace,
    node_role,
)
from models.spec import ClusterSpec, KvmSettings, MachineSize, Provider, memory_mib
from models.versions import normalize_version

Manifest = dict[str, Any]

OWNER_LABEL = "tenantctl.io/owner"
RESTART_TOKEN_ANNOTATION = "tenantctl.io/restart-token"
"""Pod template annotation: a new value rolls the VM (certificate rotation loads new key pairs)."""

NETWORK_POLICY = "isolate-tenant"
SERVICE_ACCOUNT = "tenant-node"
CLUSTER_CONFIGMAP = "tenant-cluster"
API_SERVICE = "api"
ETCD_SERVICE = "etcd"
API_INGRESS = "api"
NODE_CONTAINER = "k8s-kvm"


CLOUD_CONFIG_DIR = "/etc/tenantctl/cloud-config"
CLOUD_CONFIG_KEY = "user-data"
VM_SHUTDOWN_GRACE_SECONDS = 120
"""Time for the guest's ACPI shutdown (kubelet and etcd stop cleanly) before the pod is killed."""


# --- names and labels ------------------------------------------------------------------------------
def kvm_settings(spec: ClusterSpec) -> KvmSettings:
    if spec.provider is not Provider.KVM or spec.kvm is None:
        raise InvalidInput(f"cluster {spec.id}: provider is '{spec.provider}', the KVM provider cannot manage it")
    return spec.kvm


def cloud_config_name(role: str, version: str) -> str:
    return f"cloud-config-{role}-{normalize_version(version)}"


def node_image(spec: ClusterSpec, version: str) -> str:
    """The VM image; its tag is the Kubernetes version, so an upgrade is an image change."""
    return f"{kvm_settings(spec).image_repository}:v{normalize_version(version)}"


def cluster_labels(spec: ClusterSpec) -> dict[str, str]:
    """Labels of every object of the cluster: teardown verification lists by the first one."""
    return {CLUSTER_LABEL: spec.id, MANAGED_BY_LABEL: MANAGED_BY}


def node_labels(spec: ClusterSpec, node: str, version: str) -> dict[str, str]:
    return {
        **cluster_labels(spec),
        ROLE_LABEL: node_role(node),
        NODE_LABEL: node,
        VERSION_LABEL: normalize_version(version),
    }


def node_selector(spec: ClusterSpec, node: str) -> dict[str, str]:
    """Deployment selector: immutable, so it holds only what never changes (not the version)."""
    return {CLUSTER_LABEL: spec.id, NODE_LABEL: node}


def master_selector(spec: ClusterSpec) -> dict[str, str]:
    return {CLUSTER_LABEL: spec.id, ROLE_LABEL: "master"}


def owner_reference(namespace: str, uid: str) -> dict[str, Any]:
    """Every namespaced object is owned by the tenant Namespace: the whole cluster hangs off one object."""
    return {"apiVersion": "v1", "kind": "Namespace", "name": namespace, "uid": uid}


def _meta(spec: ClusterSpec, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": kvm_namespace(spec.id), "labels": labels or cluster_labels(spec)}


def with_owner(manifest: Manifest, namespace_uid: str) -> Manifest:
    """A copy of a namespaced manifest with the ownerReference to its tenant Namespace."""
    owned = copy.deepcopy(manifest)
    meta = owned["metadata"]
    meta["ownerReferences"] = [owner_reference(meta["namespace"], namespace_uid)]
    return owned


def with_metadata(manifest: Manifest, annotations: dict[str, str], labels: dict[str, str]) -> Manifest:
    """A copy of ``manifest`` with more annotations and labels (its own win where keys clash)."""
    added = copy.copy(manifest)
    meta = added["metadata"] = dict(manifest["metadata"])
    meta["annotations"] = {**annotations, **(meta.get("annotations") or {})}
    meta["labels"] = {**labels, **(meta.get("labels") or {})}
    return added


# --- foundation ------------------------------------------------------------------------------------
def namespace_manifest(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": kvm_namespace(spec.id),
            "labels": {**cluster_labels(spec), OWNER_LABEL: spec.owner},
        },
    }


def network_policy_manifest(spec: ClusterSpec) -> Manifest:
    """Ingress only from the tenant's own pods and the ingress controller; egress open.

    The VMs must reach image registries and the tenant's users' services on the internet, so egress
    stays open; what is isolated is other tenants (and anything else on the host) reaching in.
    """
    ingress_namespace = kvm_settings(spec).ingress_namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, NETWORK_POLICY),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {}},
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ingress_namespace}}},
                    ]
                }
            ],
            "egress": [{}],
        },
    }


def service_account_manifest(spec: ClusterSpec) -> Manifest:
    """The VM pods' own identity: host admins bind the privileged pod policy to it, not to 'default'.

    The VMs never call the host API, so no token is mounted into them.
    """
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(spec, SERVICE_ACCOUNT),
        "automountServiceAccountToken": False,
    }


def cluster_facts(spec: ClusterSpec) -> dict[str, str]:
    """Facts that do not change over the cluster's life (versions live on the nodes, not here)."""
    return {
        "cluster-id": spec.id,
        "owner": spec.owner,
        "provider": spec.provider.value,
        "api-domain": spec.api_domain,
        "cluster-domain": spec.cluster_domain,
        "etcd-domain": etcd_domain(spec),
        "pod-cidr": spec.networking.pod_cidr,
        "service-cidr": spec.networking.service_cidr,
        "api-service-ip": spec.networking.api_service_ip,
        "dns-service-ip": dns_service_ip(spec),
        "masters": str(spec.masters.count),
    }


def cluster_configmap_manifest(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, CLUSTER_CONFIGMAP),
        "data": cluster_facts(spec),
    }


# --- endpoint --------------------------------------------------------------------------------------
def api_service_manifest(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, API_SERVICE),
        "spec": {
            "type": "ClusterIP",
            "selector": master_selector(spec),
            "ports": [{"name": "https", "protocol": "TCP", "port": API_PORT, "targetPort": APISERVER_PORT}],
        },
    }


def etcd_service_manifest(spec: ClusterSpec) -> Manifest:
    """Headless: each master gets its own DNS name (pod hostname + subdomain ``etcd``).

    ``publishNotReadyAddresses``: etcd members must find each other before any is ready, or a
    cluster bootstrapping (or recovering quorum) never becomes ready at all.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, ETCD_SERVICE),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": master_selector(spec),
            "ports": [
                {"name": "client", "protocol": "TCP", "port": ETCD_CLIENT_PORT, "targetPort": ETCD_CLIENT_PORT},
                {"name": "peer", "protocol": "TCP", "port": ETCD_PEER_PORT, "targetPort": ETCD_PEER_PORT},
            ],
        },
    }


def api_ingress_manifest(spec: ClusterSpec) -> Manifest:
    """TLS passthrough: the tenant API server terminates TLS itself (clients present certificates
    that RBAC reads, which a terminating ingress would strip)."""
    kvm = kvm_settings(spec)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            **_meta(spec, API_INGRESS),
            "annotations": {
                "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
                "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
            },
        },
        "spec": {
            "ingressClassName": kvm.ingress_class,
            "tls": [{"hosts": [spec.api_domain]}],
            "rules": [
                {
                    "host": spec.api_domain,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": API_SERVICE, "port": {"number": API_PORT}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


# --- nodes -----------------------------------------------------------------------------------------
def _pool(spec: ClusterSpec, role: str) -> MachineSize:
    return spec.masters if role == "master" else spec.workers


def memory_quantity(memory: str) -> str:
    """Canonical quantity (as the API server prints it back), so a comparison never sees drift
    where there is none: 4096 MiB is ``4Gi``, 1536 MiB stays ``1536Mi``."""
    mib = memory_mib(memory)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def _anti_affinity(spec: ClusterSpec, role: str) -> dict[str, Any]:
    """Spread the cluster's VMs over host machines.

    Masters: *required* apart from each other: two masters on one host means one host failure
    loses etcd quorum, and a pending master is better than a cluster one reboot from outage.
    Everything: *preferred* apart from the cluster's other VMs; workers only prefer, because a
    tenant may run more workers than the host has machines, and an upgrade's surge worker must
    schedule even when every host already runs one of them.
    """
    spread = {
        "weight": 100,
        "podAffinityTerm": {
            "labelSelector": {"matchLabels": {CLUSTER_LABEL: spec.id}},
            "topologyKey": "kubernetes.io/hostname",
        },
    }
    affinity: dict[str, Any] = {"preferredDuringSchedulingIgnoredDuringExecution": [spread]}
    if role == "master":
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = [
            {"labelSelector": {"matchLabels": master_selector(spec)}, "topologyKey": "kubernetes.io/hostname"}
        ]
    return {"podAntiAffinity": affinity}


def node_deployment_manifest(
    spec: ClusterSpec,
    node: str,
    version: str,
    restart_token: str = "",
) -> Manifest:
    """One VM: a Deployment of one pod running the ``k8s-kvm`` image at the node's version.

    ``Recreate``: the old pod is gone before the new one starts, so a VM never runs twice (two
    kubelets with one name, or two etcd members with one identity, would corrupt the tenant).
    An empty ``restart_token`` states no opinion: the live token (from an earlier rotation) stays.
    """
    role = node_role(node)
    version = normalize_version(version)
    pool = _pool(spec, role)
    if pool.cpu is None or pool.memory is None:
        raise InvalidInput(f"{role}s: provider kvm needs cpu and memory for each VM")
    labels = node_labels(spec, node, version)
    memory = memory_quantity(pool.memory)
    resources = {"cpu": str(pool.cpu), "memory": memory}
    certificates = node_certificates(spec, node)

    volumes: list[dict[str, Any]] = [
        {"name": "cloud-config", "configMap": {"name": cloud_config_name(role, version), "defaultMode": 0o444}}
    ]
    mounts: list[dict[str, Any]] = [{"name": "cloud-config", "mountPath": CLOUD_CONFIG_DIR, "readOnly": True}]
    for request in certificates:
        directory = certificate_dir(request.name, node)
        volumes.append(
            {
                "name": f"cert-{directory}",
                "secret": {"secretName": certificate_secret(request.name), "defaultMode": 0o400},
            }
        )
        mounts.append({"name": f"cert-{directory}", "mountPath": f"{CERTS_DIR}/{directory}", "readOnly": True})

    ports = [{"name": "kubelet", "containerPort": KUBELET_PORT, "protocol": "TCP"}]
    if role == "master":
        ports = [
            {"name": "apiserver", "containerPort": APISERVER_PORT, "protocol": "TCP"},
            {"name": "etcd-client", "containerPort": ETCD_CLIENT_PORT, "protocol": "TCP"},
            {"name": "etcd-peer", "containerPort": ETCD_PEER_PORT, "protocol": "TCP"},
            *ports,
        ]
    # Ready = the guest's API server (masters) or kubelet (workers) accepts connections.
    probe_port = APISERVER_PORT if role == "master" else KUBELET_PORT
    container = {
        "name": NODE_CONTAINER,
        "image": node_image(spec, version),
        "imagePullPolicy": "IfNotPresent",  # the tag is a version: immutable
        "env": [
            {"name": "CLUSTER_ID", "value": spec.id},
            {"name": "NODE_NAME", "value": node},
            {"name": "ROLE", "value": role},
            {"name": "KUBERNETES_VERSION", "value": version},
            {"name": "CORES", "value": str(pool.cpu)},
            {"name": "MEMORY", "value": str(memory_mib(pool.memory))},
            {"name": "CLOUD_CONFIG_PATH", "value": f"{CLOUD_CONFIG_DIR}/{CLOUD_CONFIG_KEY}"},
            {"name": "SHARED_DIRS", "value": CERTS_DIR},
        ],
        "ports": ports,
        # requests == limits: Guaranteed QoS, so the host never squeezes a VM's CPUs or memory.
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": {"privileged": True},  # /dev/kvm, tap devices and bridges for the VM
        "readinessProbe": {
            "tcpSocket": {"port": probe_port},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # the host's service variables mean nothing inside the VM
        "hostname": node,
        "terminationGracePeriodSeconds": VM_SHUTDOWN_GRACE_SECONDS,
        "affinity": _anti_affinity(spec, role),
        "containers": [container],
        "volumes": volumes,
    }
    if role == "master":
        pod_spec["subdomain"] = ETCD_SERVICE  # <node>.etcd.<namespace>.svc resolves to this VM
    template_meta: dict[str, Any] = {"labels": dict(labels)}
    if restart_token:
        template_meta["annotations"] = {RESTART_TOKEN_ANNOTATION: restart_token}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, node, dict(labels)),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": node_selector(spec, node)},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


# --- cloud-config ----------------------------------------------------------------------------------
CLOUD_CONFIGS_KEPT = 512
"""Rendered cloud-configs kept in the worker: two roles (and during an upgrade two versions) of the
clusters being created, upgraded or drift-checked at about the same time."""
_RENDERING = threading.Lock()
"""A create ensures all its nodes at once: without it each of them would miss the cache and render.
Rendering is pure Python, so under the GIL one render at a time costs no throughput."""


def cloud_config(spec: ClusterSpec, role: str, version: str) -> str:
    """The node bootstrap's cloud-config (``activities.nodes.bootstrap``) for ``role`` at ``version``,
    with the key pairs the pod mounts from its Secrets shared into the guest over virtio-9p.

    Every node of a role renders the same text, and rendering (YAML) is most of what an
    ``ensure_node`` or a drift check spends outside its HTTP calls: the text is kept, keyed by
    the whole spec, so a spec that changes in any field renders afresh.
    """
    key = (spec.model_dump_json(), role, normalize_version(version))
    with _RENDERING:
        return _rendered_cloud_config(*key)


@functools.lru_cache(maxsize=CLOUD_CONFIGS_KEPT)
def _rendered_cloud_config(spec_json: str, role: str, version: str) -> str:
    spec = ClusterSpec.model_validate_json(spec_json)
    document = cloud_config_document(spec, role, version)
    document.mounts = [["certs", CERTS_DIR, "9p", "trans=virtio,version=9p2000.L,ro", "0", "0"]]
    header = f"tenantctl: {role} nodes of cluster {spec.id}, Kubernetes v{version}, API {spec.api_domain}"
    return document.render(header)


def cloud_config_manifest(spec: ClusterSpec, role: str, version: str) -> Manifest:
    version = normalize_version(version)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            spec, cloud_config_name(role, version), {**cluster_labels(spec), ROLE_LABEL: role, VERSION_LABEL: version}
        ),
        "data": {CLOUD_CONFIG_KEY: cloud_config(spec, role, version)},
    }
