"""Activities ``tenant.*``: a tenant cluster's own Kubernetes API, as its administrator.

An upgrade cordons and drains a node where its workloads run (the tenant cluster: the host only
sees VM pods), waits until the node's kubelet registers again at the new version, and judges the
cluster's health by its Nodes and its API. Every activity converges when run again: cordoning a
cordoned node, draining a drained one, or either on a node that is gone, changes nothing.

How the tenant API is reached is the worker's choice, passed in as a factory of API clients:
plain HTTP to the local stack's emulator (``/tenants/<id>``), or in production TLS to
``api.<id>.<base-domain>`` with the cluster's admin key pair (O=system:masters), read inside the
activity process from where the cluster's provider stores it (see ``admin_certificate_factory``).
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import urllib3
import urllib3.exceptions
from kubernetes.client import ApiClient, Configuration, CoreV1Api, V1Eviction, V1ObjectMeta, VersionApi
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.common.errors import translated
from activities.common.kube_responses import is_transient, response_json, short_reason
from activities.common.waits import WaitBudget
from activities.providers.contract import AdminCredentials
from models.errors import DrainBlocked, NodesNotReady
from models.naming import node_order
from models.provider import EnsureResult, ResourceChange, ResourceOutcome
from models.spec import ClusterSpec
from models.tenant import (
    BlockedPod,
    DrainInput,
    DrainResult,
    HealthInput,
    HealthResult,
    NodeHealth,
    TenantNodeInput,
    WaitRegisteredInput,
)
from models.versions import normalize_version, reported_version

Obj = dict[str, Any]
ApiClientFactory = Callable[[ClusterSpec], ApiClient]

POLL_INTERVAL_SECONDS: Final = 2.0
MAX_EVICTION_BACKOFF_SECONDS: Final = 15.0
"""Refused evictions (PodDisruptionBudgets) are retried with backoff up to this interval."""
MAX_PODS_IN_MESSAGE: Final = 10
MIRROR_POD_ANNOTATION: Final = "kubernetes.io/config.mirror"
MERGE_PATCH: Final = "application/merge-patch+json"


class TenantClusters:
    """Activities ``tenant.*`` over the tenant cluster's API; ``api_client_factory`` reaches it."""

    def __init__(
        self,
        api_client_factory: ApiClientFactory,
        *,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        max_eviction_backoff: float = MAX_EVICTION_BACKOFF_SECONDS,
    ) -> None:
        self.api_client_factory = api_client_factory
        self.poll_interval = poll_interval
        self.max_eviction_backoff = max_eviction_backoff

    # --- activities -------------------------------------------------------------------------------
    @activity.defn(name="tenant.cordon_node")
    def cordon_node(self, input: TenantNodeInput) -> EnsureResult:
        """Mark the node unschedulable; UNCHANGED if it already is, ABSENT if there is no such node."""
        with self.api_client_factory(input.spec) as api:
            return EnsureResult(outcomes=[_set_unschedulable(CoreV1Api(api), input.spec, input.node, True)])

    @activity.defn(name="tenant.uncordon_node")
    def uncordon_node(self, input: TenantNodeInput) -> EnsureResult:
        with self.api_client_factory(input.spec) as api:
            return EnsureResult(outcomes=[_set_unschedulable(CoreV1Api(api), input.spec, input.node, False)])

    @activity.defn(name="tenant.remove_node")
    def remove_node(self, input: TenantNodeInput) -> EnsureResult:
        """Delete the Node object of a node whose VM/instance is gone; ABSENT if there is none."""
        spec, node = input.spec, input.node
        with self.api_client_factory(spec) as api:
            try:
                with translated(f"tenant {spec.id}: delete node {node}"):
                    CoreV1Api(api).delete_node(node, _preload_content=False)
            except ApiException as exc:
                if exc.status == 404:
                    return EnsureResult(
                        outcomes=[ResourceOutcome(kind="node", name=node, change=ResourceChange.ABSENT)]
                    )
                raise
        activity.logger.info("removed node %s from the tenant API of %s", node, spec.id)
        return EnsureResult(outcomes=[ResourceOutcome(kind="node", name=node, change=ResourceChange.DELETED)])

    @activity.defn(name="tenant.drain_node")
    def drain_node(self, input: DrainInput) -> DrainResult:
        """Cordon the node, then evict every pod on it through the Eviction API until none is left.

        DaemonSet and mirror (static) pods stay, as with ``kubectl drain``: they belong to the node.
        An eviction a PodDisruptionBudget refuses (429) is tried again with backoff, heartbeating the
        pods that wait; past ``timeout`` (counted from the first attempt: the start travels in the
        heartbeat details) the drain fails permanently with ``DrainBlocked``, naming the node, the
        pods and the budgets' own words, so the upgrade pauses with that message instead of hanging.
        """
        spec, node = input.spec, input.node
        budget = WaitBudget(input.timeout.total_seconds(), max_poll=self.max_eviction_backoff)
        evicted: list[str] = []
        with self.api_client_factory(spec) as api:
            core = CoreV1Api(api)
            cordoned = _set_unschedulable(core, spec, node, True)
            if cordoned.change is ResourceChange.ABSENT:
                activity.logger.info("drain of %s in %s: no such node, nothing to drain", node, spec.id)
                return DrainResult(node=node, node_found=False)
            waiting: list[str] = []
            while True:
                budget.heartbeat(node=node, blocked=waiting)
                pods = _pods_on(core, spec, node)
                skipped = [_ref(p) for p in pods if _stays_on_node(p)]
                remaining = [p for p in pods if not _stays_on_node(p)]
                if not remaining:
                    return DrainResult(node=node, node_found=True, evicted=evicted, skipped=skipped)
                blocked: list[BlockedPod] = []
                progressed = False
                for pod in remaining:
                    if pod["metadata"].get("deletionTimestamp"):
                        blocked.append(_blocked(pod, "terminating"))  # evicted: waiting for it to go
                        continue
                    refusal = _evict(core, spec, pod)
                    if refusal is None:
                        evicted.append(_ref(pod))
                        progressed = True
                    else:
                        blocked.append(_blocked(pod, refusal))
                if not blocked:
                    continue  # list again: confirm they are gone
                waiting = [_describe(b) for b in blocked]
                if budget.expired:
                    budget.end_of_attempt(f"the drain of {node}")
                    raise _drain_blocked(spec, node, input.timeout, blocked)
                if progressed:
                    budget.progressed()  # evictions go through: look again soon
                budget.sleep(f"draining {node}")

    @activity.defn(name="tenant.check_health")
    def check_health(self, input: HealthInput) -> HealthResult:
        """API reachable (``/version``) and every node Ready, the expected ones registered.

        With ``wait``, looks again (the shared wait budget's rhythm) until healthy or ``wait`` has
        passed, and answers with the last look either way: the caller decides what unhealthy means.
        """
        budget = WaitBudget(input.wait.total_seconds(), max_poll=self.poll_interval)
        with self.api_client_factory(input.spec) as api:
            while True:
                result = _observe_health(api, input.expected_nodes)
                if result.healthy or budget.expired:
                    return result
                budget.heartbeat(unhealthy=result.describe())
                budget.sleep(f"waiting for {input.spec.id} to be healthy")

    @activity.defn(name="tenant.wait_node_registered")
    def wait_node_registered(self, input: WaitRegisteredInput) -> NodeHealth:
        """Poll until the node is Ready and its kubelet reports ``kubernetes_version``, heartbeating.

        Past ``timeout`` (from the first attempt) fails permanently with ``NodesNotReady``, naming
        the node and its conditions; ``details[0]`` is the list of node names, as ``kvm.wait_nodes_ready``.
        """
        spec, node = input.spec, input.node
        want = normalize_version(input.kubernetes_version)
        budget = WaitBudget(input.timeout.total_seconds(), max_poll=self.poll_interval)
        with self.api_client_factory(spec) as api:
            core = CoreV1Api(api)
            while True:
                try:
                    observed = _node_health(core, spec, node)
                except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                    if not is_transient(exc):
                        raise
                    observed = NodeHealth(name=node, ready=False, reason=f"tenant API unavailable: {short_reason(exc)}")
                if observed.ready and reported_version(observed.kubelet_version) == want:
                    return observed
                reason = observed.reason
                if observed.ready:
                    reason = (
                        f"Ready, but its kubelet runs {observed.kubelet_version or 'an unknown version'}, not v{want}"
                    )
                budget.heartbeat(node=node, waiting_for=reason)
                if budget.expired:
                    budget.end_of_attempt(f"node {node} to register")
                    raise ApplicationError(
                        f"node {node} of {spec.id} not ready at v{want} in the tenant cluster after "
                        f"{_human(input.timeout)}: {reason}",
                        [node],
                        type=NodesNotReady.__name__,
                        non_retryable=True,
                    )
                budget.sleep(f"waiting for node {node} to register")


