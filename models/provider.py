"""The contract every infrastructure provider (KVM-in-Kubernetes, AWS) fulfils.

Workflows are written once against these operations and call them by name,
``<provider>.<operation>`` (``provider_activity``); each provider implements every one of them
(``activities.providers.contract``, which derives the registered names from this enum). Inputs and
results are shared so the same runbook drives both.
Ordering follows operatorkit: resources are ensured in ``CREATE_ORDER`` and removed in reverse.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import Field

from models.base import FrozenModel
from models.naming import node_role
from models.spec import ClusterSpec, Provider


class ProviderOp(StrEnum):
    ENSURE_FOUNDATION = "ensure_foundation"
    """Per-cluster isolation and plumbing: KVM namespace + NetworkPolicy; AWS VPC, subnets, IAM."""
    ENSURE_FOUNDATION_ABSENT = "ensure_foundation_absent"
    ENSURE_ENDPOINT = "ensure_endpoint"
    """How the tenant API is reached: KVM Services + Ingress; AWS NLB + Route53."""
    ENSURE_ENDPOINT_ABSENT = "ensure_endpoint_absent"
    ENSURE_NODE = "ensure_node"
    """One node (VM pod, or EC2 instance) at a version, with its cloud-config."""
    ENSURE_NODE_ABSENT = "ensure_node_absent"
    WAIT_NODES_READY = "wait_nodes_ready"
    """Heartbeating wait until the given nodes are available."""
    RESTART_NODE = "restart_node"
    """Roll one node so it loads new certificates (rotation)."""
    LIST_NODES = "list_nodes"
    """The nodes that exist for the cluster, with their versions (upgrade resume, teardown)."""
    LIST_RESOURCES = "list_resources"
    """Everything labelled or tagged with the cluster id (teardown verification)."""
    OBSERVE = "observe"
    """Drift check: list by label/tag, diff against the spec inside the activity (``DriftReport``)."""


def provider_activity(provider: Provider | str, op: ProviderOp) -> str:
    """Activity name of ``op`` for ``provider``, e.g. ``kvm.ensure_node``."""
    return f"{Provider(provider).value}.{op.value}"


class ClusterRef(FrozenModel):
    """Input of cluster-wide provider operations: the whole spec (names derive from its id)."""

    spec: ClusterSpec


class NodeRef(FrozenModel):
    """Input of per-node provider operations."""

    spec: ClusterSpec
    node: str = Field(description="e.g. 'master-0', 'worker-3'")
    kubernetes_version: str = Field(description="the version this node should run")
    restart_token: str = Field(default="", description="changes force a roll (e.g. new cert serials)")

    @property
    def role(self) -> str:
        return node_role(self.node)


class WaitNodesInput(FrozenModel):
    spec: ClusterSpec
    nodes: list[str]
    timeout: timedelta = Field(description="give up (permanently) after this long and say which nodes")
    kubernetes_version: str | None = Field(default=None, description="require nodes to run this version")


class ResourceChange(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    ABSENT = "absent"


class ResourceOutcome(FrozenModel):
    kind: str
    name: str
    change: ResourceChange


class EnsureResult(FrozenModel):
    """What an ensure_* did: for idempotency tests and the teardown report."""

    outcomes: list[ResourceOutcome] = Field(default_factory=list)

    def count(self, change: ResourceChange) -> int:
        return sum(1 for o in self.outcomes if o.change is change)


class NodeObservation(FrozenModel):
    name: str
    role: str
    kubernetes_version: str
    ready: bool
    detail: str = ""


class NodesResult(FrozenModel):
    nodes: list[NodeObservation] = Field(default_factory=list)


class ResourceList(FrozenModel):
    """Resources still carrying the cluster's label or tag, as 'kind/name' strings."""

    resources: list[str] = Field(default_factory=list)
