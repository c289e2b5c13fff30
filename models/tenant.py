"""Inputs and results of the activities that talk to a tenant cluster's own API (``tenant.*``).

An upgrade cordons and drains nodes where their workloads live, in the tenant cluster, and judges
health there too (the host cluster only knows whether a VM's pod runs, not whether its kubelet
joined). These models carry names, versions and reasons only: never credentials.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from models.base import FrozenModel
from models.spec import ClusterSpec


class TenantNodeInput(FrozenModel):
    """One node of a tenant cluster (cordon, uncordon)."""

    spec: ClusterSpec
    node: str


class DrainInput(FrozenModel):
    spec: ClusterSpec
    node: str
    timeout: timedelta = Field(description="evictions refused this long (PodDisruptionBudgets) fail the drain")


class BlockedPod(FrozenModel):
    """A pod a drain could not evict yet, and why (the API server's words)."""

    namespace: str
    name: str
    reason: str


class DrainResult(FrozenModel):
    node: str
    node_found: bool = Field(description="False: no such node in the tenant cluster, nothing to drain")
    evicted: list[str] = Field(default_factory=list, description="'namespace/name' of the pods evicted by this call")
    skipped: list[str] = Field(default_factory=list, description="pods left alone: DaemonSet or mirror pods")


class NodeHealth(FrozenModel):
    name: str
    ready: bool
    kubelet_version: str = ""
    unschedulable: bool = False
    reason: str = Field(default="", description="why it is not ready (its Ready condition, or 'not registered')")


class HealthInput(FrozenModel):
    spec: ClusterSpec
    expected_nodes: list[str] = Field(
        default_factory=list, description="nodes that must be registered (besides every node the API lists)"
    )
    wait: timedelta = Field(
        default=timedelta(0), description="poll this long for health before answering (0: one look)"
    )


class HealthResult(FrozenModel):
    api_reachable: bool
    api_detail: str = Field(default="", description="the server's git version, or why it is unreachable")
    nodes: list[NodeHealth] = Field(default_factory=list)

    @property
    def not_ready(self) -> list[NodeHealth]:
        return [n for n in self.nodes if not n.ready]

    @property
    def healthy(self) -> bool:
        return self.api_reachable and not self.not_ready

    def describe(self) -> str:
        """One line naming what is wrong (empty when healthy)."""
        problems = [] if self.api_reachable else [f"tenant API unreachable: {self.api_detail}"]
        problems += [f"{n.name}: {n.reason}" for n in self.not_ready]
        return "; ".join(problems)


class WaitRegisteredInput(FrozenModel):
    spec: ClusterSpec
    node: str
    kubernetes_version: str = Field(description="the kubelet version the node must report")
    timeout: timedelta = Field(description="give up (permanently: NodesNotReady) after this long")
