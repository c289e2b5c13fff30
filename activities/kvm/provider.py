"""The KVM provider: a tenant cluster's objects in the host Kubernetes cluster (activities ``kvm.*``).

Each ``ensure_*`` reads the live object, compares the fields tenantctl owns with the desired
manifest (``activities.kvm.manifests``) and writes only the difference, as a JSON patch that
carries the resourceVersion it was computed from (a concurrent writer makes it fail with 409; it is
re-read and recomputed). An object that needs no change is not written at all, so running an
activity twice changes nothing the second time, resourceVersions included.

"Owned" means: the labels and annotations tenantctl sets (others' keys are left alone), the
ownerReference to the tenant Namespace, and per kind the spec fields listed in ``OWNED``. Owned
fields compare as "desired is contained in live", so fields the API server defaults (a
container's ``terminationMessagePath``, a Service's ``clusterIP``) are never seen as drift, while
anything tenantctl set and someone changed (a node scaled to 0, an edited image) is.

Live objects are read as raw JSON rather than client models: the client's models reject fields
they do not know, and a newer host API server may well send some.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import urllib3.exceptions
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from activities.common.errors import translated
from activities.common.kube_responses import is_transient, short_reason
from activities.common.kube_rest import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    INGRESSES,
    NAMESPACES,
    NETWORK_POLICIES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    KubeResource,
    KubeRest,
    delete_options,
)
from activities.common.waits import WaitBudget, wait_for_nodes
from activities.kvm import manifests
from activities.kvm.key_pairs import KubernetesSecretSink
from activities.providers.contract import AdminCredentials, SimulatedNodes, admin_credentials_from
from models.drift import Backend, DriftItem, DriftKind, DriftReport, ObserveInput
from models.errors import Conflict, InvalidInput, MissingPrerequisite, NotReady
from models.naming import (
    CLUSTER_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NODE_LABEL,
    ROLE_LABEL,
    VERSION_LABEL,
    node_order,
    node_role,
)
from models.naming import kvm_namespace as namespace_of
from models.provider import (
    ClusterRef,
    EnsureResult,
    NodeObservation,
    NodeRef,
    NodesResult,
    ResourceChange,
    ResourceList,
    ResourceOutcome,
    WaitNodesInput,
)
from models.spec import ClusterSpec, Provider
from models.versions import normalize_version

Obj = dict[str, Any]

POLL_INTERVAL_SECONDS: Final = 2.0
"""Waits look at once, then back off from 0.1 s to this interval (``activities.common.waits``)."""
NAMESPACE_FIRST_POLL: Final = 0.02
"""A namespace whose content holds no finalizer is gone within milliseconds of its delete: look again
this soon (then back off as every wait does) instead of waiting out the usual first 0.1 s."""
NAMESPACE_DELETE_TIMEOUT_SECONDS: Final = 600.0
"""One attempt of ensure_foundation_absent waits this long for the namespace to go, then fails
(retryably) naming what is left; below the activity's 15-minute start-to-close."""
CONFLICT_ATTEMPTS: Final = 5
"""A timeout names at most this many nodes in its message; the error's details list all of them."""

# How an owned field compares (see the module docstring).
MAP: Final = "map"  # labels/annotations: our keys set to our values, other keys kept
SUBSET: Final = "subset"  # desired contained in live; else replaced with desired
EXACT: Final = "exact"  # equal; else replaced
IMMUTABLE: Final = "immutable"  # equal; else the object is deleted and created again

