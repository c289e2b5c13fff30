"""Deterministic names of a cluster's objects, shared by activities, workflows and tests."""

from __future__ import annotations

CLUSTER_LABEL = "tenantctl.io/cluster"
ROLE_LABEL = "tenantctl.io/role"
NODE_LABEL = "tenantctl.io/node"
COMPONENT_LABEL = "tenantctl.io/component"
VERSION_LABEL = "tenantctl.io/kubernetes-version"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tenantctl"


def entity_workflow_id(cluster_id: str) -> str:
    return f"cluster/{cluster_id}"


def operation_workflow_id(cluster_id: str, kind: str, sequence: int) -> str:
    return f"cluster/{cluster_id}/{kind}/{sequence}"


def rotation_schedule_id(cluster_id: str) -> str:
    return f"cert-rotation/{cluster_id}"


def kvm_namespace(cluster_id: str) -> str:
    """Host namespace holding one tenant cluster (prefixed, so an id never collides with kube-system)."""
    return f"tenant-{cluster_id}"


def certificate_secret(name: str) -> str:
    """Host Secret holding one certificate's key pair, e.g. ``cert-apiserver``."""
    return f"cert-{name}"


def aws_secret_name(cluster_id: str, name: str) -> str:
    """Secrets Manager entry holding one certificate's key pair."""
    return f"tenantctl/{cluster_id}/{name}"


def node_role(node: str) -> str:
    """``worker-3`` -> ``worker``."""
    return node.rsplit("-", 1)[0]


def node_order(node: str) -> tuple[int, int, str]:
    """Masters first (they hold etcd quorum and the API), then workers, each by index."""
    role, _, index = node.rpartition("-")
    return (0 if role == "master" else 1, int(index) if index.isdigit() else 0, node)