# --- reaching the tenant API ----------------------------------------------------------------------
def plain_http_factory(url_of: Callable[[ClusterSpec], str]) -> ApiClientFactory:
    """Clients without credentials: for the local stack's emulator (``http://.../tenants/<id>``)."""

    def make(spec: ClusterSpec) -> ApiClient:
        return ApiClient(Configuration(host=url_of(spec)))

    return make


def admin_certificate_factory(
    credentials: Callable[[ClusterSpec], AdminCredentials], url_of: Callable[[ClusterSpec], str]
) -> ApiClientFactory:
    """Clients that present the cluster's admin key pair (CN tenantctl-admin, O=system:masters).

    ``credentials`` reads the key pair where the cluster's provider stores it (the provider
    contract's ``tenant_admin_credentials``: a host Secret for KVM, Secrets Manager for AWS) at each
    call; it is loaded into the client's TLS context in memory and never enters a workflow, a log
    line or a file that outlives the call. The server is verified against the pair's CA chain,
    which CA rotations keep at the trust bundle every consumer reads.
    """

    def make(spec: ClusterSpec) -> ApiClient:
        admin = credentials(spec)
        context = ssl.create_default_context(cadata=admin.ca)
        _load_key_pair(context, admin.certificate, admin.private_key)
        client = ApiClient(Configuration(host=url_of(spec)))
        # The generated client only takes key files; a pool manager with a ready TLS context keeps
        # the key in memory instead.
        client.rest_client.pool_manager = urllib3.PoolManager(ssl_context=context, maxsize=4)
        return client

    return make


