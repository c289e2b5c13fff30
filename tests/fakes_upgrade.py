"""An in-memory fleet for rolling-upgrade logic tests on the time-skipping server.

``FakeFleet`` extends ``FakeBackends`` with what an upgrade touches: the host's node VMs (name ->
version, as ``kvm.*`` sees them) and the tenant cluster's Nodes (version, Ready, cordoned) and
workload pods (as ``tenant.*`` sees them). A VM registers its Node when it comes up, like the
host API emulator does; nodes in ``never_ready`` never do (the emulator's never-ready annotation),
nodes in ``break_on_roll`` join them when next rolled or created (a new version that does not
come up), drains of nodes in ``blocked_drains`` are refused until their deadline (a PodDisruptionBudget),
and ``holds`` make one activity on one node wait until the test lets it go.

The real activities are tested against the emulator in tests/activities/test_tenant_cluster.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.errors import DrainBlocked, NodesNotReady
from models.provider import (
    ClusterRef,
    EnsureResult,
    NodeObservation,
    NodeRef,
    NodesResult,
    ResourceChange,
    ResourceOutcome,
    WaitNodesInput,
)
from models.tenant import (
    DrainInput,
    DrainResult,
    HealthInput,
    HealthResult,
    NodeHealth,
    TenantNodeInput,
    WaitRegisteredInput,
)
from tests.fakes import FakeBackends, typed_activity

HOLD_TIMEOUT_SECONDS = 60


@dataclass
class TenantNode:
    version: str
    ready: bool = True
    unschedulable: bool = False


@dataclass
class FakeFleet(FakeBackends):
    tenant: dict[str, TenantNode] = field(default_factory=dict)
    pods: dict[str, str] = field(default_factory=dict)  # pod -> node
    workload_pods: int = 3
    never_ready: set[str] = field(default_factory=set)
    break_on_roll: set[str] = field(default_factory=set)  # join never_ready when next (re)created or rolled
    blocked_drains: set[str] = field(default_factory=set)
    drain_refusals: dict[str, int] = field(default_factory=dict)  # node -> drains refused before one succeeds
    holds: dict[str, threading.Event] = field(default_factory=dict)  # "<activity>:<node>" -> released when set
    reached: dict[str, threading.Event] = field(default_factory=dict)  # "<activity>:<node>" -> set when it starts
    evicted: list[str] = field(default_factory=list)

    # --- helpers for tests ------------------------------------------------------------------------
    def hold(self, key: str) -> threading.Event:
        """Make the next activity call ``key`` ('tenant.drain_node:master-0') wait until the event is set."""
        self.holds[key] = threading.Event()
        self.reached[key] = threading.Event()
        return self.holds[key]

    def node_calls(self, *names: str) -> list[tuple[str, str]]:
        """(activity, detail) of the per-node calls, in order (optionally only some activities)."""
        return [(n, d) for n, d in self.calls if not names or n in names]

    def host_versions(self) -> dict[str, str]:
        return dict(sorted(self.node_versions.items()))

    def tenant_versions(self) -> dict[str, str]:
        return {name: node.version for name, node in sorted(self.tenant.items())}

    # --- the simulated world ----------------------------------------------------------------------
    def _wait_hold(self, key: str) -> None:
        """Holds are one-shot: the first call waits, later calls (a retry, a rollback) go through."""
        with self.lock:
            hold = self.holds.pop(key, None)
        if hold is None:
            return
        self.reached[key].set()
        if not hold.wait(HOLD_TIMEOUT_SECONDS):
            raise RuntimeError(f"test never released {key}")

    def _settle(self, node: str) -> None:
        """Bring the tenant Node in line with its VM: the kubelet registers once the VM runs."""
        with self.lock:
            version = self.node_versions.get(node)
            if version is None:
                return
            if node in self.never_ready:
                if node in self.tenant:
                    self.tenant[node].ready = False
                return
            live = self.tenant.get(node)
            if live is None:
                self.tenant[node] = TenantNode(version=version)
                if node.startswith("worker-"):
                    for i in range(self.workload_pods):
                        self.pods[f"{node}-workload-{i}"] = node
            else:
                live.version, live.ready = version, True

    def _health(self, node: str) -> NodeHealth:
        live = self.tenant.get(node)
        if live is None:
            return NodeHealth(name=node, ready=False, reason="not registered in the tenant cluster")
        return NodeHealth(
            name=node,
            ready=live.ready,
            kubelet_version=f"v{live.version}",
            unschedulable=live.unschedulable,
            reason="" if live.ready else "Ready=False KubeletNotReady: the host deployment is not available",
        )

    def activities(self, provider: str = "kvm") -> list[Callable[..., Any]]:
        base = {_name(fn): fn for fn in super().activities(provider)}
        backend = self

        def defn(name: str, arg_type: type, result_type: type) -> Callable[[Callable[..., Any]], Any]:
            def wrap(fn: Callable[..., Any]) -> Any:
                base[name] = typed_activity(name, arg_type, result_type)(fn)
                return base[name]

            return wrap

        @defn(f"{provider}.ensure_node", NodeRef, EnsureResult)
        def ensure_node(arg: NodeRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_node", f"{arg.node}@{arg.kubernetes_version}")
            backend._wait_hold(f"{provider}.ensure_node:{arg.node}")
            with backend.lock:
                if arg.node in backend.break_on_roll:
                    backend.never_ready.add(arg.node)
                before = backend.node_versions.get(arg.node)
                backend.node_versions[arg.node] = arg.kubernetes_version
                backend.objects.add(f"deployment/{arg.node}")
            backend._settle(arg.node)
            change = (
                ResourceChange.CREATED
                if before is None
                else ResourceChange.UNCHANGED
                if before == arg.kubernetes_version
                else ResourceChange.UPDATED
            )
            return EnsureResult(outcomes=[ResourceOutcome(kind="deployment", name=arg.node, change=change)])

        @defn(f"{provider}.ensure_node_absent", NodeRef, EnsureResult)
        def ensure_node_absent(arg: NodeRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_node_absent", arg.node)
            with backend.lock:
                existed = backend.node_versions.pop(arg.node, None) is not None
                backend.objects.discard(f"deployment/{arg.node}")
                backend.tenant.pop(arg.node, None)
                for pod in [p for p, n in backend.pods.items() if n == arg.node]:
                    del backend.pods[pod]
            change = ResourceChange.DELETED if existed else ResourceChange.ABSENT
            return EnsureResult(outcomes=[ResourceOutcome(kind="deployment", name=arg.node, change=change)])

        @defn(f"{provider}.wait_nodes_ready", WaitNodesInput, NodesResult)
        def wait_nodes_ready(arg: WaitNodesInput) -> NodesResult:
            backend._record(f"{provider}.wait_nodes_ready", ",".join(arg.nodes))
            for node in arg.nodes:
                backend._wait_hold(f"{provider}.wait_nodes_ready:{node}")
            pending = []
            for node in arg.nodes:
                backend._settle(node)
                version = backend.node_versions.get(node)
                if version is None:
                    pending.append(f"{node}: deployment {node} does not exist")
                elif node in backend.never_ready:
                    pending.append(f"{node}: Available=False MinimumReplicasUnavailable")
                elif arg.kubernetes_version and version != arg.kubernetes_version:
                    pending.append(f"{node}: runs Kubernetes {version}, not {arg.kubernetes_version}")
            if pending:
                raise ApplicationError(
                    f"{len(pending)} of {len(arg.nodes)} nodes of {arg.spec.id} not ready after {arg.timeout}: "
                    + "; ".join(pending),
                    [p.split(":", 1)[0] for p in pending],
                    type=NodesNotReady.__name__,
                    non_retryable=True,
                )
            return NodesResult(
                nodes=[
                    NodeObservation(
                        name=n, role=n.rsplit("-", 1)[0], kubernetes_version=backend.node_versions[n], ready=True
                    )
                    for n in arg.nodes
                ]
            )

        @defn(f"{provider}.list_nodes", ClusterRef, NodesResult)
        def list_nodes(arg: ClusterRef) -> NodesResult:
            backend._record(f"{provider}.list_nodes")
            with backend.lock:
                versions = dict(backend.node_versions)
            return NodesResult(
                nodes=[
                    NodeObservation(
                        name=n,
                        role=n.rsplit("-", 1)[0],
                        kubernetes_version=v,
                        ready=n not in backend.never_ready,
                        detail="" if n not in backend.never_ready else "Available=False",
                    )
                    for n, v in sorted(versions.items())
                ]
            )

        def set_unschedulable(name: str, node: str, value: bool) -> EnsureResult:
            backend._record(name, node)
            with backend.lock:
                live = backend.tenant.get(node)
                if live is None:
                    change = ResourceChange.ABSENT
                elif live.unschedulable is value:
                    change = ResourceChange.UNCHANGED
                else:
                    live.unschedulable, change = value, ResourceChange.UPDATED
            return EnsureResult(outcomes=[ResourceOutcome(kind="node", name=node, change=change)])

        @defn("tenant.remove_node", TenantNodeInput, EnsureResult)
        def remove_node(arg: TenantNodeInput) -> EnsureResult:
            backend._record("tenant.remove_node", arg.node)
            with backend.lock:
                existed = backend.tenant.pop(arg.node, None) is not None
            change = ResourceChange.DELETED if existed else ResourceChange.ABSENT
            return EnsureResult(outcomes=[ResourceOutcome(kind="node", name=arg.node, change=change)])

        @defn("tenant.cordon_node", TenantNodeInput, EnsureResult)
        def cordon_node(arg: TenantNodeInput) -> EnsureResult:
            return set_unschedulable("tenant.cordon_node", arg.node, True)

        @defn("tenant.uncordon_node", TenantNodeInput, EnsureResult)
        def uncordon_node(arg: TenantNodeInput) -> EnsureResult:
            return set_unschedulable("tenant.uncordon_node", arg.node, False)

        @defn("tenant.drain_node", DrainInput, DrainResult)
        def drain_node(arg: DrainInput) -> DrainResult:
            backend._record("tenant.drain_node", arg.node)
            backend._wait_hold(f"tenant.drain_node:{arg.node}")
            with backend.lock:
                live = backend.tenant.get(arg.node)
                if live is None:
                    return DrainResult(node=arg.node, node_found=False)
                live.unschedulable = True
                on_node = sorted(p for p, n in backend.pods.items() if n == arg.node)
                refusals = backend.drain_refusals.get(arg.node, 0)
                if refusals:
                    backend.drain_refusals[arg.node] = refusals - 1
                if (arg.node in backend.blocked_drains or refusals) and on_node:
                    raise ApplicationError(
                        f"drain of node {arg.node} of {arg.spec.id} did not finish within {arg.timeout}: "
                        f"{len(on_node)} pods left (default/{on_node[0]}: The disruption budget workload needs "
                        "3 healthy pods and has 3 currently)",
                        [arg.node],
                        type=DrainBlocked.__name__,
                        non_retryable=True,
                    )
                for pod in on_node:
                    del backend.pods[pod]
                    backend.evicted.append(pod)
            return DrainResult(node=arg.node, node_found=True, evicted=[f"default/{p}" for p in on_node])

        @defn("tenant.check_health", HealthInput, HealthResult)
        def check_health(arg: HealthInput) -> HealthResult:
            backend._record("tenant.check_health", ",".join(arg.expected_nodes))
            for node in list(backend.node_versions):
                backend._settle(node)
            with backend.lock:
                names = sorted(set(backend.tenant) | set(arg.expected_nodes))
                return HealthResult(
                    api_reachable=True, api_detail="v1.32.0-fake", nodes=[backend._health(n) for n in names]
                )

        @defn("tenant.wait_node_registered", WaitRegisteredInput, NodeHealth)
        def wait_node_registered(arg: WaitRegisteredInput) -> NodeHealth:
            backend._record("tenant.wait_node_registered", f"{arg.node}@{arg.kubernetes_version}")
            backend._settle(arg.node)
            with backend.lock:
                health = backend._health(arg.node)
            if health.ready and health.kubelet_version == f"v{arg.kubernetes_version}":
                return health
            raise ApplicationError(
                f"node {arg.node} of {arg.spec.id} not ready at v{arg.kubernetes_version} in the tenant cluster "
                f"after {arg.timeout}: {health.reason or health.kubelet_version}",
                [arg.node],
                type=NodesNotReady.__name__,
                non_retryable=True,
            )

        return list(base.values())


def _name(fn: Callable[..., Any]) -> str:
    definition = activity._Definition.from_callable(fn)
    assert definition is not None and definition.name is not None
    return definition.name
