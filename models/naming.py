"""Deterministic names of a cluster's objects, shared by activities, workflows and tests.

Node names (``master-0``, ``worker-3``) are parsed here and nowhere else: ``parse_node_name`` is
the one reading of a name into its role and index.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from models.errors import InvalidInput

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


ROLES: Final = ("master", "worker")
NODE_NAME: Final = re.compile(r"^(master|worker)-(0|[1-9]\d{0,3})$")


class NodeName(NamedTuple):
    role: str
    number: int

    def __str__(self) -> str:
        return f"{self.role}-{self.number}"


def parse_node_name(node: str) -> NodeName:
    """``worker-3`` -> ``NodeName("worker", 3)``; anything else is refused, naming the node."""
    match = NODE_NAME.match(node)
    if match is None:
        raise InvalidInput(f"node '{node}' is not a node name of the form master-<n> or worker-<n>")
    return NodeName(match.group(1), int(match.group(2)))


def node_role(node: str) -> str:
    """``worker-3`` -> ``worker``."""
    return parse_node_name(node).role


def node_index(node: str) -> int:
    """``worker-3`` -> ``3``."""
    return parse_node_name(node).number


def node_order(node: str) -> tuple[int, int, str]:
    """Masters first (they hold etcd quorum and the API), then workers, each by index; a name that
    is no node name of ours (a Node someone added to the tenant cluster) sorts last."""
    match = NODE_NAME.match(node)
    if match is None:
        return (2, 0, node)
    return (0 if match.group(1) == "master" else 1, int(match.group(2)), node)