def tenant_api_factory(
    credentials: Callable[[ClusterSpec], AdminCredentials], url_of: Callable[[ClusterSpec], str]
) -> ApiClientFactory:
    """Plain HTTP where the tenant API URL says ``http://`` (the local stack), the admin key pair otherwise."""
    plain, admin = plain_http_factory(url_of), admin_certificate_factory(credentials, url_of)

    def make(spec: ClusterSpec) -> ApiClient:
        return plain(spec) if url_of(spec).startswith("http://") else admin(spec)

    return make


def _load_key_pair(context: ssl.SSLContext, certificate_pem: str, key_pem: str) -> None:
    """``load_cert_chain`` reads files only: hand it an anonymous in-memory file where Linux has one."""
    pair = (certificate_pem.rstrip() + "\n" + key_pem.rstrip() + "\n").encode()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("tenant-admin", os.MFD_CLOEXEC)
        try:
            os.write(fd, pair)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="tenantctl-") as folder:  # 0700, removed at once
        path = Path(folder) / "pair.pem"
        path.touch(mode=0o600)
        path.write_bytes(pair)
        context.load_cert_chain(str(path))


# --- tenant API reads and writes --------------------------------------------------------------------
def _read_node(core: CoreV1Api, spec: ClusterSpec, node: str) -> Obj | None:
    try:
        with translated(f"tenant {spec.id}: read node {node}"):
            return response_json(core.read_node(node, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _set_unschedulable(core: CoreV1Api, spec: ClusterSpec, node: str, unschedulable: bool) -> ResourceOutcome:
    live = _read_node(core, spec, node)
    if live is None:
        return ResourceOutcome(kind="node", name=node, change=ResourceChange.ABSENT)
    if bool((live.get("spec") or {}).get("unschedulable")) is unschedulable:
        return ResourceOutcome(kind="node", name=node, change=ResourceChange.UNCHANGED)
    # A merge patch touches only this field, so a kubelet updating its status meanwhile is no conflict.
    patch = {"spec": {"unschedulable": True if unschedulable else None}}
    try:
        with translated(f"tenant {spec.id}: {'cordon' if unschedulable else 'uncordon'} node {node}"):
            response_json(core.patch_node(node, patch, _content_type=MERGE_PATCH, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:  # removed between the read and the patch
            return ResourceOutcome(kind="node", name=node, change=ResourceChange.ABSENT)
        raise
    activity.logger.info("%s node %s of %s", "cordoned" if unschedulable else "uncordoned", node, spec.id)
    return ResourceOutcome(kind="node", name=node, change=ResourceChange.UPDATED)


def _pods_on(core: CoreV1Api, spec: ClusterSpec, node: str) -> list[Obj]:
    items: list[Obj] = []
    token: str | None = None
    while True:
        with translated(f"tenant {spec.id}: list pods on node {node}"):
            page = response_json(
                core.list_pod_for_all_namespaces(
                    field_selector=f"spec.nodeName={node}", limit=250, _continue=token, _preload_content=False
                )
            )
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


def _stays_on_node(pod: Obj) -> bool:
    """DaemonSet pods (re-created on the node at once) and mirror pods (the kubelet's own) are not evicted."""
    meta = pod["metadata"]
    if MIRROR_POD_ANNOTATION in (meta.get("annotations") or {}):
        return True
    return any(ref.get("kind") == "DaemonSet" and ref.get("controller") for ref in meta.get("ownerReferences") or [])


def _evict(core: CoreV1Api, spec: ClusterSpec, pod: Obj) -> str | None:
    """None when the pod was evicted (or is gone already), else why the API server refused."""
    meta = pod["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    eviction = V1Eviction(metadata=V1ObjectMeta(name=name, namespace=namespace))
    try:
        with translated(f"tenant {spec.id}: evict pod {namespace}/{name}"):
            response_json(core.create_namespaced_pod_eviction(name, namespace, eviction, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status == 429 or (exc.status == 500 and "DisruptionBudget" in (exc.body or "")):
            return _refusal(exc)  # a budget says no (or two budgets cover the pod): try again later
        raise
    activity.logger.info("evicted pod %s/%s of %s", namespace, name, spec.id)
    return None


def _refusal(exc: ApiException) -> str:
    """The API server's reason for a refused eviction: the budget's own message when it gives one."""
    try:
        status = json.loads(exc.body or "{}")
    except ValueError:
        return f"{exc.status} {exc.reason}"
    causes = [c.get("message", "") for c in (status.get("details") or {}).get("causes") or [] if c.get("message")]
    return "; ".join(causes) or str(status.get("message") or f"{exc.status} {exc.reason}")


def _observe_health(api: ApiClient, expected: Sequence[str]) -> HealthResult:
    try:
        version = response_json(VersionApi(api).get_code(_preload_content=False))
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        return HealthResult(api_reachable=False, api_detail=short_reason(exc))
    try:
        listed = response_json(CoreV1Api(api).list_node(_preload_content=False)).get("items") or []
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        return HealthResult(api_reachable=False, api_detail=f"listing nodes: {short_reason(exc)}")
    nodes = {n["metadata"]["name"]: _health_of(n) for n in listed}
    for name in expected:
        nodes.setdefault(name, NodeHealth(name=name, ready=False, reason="not registered in the tenant cluster"))
    return HealthResult(
        api_reachable=True,
        api_detail=str(version.get("gitVersion", "")),
        nodes=sorted(nodes.values(), key=lambda n: node_order(n.name)),
    )


def _node_health(core: CoreV1Api, spec: ClusterSpec, node: str) -> NodeHealth:
    live = _read_node(core, spec, node)
    if live is None:
        return NodeHealth(name=node, ready=False, reason="not registered in the tenant cluster")
    return _health_of(live)


def _health_of(node: Obj) -> NodeHealth:
    status = node.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None:
        reason = "no Ready condition yet"
    elif ready.get("status") == "True":
        reason = ""
    else:
        reason = f"Ready={ready.get('status')} {ready.get('reason', '')}: {ready.get('message', '')}".rstrip(": ")
    return NodeHealth(
        name=node["metadata"]["name"],
        ready=ready is not None and ready.get("status") == "True",
        kubelet_version=str((status.get("nodeInfo") or {}).get("kubeletVersion", "")),
        unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
        reason=reason,
    )


# --- small helpers ------------------------------------------------------------------------------------
def _drain_blocked(spec: ClusterSpec, node: str, timeout: timedelta, blocked: list[BlockedPod]) -> ApplicationError:
    shown = "; ".join(_describe(b) for b in blocked[:MAX_PODS_IN_MESSAGE])
    if len(blocked) > MAX_PODS_IN_MESSAGE:
        shown += f"; and {len(blocked) - MAX_PODS_IN_MESSAGE} more"
    return ApplicationError(
        f"drain of node {node} of {spec.id} did not finish within {_human(timeout)}: {len(blocked)} pods left "
        f"({shown})",
        [node],
        [b.model_dump() for b in blocked],
        type=DrainBlocked.__name__,
        non_retryable=True,
    )


def _ref(pod: Obj) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _blocked(pod: Obj, reason: str) -> BlockedPod:
    return BlockedPod(namespace=pod["metadata"]["namespace"], name=pod["metadata"]["name"], reason=reason)


def _describe(blocked: BlockedPod) -> str:
    return f"{blocked.namespace}/{blocked.name}: {blocked.reason}"


def _human(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{value.total_seconds():g}s"
