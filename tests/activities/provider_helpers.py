"""Helpers shared by the provider activity tests (KVM and AWS): the contract is one, so are these."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from kubernetes.client import ApiClient, AppsV1Api
from temporalio.testing import ActivityEnvironment

from devstack.tenant_kubelets import LocalStackNodes, SimulatedKubelets
from models.provider import EnsureResult, NodeRef, ResourceChange, WaitNodesInput
from models.spec import ClusterSpec

T = TypeVar("T")


def run(env: ActivityEnvironment, fn: Callable[[Any], T], arg: Any) -> T:
    return env.run(fn, arg)


def local_stack_nodes(host: ApiClient) -> LocalStackNodes:
    """The local stack's hook, as the worker wires it, for the emulator ``host`` points at."""
    url = host.configuration.host.rstrip("/")
    return LocalStackNodes(AppsV1Api(host), SimulatedKubelets(lambda cluster_id: f"{url}/tenants/{cluster_id}"))


def changes(result: EnsureResult) -> dict[str, ResourceChange]:
    return {f"{o.kind}/{o.name}": o.change for o in result.outcomes}


def node_ref(spec: ClusterSpec, node: str, version: str | None = None, token: str = "") -> NodeRef:
    return NodeRef(spec=spec, node=node, kubernetes_version=version or spec.kubernetes_version, restart_token=token)


def wait_input(
    spec: ClusterSpec, nodes: list[str] | None = None, timeout: float = 20, version: str | None = None
) -> WaitNodesInput:
    return WaitNodesInput(
        spec=spec, nodes=nodes or spec.node_names(), timeout=timedelta(seconds=timeout), kubernetes_version=version
    )