Unit = tuple[tuple[str, ...], str]
_LABELS: Unit = (("metadata", "labels"), MAP)
_ANNOTATIONS: Unit = (("metadata", "annotations"), MAP)
OWNED: dict[str, tuple[Unit, ...]] = {
    "namespace": (_LABELS, _ANNOTATIONS),
    "networkpolicy": (_LABELS, _ANNOTATIONS, (("spec",), SUBSET)),
    "serviceaccount": (_LABELS, _ANNOTATIONS, (("automountServiceAccountToken",), EXACT)),
    "configmap": (_LABELS, _ANNOTATIONS, (("data",), EXACT)),
    "service": (
        _LABELS,
        _ANNOTATIONS,
        (("spec", "type"), EXACT),
        (("spec", "selector"), EXACT),  # an extra key would narrow it: exact, not contained
        (("spec", "ports"), SUBSET),
        (("spec", "publishNotReadyAddresses"), EXACT),
        (("spec", "clusterIP"), IMMUTABLE),  # headless or not is decided at creation
    ),
    "ingress": (_LABELS, _ANNOTATIONS, (("spec",), SUBSET)),
    "deployment": (
        _LABELS,
        _ANNOTATIONS,
        (("spec", "replicas"), EXACT),
        (("spec", "selector"), IMMUTABLE),
        (("spec", "strategy"), SUBSET),
        (("spec", "template", "metadata", "labels"), MAP),
        (("spec", "template", "metadata", "annotations"), MAP),
        (("spec", "template", "spec"), SUBSET),
    ),
}
LISTED_KINDS: Final = (
    "namespace",
    "deployment",
    "service",
    "ingress",
    "networkpolicy",
    "configmap",
    "secret",
    "serviceaccount",
)
"""Every kind a tenant has in the host cluster (Secrets are the PKI activities'), for list_resources."""
_BY_KIND: Final = {
    r.name: r
    for r in (NAMESPACES, DEPLOYMENTS, SERVICES, INGRESSES, NETWORK_POLICIES, CONFIG_MAPS, SECRETS, SERVICE_ACCOUNTS)
}
"""The API resource of each of LISTED_KINDS."""


# --- pure helpers: comparison and patches ----------------------------------------------------------
def covers(live: Any, desired: Any) -> bool:
    """Whether ``live`` holds everything ``desired`` says (server-added fields allowed).

    Lists must match element by element (an extra container or volume is drift). An empty dict
    means "exactly empty" (a select-all ``podSelector: {}``, an allow-all egress rule ``{}``).
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        if not desired:
            return not live
        return all(key in live and covers(live[key], value) for key, value in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(have, want) for have, want in zip(live, desired, strict=True))
        )
    return type(live) is type(desired) and bool(live == desired)


def _get(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


_MISSING: Final = object()


def _pointer(path: Sequence[str]) -> str:
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in path)


def _add(live: Obj, path: Sequence[str], value: Any) -> Obj:
    """A JSON-patch ``add`` of ``value`` at ``path``, creating missing parent objects in one go."""
    for depth in range(1, len(path)):
        if not isinstance(_get(live, path[:depth]), dict):
            nested = value
            for key in reversed(path[depth:]):
                nested = {key: nested}
            return {"op": "add", "path": _pointer(path[:depth]), "value": nested}
    return {"op": "add", "path": _pointer(path), "value": value}


@dataclass(frozen=True)
class Plan:
    ops: list[Obj]
    changed: list[str]
    recreate: bool


def plan_changes(live: Obj, desired: Obj, units: Sequence[Unit]) -> Plan:
    """The JSON-patch operations that bring the owned fields of ``live`` to ``desired``."""
    ops: list[Obj] = []
    changed: list[str] = []
    recreate = False
    for path, mode in units:
        want = _get(desired, path)
        if want is _MISSING:
            continue
        have = _get(live, path)
        dotted = ".".join(path)
        if mode == MAP:
            if not isinstance(have, dict):
                ops.append(_add(live, path, want))
                changed.append(dotted)
                continue
            for key, value in want.items():
                if have.get(key) != value:
                    ops.append({"op": "add", "path": _pointer((*path, key)), "value": value})
                    changed.append(f"{dotted}[{key}]")
        elif mode == SUBSET:
            if not covers(have, want):
                ops.append(_add(live, path, want))
                changed.append(dotted)
        elif have != want:
            if mode == IMMUTABLE:
                recreate = True
            ops.append(_add(live, path, want))
            changed.append(dotted)
    wanted_refs = _get(desired, ("metadata", "ownerReferences"))
    if isinstance(wanted_refs, list) and wanted_refs:
        refs = live["metadata"].get("ownerReferences") or []
        uids = {ref.get("uid") for ref in refs}
        if any(ref["uid"] not in uids for ref in wanted_refs):
            # A reference to an earlier namespace of the same name is stale: replace it.
            kept = [ref for ref in refs if ref.get("kind") != "Namespace"]
            ops.append(_add(live, ("metadata", "ownerReferences"), kept + wanted_refs))
            changed.append("metadata.ownerReferences")
    return Plan(ops=ops, changed=changed, recreate=recreate)


def _condition(obj: Obj, ctype: str) -> Obj:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == ctype:
            return cast(Obj, condition)
    return {}


def node_readiness(deployment: Obj | None, node: str, version: str | None = None) -> tuple[bool, str]:
    """Whether a node's Deployment is fully rolled out and available, and if not, why."""
    if deployment is None:
        return False, f"deployment {node} does not exist"
    meta, spec, status = deployment["metadata"], deployment.get("spec") or {}, deployment.get("status") or {}
    if meta.get("deletionTimestamp"):
        return False, "deployment is being deleted"
    running = (meta.get("labels") or {}).get(VERSION_LABEL, "")
    if version is not None and running != normalize_version(version):
        return False, f"runs Kubernetes {running or 'unknown'}, not {normalize_version(version)}"
    generation, observed = meta.get("generation", 0), status.get("observedGeneration", 0)
    if observed < generation:
        return False, f"generation {generation} not observed yet (at {observed})"
    replicas = spec.get("replicas", 1)
    counts = {k: status.get(k, 0) for k in ("replicas", "updatedReplicas", "availableReplicas")}
    available = _condition(deployment, "Available")
    if replicas == 1 and set(counts.values()) == {1} and available.get("status") == "True":
        return True, "available"
    reasons = [f"spec.replicas={replicas}"] if replicas != 1 else []
    reasons.append(", ".join(f"{k}={v}" for k, v in counts.items()))
    for ctype in ("Available", "Progressing"):
        condition = _condition(deployment, ctype)
        if condition and (ctype == "Available" or condition.get("status") != "True"):
            status, reason, message = (condition.get(k, "") for k in ("status", "reason", "message"))
            reasons.append(f"{ctype}={status} {reason}: {message}")
    return False, "; ".join(reasons)


class KvmProvider:
    """Activities ``kvm.*``: one tenant cluster's namespace, endpoint and node VMs in the host cluster.

    Its operations are the provider contract's (``activities.providers.contract``), registered
    under ``kvm.<operation>``; its key pairs live in host Secrets (``KubernetesSecretSink``), where
    the tenant API's admin key pair is read from too. ``simulated_nodes`` (local stack only) hears
    of every node ensured or removed.
    """

    provider: Final = Provider.KVM

    def __init__(
        self,
        api: ApiClient,
        *,
        simulated_nodes: SimulatedNodes | None = None,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        namespace_delete_timeout: float = NAMESPACE_DELETE_TIMEOUT_SECONDS,
    ) -> None:
        self.key_pairs = KubernetesSecretSink(api)
        self.simulated_nodes = simulated_nodes
        self.poll_interval = poll_interval
        self.namespace_delete_timeout = namespace_delete_timeout
        # Every call goes through the ApiClient's REST layer (its retries and rate limit included),
        # not its generated methods (activities/common/kube_rest.py).
        self.rest = KubeRest(api)

    def tenant_admin_credentials(self, spec: ClusterSpec) -> AdminCredentials:
        """The admin key pair from its host Secret ``tenant-<id>/cert-admin``."""
        return admin_credentials_from(self.key_pairs, spec)

    # --- activities: foundation ----------------------------------------------------------------
    def ensure_foundation(self, input: ClusterRef) -> EnsureResult:
        """Namespace, then its isolation (before anything runs in it), identity and cluster facts."""
        spec = input.spec
        manifests.kvm_settings(spec)  # refuse an AWS spec before creating anything
        namespace_outcome, namespace = self._ensure(NAMESPACES, manifests.namespace_manifest(spec), spec)
        uid = namespace["metadata"]["uid"]
        outcomes = [namespace_outcome]
        for kind, manifest in (
            (NETWORK_POLICIES, manifests.network_policy_manifest(spec)),
            (SERVICE_ACCOUNTS, manifests.service_account_manifest(spec)),
            (CONFIG_MAPS, manifests.cluster_configmap_manifest(spec)),
        ):
            outcomes.append(self._ensure(kind, manifests.with_owner(manifest, uid), spec)[0])
        return EnsureResult(outcomes=outcomes)

    def ensure_foundation_absent(self, input: ClusterRef) -> EnsureResult:
        """Delete the namespace (and with it everything in it) and wait until it is gone."""
        spec = input.spec
        name = namespace_of(spec.id)
        live = self._read(NAMESPACES, "", name)
        if live is None:
            return EnsureResult(outcomes=[ResourceOutcome(kind="namespace", name=name, change=ResourceChange.ABSENT)])
        self._check_ours(NAMESPACES, live, spec)
        if not live["metadata"].get("deletionTimestamp"):
            self._delete(NAMESPACES, "", name, "Background", uid=live["metadata"]["uid"])
        budget = WaitBudget(
            self.namespace_delete_timeout, max_poll=self.poll_interval, resume=False, first_poll=NAMESPACE_FIRST_POLL
        )
        while live is not None:
            remaining = self._namespace_leftovers(live)
            budget.heartbeat(namespace=name, waiting_for=remaining)
            if budget.expired:
                raise NotReady(
                    f"namespace {name} still terminating after {budget.waited:.0f}s: {remaining}; "
                    "deletion continues in the host cluster and is checked again on retry"
                )
            budget.sleep(f"waiting for namespace {name} to be deleted")
            live = self._read(NAMESPACES, "", name)
        activity.logger.info("namespace %s deleted", name)
        return EnsureResult(outcomes=[ResourceOutcome(kind="namespace", name=name, change=ResourceChange.DELETED)])

    # --- activities: endpoint ------------------------------------------------------------------
    def ensure_endpoint(self, input: ClusterRef) -> EnsureResult:
        spec = input.spec
        uid = self._namespace_uid(spec)
        outcomes = [
            self._ensure(kind, manifests.with_owner(manifest, uid), spec)[0]
            for kind, manifest in (
                (SERVICES, manifests.api_service_manifest(spec)),
                (SERVICES, manifests.etcd_service_manifest(spec)),
                (INGRESSES, manifests.api_ingress_manifest(spec)),
            )
        ]
        return EnsureResult(outcomes=outcomes)

    def ensure_endpoint_absent(self, input: ClusterRef) -> EnsureResult:
        namespace = namespace_of(input.spec.id)
        outcomes = [
            self._delete_outcome(kind, namespace, name)
            for kind, name in (
                (INGRESSES, manifests.API_INGRESS),
                (SERVICES, manifests.API_SERVICE),
                (SERVICES, manifests.ETCD_SERVICE),
            )
        ]
        return EnsureResult(outcomes=outcomes)

    # --- activities: nodes ---------------------------------------------------------------------
    def ensure_node(self, input: NodeRef) -> EnsureResult:
        """The role's cloud-config for the version first (the VM reads it at boot), then the VM."""
        spec, role = input.spec, node_role(input.node)
        version = normalize_version(input.kubernetes_version)
        uid = self._namespace_uid(spec)
        config = manifests.with_owner(manifests.cloud_config_manifest(spec, role, version), uid)
        deployment = manifests.with_owner(
            manifests.node_deployment_manifest(spec, input.node, version, input.restart_token), uid
        )
        if self.simulated_nodes is not None:
            # what the stand-in reads is written with the VM, not patched onto it afterwards
            simulated = self.simulated_nodes.vm_metadata(spec, input.node, version)
            deployment = manifests.with_metadata(deployment, simulated.annotations, simulated.labels)
        config_outcome, _ = self._ensure(CONFIG_MAPS, config, spec)
        vm_outcome, vm = self._ensure(DEPLOYMENTS, deployment, spec)
        if self.simulated_nodes is not None:
            self.simulated_nodes.node_ensured(spec, input.node, version, vm)
        return EnsureResult(outcomes=[config_outcome, vm_outcome])

    def ensure_node_absent(self, input: NodeRef) -> EnsureResult:
        """Delete the VM; then its cloud-config, once no other node of that role and version uses it.

        Operations on one cluster are serialised by its entity workflow, so no ensure_node of the
        same role and version runs concurrently with this check.
        """
        spec, node, role = input.spec, input.node, node_role(input.node)
        namespace = namespace_of(spec.id)
        # The live version label is what the VM really ran; the caller's may be a step behind.
        versions = {normalize_version(input.kubernetes_version)}
        live = self._read(DEPLOYMENTS, namespace, node)
        if live is not None:
            self._check_ours(DEPLOYMENTS, live, spec)
            running = (live["metadata"].get("labels") or {}).get(VERSION_LABEL)
            if running:
                versions.add(normalize_version(running))
        # Foreground: the Deployment goes only after its pod (the VM) is gone, so a node re-created
        # under the same name waits for the old VM instead of running next to it.
        outcomes = [self._delete_outcome(DEPLOYMENTS, namespace, node, "Foreground")]
        others = [
            d
            for d in self._node_deployments(spec)
            if d["metadata"]["name"] != node
            and not d["metadata"].get("deletionTimestamp")
            and (d["metadata"].get("labels") or {}).get(ROLE_LABEL) == role
        ]
        for version in sorted(versions):
            config = manifests.cloud_config_name(role, version)
            if any((d["metadata"].get("labels") or {}).get(VERSION_LABEL) == version for d in others):
                outcomes.append(ResourceOutcome(kind="configmap", name=config, change=ResourceChange.UNCHANGED))
            else:
                outcomes.append(self._delete_outcome(CONFIG_MAPS, namespace, config))
        if self.simulated_nodes is not None:
            self.simulated_nodes.node_removed(spec, node)
        return EnsureResult(outcomes=outcomes)

    def restart_node(self, input: NodeRef) -> EnsureResult:
        """Roll the VM by setting the restart token on its pod template; the same token twice rolls once."""
        if not input.restart_token:
            raise InvalidInput(f"restart of node {input.node}: restart_token is empty, nothing would roll")
        spec, node = input.spec, input.node
        node_role(node)
        namespace = namespace_of(spec.id)
        desired = {
            "spec": {
                "template": {"metadata": {"annotations": {manifests.RESTART_TOKEN_ANNOTATION: input.restart_token}}}
            }
        }
        units: tuple[Unit, ...] = ((("spec", "template", "metadata", "annotations"), MAP),)
        for _ in range(CONFLICT_ATTEMPTS):
            live = self._read(DEPLOYMENTS, namespace, node)
            if live is None:
                activity.logger.warning("restart of node %s of %s: no such deployment", node, spec.id)
                return EnsureResult(
                    outcomes=[ResourceOutcome(kind="deployment", name=node, change=ResourceChange.ABSENT)]
                )
            self._check_ours(DEPLOYMENTS, live, spec)
            plan = plan_changes(live, desired, units)
            if not plan.ops:
                return EnsureResult(
                    outcomes=[ResourceOutcome(kind="deployment", name=node, change=ResourceChange.UNCHANGED)]
                )
            if self._patch(DEPLOYMENTS, live, plan.ops) is not None:
                activity.logger.info("node %s of %s restarting (token %s)", node, spec.id, input.restart_token)
                return EnsureResult(
                    outcomes=[ResourceOutcome(kind="deployment", name=node, change=ResourceChange.UPDATED)]
                )
        raise NotReady(f"deployment {namespace}/{node} kept changing while it was being restarted")

    def wait_nodes_ready(self, input: WaitNodesInput) -> NodesResult:
        """Poll until every node's Deployment is available, heartbeating the nodes still pending.

        The start time travels in the heartbeat details, so an attempt retried after a worker
        loss keeps the original deadline rather than starting the clock again.
        """

        def unavailable(exc: Exception) -> str:
            if isinstance(exc, ApiException | urllib3.exceptions.HTTPError | OSError) and is_transient(exc):
                return f"host API unavailable: {short_reason(exc)}"
            raise exc

        return wait_for_nodes(
            input,
            lambda: self._observe(input.spec, input.nodes, input.kubernetes_version),
            unavailable,
            self.poll_interval,
        )

    def list_nodes(self, input: ClusterRef) -> NodesResult:
        nodes = []
        for deployment in self._node_deployments(input.spec):
            meta = deployment["metadata"]
            labels = meta.get("labels") or {}
            ready, detail = node_readiness(deployment, meta["name"])
            nodes.append(
                NodeObservation(
                    name=meta["name"],
                    role=labels.get(ROLE_LABEL, ""),
                    kubernetes_version=labels.get(VERSION_LABEL, ""),
                    ready=ready,
                    detail=detail,
                )
            )
        return NodesResult(nodes=sorted(nodes, key=lambda n: node_order(n.name)))

    def list_resources(self, input: ClusterRef) -> ResourceList:
        """Everything in any namespace labelled with the cluster, as ``kind/name`` or ``kind/namespace/name``."""
        selector = f"{CLUSTER_LABEL}={input.spec.id}"
        found = []
        for kind in LISTED_KINDS:
            for item in self._list(f"list {kind}s labelled {selector}", _BY_KIND[kind], None, selector):
                meta = item["metadata"]
                found.append("/".join(p for p in (kind, meta.get("namespace"), meta["name"]) if p))
        return ResourceList(resources=sorted(found))

    def observe(self, input: ObserveInput) -> DriftReport:
        """Drift check: every object the spec implies, compared with what carries the cluster label.

        One list per kind (by label, in the tenant's namespace), the diff done here: missing objects,
        owned fields that differ (``OWNED``, as ``ensure_*`` would converge them), and labelled
        objects nothing explains.
        Key-pair Secrets are the PKI observe's (it reads them through the key-pair store); they are
        only skipped here.
        """
        spec = input.spec
        manifests.kvm_settings(spec)
        selector = f"{CLUSTER_LABEL}={spec.id}"
        live: dict[tuple[str, str], Obj] = {}
        namespace = namespace_of(spec.id)
        for kind in LISTED_KINDS:
            if kind == "secret":
                continue
            # A drift check lists in the tenant's namespace only, where every object of a tenant lives:
            # a cluster-wide list by label is filtered over every tenant's objects of that kind (by the
            # apiserver's watch cache too), 3.3 times a second for 1,000 clusters checked every 5 min.
            # Teardown's verify (list_resources) still looks everywhere. Namespaces are cluster-scoped.
            for item in self._list(f"list {kind}s labelled {selector}", _BY_KIND[kind], namespace, selector):
                live[(kind, item["metadata"]["name"])] = item
        desired: list[tuple[str, Obj]] = [
            ("namespace", manifests.namespace_manifest(spec)),
            ("networkpolicy", manifests.network_policy_manifest(spec)),
            ("serviceaccount", manifests.service_account_manifest(spec)),
            ("configmap", manifests.cluster_configmap_manifest(spec)),
            ("service", manifests.api_service_manifest(spec)),
            ("service", manifests.etcd_service_manifest(spec)),
            ("ingress", manifests.api_ingress_manifest(spec)),
        ]
        for node, wanted in sorted(input.nodes.items(), key=lambda item: node_order(item[0])):
            role, version = node_role(node), normalize_version(wanted)
            config = manifests.cloud_config_manifest(spec, role, version)
            if all(config["metadata"]["name"] != m["metadata"]["name"] for k, m in desired if k == "configmap"):
                desired.append(("configmap", config))
            desired.append(("deployment", manifests.node_deployment_manifest(spec, node, version)))
        items: list[DriftItem] = []
        for kind, manifest in desired:
            name = manifest["metadata"]["name"]
            found = live.pop((kind, name), None)
            if found is None:
                items.append(DriftItem(kind=DriftKind.MISSING, object=f"{kind}/{name}"))
                continue
            plan = plan_changes(found, manifest, OWNED[kind])
            if plan.changed:
                items.append(DriftItem(kind=DriftKind.CHANGED, object=f"{kind}/{name}", detail=", ".join(plan.changed)))
        items += [DriftItem(kind=DriftKind.EXTRA, object=f"{kind}/{name}") for kind, name in sorted(live)]
        return DriftReport(backend=Backend.PROVIDER, items=items)

    # --- converging one object -----------------------------------------------------------------
    def _ensure(self, kind: KubeResource, desired: Obj, spec: ClusterSpec) -> tuple[ResourceOutcome, Obj]:
        meta = desired["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        where = f"{kind.name} {namespace + '/' if namespace else ''}{name}"
        for _ in range(CONFLICT_ATTEMPTS):
            live = self._read(kind, namespace, name)
            if live is None:
                created = self._create(kind, namespace, desired)
                if created is None:
                    continue  # created meanwhile by someone else: converge that one
                activity.logger.info("created %s", where)
                return ResourceOutcome(kind=kind.name, name=name, change=ResourceChange.CREATED), created
            self._check_ours(kind, live, spec)
            if live["metadata"].get("deletionTimestamp"):
                raise NotReady(f"{where} is being deleted; it is created again once it is gone")
            plan = plan_changes(live, desired, OWNED[kind.name])
            if plan.recreate:
                activity.logger.warning("%s: immutable fields differ (%s): re-creating it", where, plan.changed)
                self._delete(kind, namespace, name, "Foreground", uid=live["metadata"]["uid"])
                created = self._create(kind, namespace, desired)
                if created is None:
                    raise NotReady(f"{where} is being re-created (immutable fields {plan.changed} differed)")
                return ResourceOutcome(kind=kind.name, name=name, change=ResourceChange.UPDATED), created
            if not plan.ops:
                return ResourceOutcome(kind=kind.name, name=name, change=ResourceChange.UNCHANGED), live
            patched = self._patch(kind, live, plan.ops)
            if patched is not None:
                activity.logger.info("updated %s: %s", where, ", ".join(plan.changed))
                return ResourceOutcome(kind=kind.name, name=name, change=ResourceChange.UPDATED), patched
        raise NotReady(f"{where} kept changing while it was being converged ({CONFLICT_ATTEMPTS} attempts)")

    def _check_ours(self, kind: KubeResource, live: Obj, spec: ClusterSpec) -> None:
        """Refuse to take over an object tenantctl did not make for this cluster (a name clash)."""
        labels = live["metadata"].get("labels") or {}
        cluster, manager = labels.get(CLUSTER_LABEL), labels.get(MANAGED_BY_LABEL)
        # The namespace must say it is this cluster's; inside it, an unlabelled object is ours
        # (the namespace is), but one labelled for something else is not.
        foreign = cluster != spec.id if kind is NAMESPACES else cluster not in (None, spec.id)
        if foreign or manager not in (None, MANAGED_BY):
            meta = live["metadata"]
            where = "/".join(p for p in (meta.get("namespace"), meta["name"]) if p)
            raise Conflict(
                f"{kind.name} {where} exists but is not tenantctl's object for cluster {spec.id} "
                f"(labels {CLUSTER_LABEL}={cluster}, {MANAGED_BY_LABEL}={manager}); refusing to take it over"
            )

    def _namespace_uid(self, spec: ClusterSpec) -> str:
        name = namespace_of(spec.id)
        live = self._read(NAMESPACES, "", name)
        if live is None:
            raise MissingPrerequisite(
                f"namespace {name} does not exist: the cluster's foundation must be ensured first"
            )
        self._check_ours(NAMESPACES, live, spec)
        if live["metadata"].get("deletionTimestamp"):
            raise NotReady(f"namespace {name} is being deleted")
        return str(live["metadata"]["uid"])

    def _namespace_leftovers(self, namespace: Obj) -> str:
        """What a terminating namespace still waits for, in the API server's own words."""
        meta, status = namespace["metadata"], namespace.get("status") or {}
        parts = [
            f"{c.get('type')}: {c.get('message')}"
            for c in status.get("conditions") or []
            if c.get("status") == "True" and c.get("message")
        ]
        # metadata finalizers belong to other controllers (backups, operators): name them. The spec
        # finalizer 'kubernetes' is the namespace controller's own, and the conditions above say
        # which content it still removes.
        if meta.get("finalizers"):
            parts.append(f"finalizers {meta['finalizers']}")
        return "; ".join(parts) or f"phase {status.get('phase', 'unknown')}, its content being removed"

    # --- reads ---------------------------------------------------------------------------------
    def _node_deployments(self, spec: ClusterSpec) -> list[Obj]:
        selector = f"{CLUSTER_LABEL}={spec.id},{NODE_LABEL}"
        namespace = namespace_of(spec.id)
        return self._list(f"list node deployments in {namespace}", DEPLOYMENTS, namespace, selector)

    def _observe(self, spec: ClusterSpec, nodes: list[str], version: str | None) -> list[NodeObservation]:
        live = {d["metadata"]["name"]: d for d in self._node_deployments(spec)}
        observed = []
        for node in nodes:
            deployment = live.get(node)
            ready, detail = node_readiness(deployment, node, version)
            labels = (deployment or {}).get("metadata", {}).get("labels") or {}
            observed.append(
                NodeObservation(
                    name=node,
                    role=labels.get(ROLE_LABEL, node_role(node)),
                    kubernetes_version=labels.get(VERSION_LABEL, ""),
                    ready=ready,
                    detail=detail,
                )
            )
        return observed

    def _list(self, what: str, kind: KubeResource, namespace: str | None, selector: str) -> list[Obj]:
        """Every page of one list by label (``namespace=None``: in every namespace)."""
        with translated(what):
            return self.rest.list_all(kind, namespace, selector)

    def _read(self, kind: KubeResource, namespace: str, name: str) -> Obj | None:
        try:
            with translated(f"read {kind.name} {namespace}/{name}"):
                return self.rest.read(kind, namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # --- writes --------------------------------------------------------------------------------
    def _create(self, kind: KubeResource, namespace: str, desired: Obj) -> Obj | None:
        """The created object, or None when one of that name already exists."""
        try:
            with translated(f"create {kind.name} {namespace}/{desired['metadata']['name']}"):
                return self.rest.create(kind, namespace, desired)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def _patch(self, kind: KubeResource, live: Obj, ops: list[Obj]) -> Obj | None:
        """The patched object, or None when ``live`` is no longer current (409: re-read and retry)."""
        meta = live["metadata"]
        # Setting resourceVersion makes the server refuse the patch if the object changed since it
        # was read, so the patch never applies to a state it was not computed from.
        guarded = [{"op": "replace", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}, *ops]
        try:
            with translated(f"patch {kind.name} {meta.get('namespace', '')}/{meta['name']}"):
                return self.rest.patch(kind, meta.get("namespace", ""), meta["name"], guarded)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def _delete(self, kind: KubeResource, namespace: str, name: str, propagation: str, uid: str | None = None) -> bool:
        """Whether a deletion was requested (False: it was not there)."""
        options = delete_options(propagation, uid)
        try:
            with translated(f"delete {kind.name} {namespace}/{name}"):
                self.rest.delete(kind, namespace, name, options)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        activity.logger.info("deleted %s %s/%s", kind.name, namespace, name)
        return True

    def _delete_outcome(
        self, kind: KubeResource, namespace: str, name: str, propagation: str = "Background"
    ) -> ResourceOutcome:
        deleted = self._delete(kind, namespace, name, propagation)
        return ResourceOutcome(
            kind=kind.name, name=name, change=ResourceChange.DELETED if deleted else ResourceChange.ABSENT
        )
