"""Background controllers: deployment status and rollouts, namespace finalization, tenant node simulation.

They run on one thread fed by store events (the store calls `_on_event` under its lock, so that only
enqueues). Every sync is idempotent and re-reads the object, so duplicate or late tasks are harmless.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .garbage import GarbageCollector
from .resources import (
    BY_KEY,
    DEPLOYMENTS,
    NAMESPACES,
    NODES,
    PDBS,
    PODS,
    ApiError,
    Obj,
    now_iso,
)
from .rollouts import replicaset_name, sync_replicasets
from .store import NAMESPACED, Store, WatchEvent
from .tokens import TOKEN_SECRET_ACCOUNT, TOKEN_SECRET_TYPE

if TYPE_CHECKING:
    from .tokens import ServiceAccountTokens

log = logging.getLogger(__name__)

PREFIX = "emulator.tenantctl.io/"
NEVER_READY = PREFIX + "never-ready"
READY_DELAY = PREFIX + "ready-delay-seconds"
TENANT_NODE = PREFIX + "tenant-node"
KUBELET_VERSION = PREFIX + "kubelet-version"
TENANT_PODS = PREFIX + "tenant-pods"
# Deployment labels with these prefixes are copied onto the simulated tenant Node.
NODE_LABEL_PREFIXES = (
    "node-role.kubernetes.io/",
    "node.kubernetes.io/",
    "topology.kubernetes.io/",
    "node.tenantctl.io/",
)


GC_DELAY = 0.02  # seconds: a burst of events is collected in one pass
_OWNED = (
    "observedGeneration",
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
    "unavailableReplicas",
    "conditions",
)


@dataclass(order=True)
class _Task:
    due: float
    seq: int
    action: str = field(compare=False)  # deployment | namespace | unregister | pdb | gc | token
    cluster: str = field(compare=False)
    ns: str = field(compare=False)
    name: str = field(compare=False)
    extra: str = field(compare=False, default="")  # unregister: the "<tenant>/<node>" annotation


def condition(old: list[Obj], ctype: str, status: str, reason: str, message: str, stamp: str = "lastUpdateTime") -> Obj:
    """A condition that keeps its timestamps when nothing changed, so repeated syncs are no-op writes."""
    prev = next((c for c in old if c.get("type") == ctype), None)
    if prev and (prev.get("status"), prev.get("reason"), prev.get("message")) == (status, reason, message):
        return prev
    now = now_iso()
    since = prev.get("lastTransitionTime", now) if prev and prev.get("status") == status else now
    return {
        "type": ctype,
        "status": status,
        stamp: now,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


class Controllers:
    def __init__(self, store: Store, ready_delay: float) -> None:
        self.store, self.ready_delay = store, ready_delay
        self._heap: list[_Task] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._rollouts: dict[tuple[str, str, str], tuple[tuple[object, ...], float]] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.garbage = GarbageCollector(store)
        self._gc_pending: set[str] = set()  # clusters with a garbage collection pass queued
        # the token controller's signer and the CA it puts into token Secrets (set by the Emulator)
        self.tokens: ServiceAccountTokens | None = None
        self.ca_pem: str | None = None
        store.listeners.append(self._on_event)

    def start(self) -> None:
        with self.store.lock:  # resync whatever a state file brought back
            for cname, cl in self.store.clusters.items():
                self.garbage.rebuild(cname)
                self._schedule_gc(cname)
                for ns, name in list(cl.bucket(DEPLOYMENTS)):
                    self._schedule("deployment", cname, ns, name)
                for _, name in list(cl.bucket(NAMESPACES)):
                    self._schedule("namespace", cname, "", name)
        self._thread = threading.Thread(target=self._run, name="kube-emulator-controllers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _schedule(self, action: str, cluster: str, ns: str, name: str, delay: float = 0.0, extra: str = "") -> None:
        with self._cv:
            heapq.heappush(
                self._heap, _Task(time.monotonic() + delay, next(self._seq), action, cluster, ns, name, extra)
            )
            self._cv.notify_all()

    def _schedule_gc(self, cluster: str) -> None:
        with self._cv:
            if cluster in self._gc_pending:
                return
            self._gc_pending.add(cluster)
        self._schedule("gc", cluster, "", "", delay=GC_DELAY)

    def _on_event(self, cluster: str, ev: WatchEvent) -> None:
        meta = ev.obj["metadata"]
        if self.garbage.observe(cluster, ev):  # most events (a status write) give it no work
            self._schedule_gc(cluster)
        if ev.key == DEPLOYMENTS.key:
            if ev.type == "DELETED":
                node = (meta.get("annotations") or {}).get(TENANT_NODE, "")
                self._schedule("unregister", cluster, meta["namespace"], meta["name"], extra=node)
            else:
                self._schedule("deployment", cluster, meta["namespace"], meta["name"])
        elif ev.key == NAMESPACES.key and meta.get("deletionTimestamp") and ev.type != "DELETED":
            self._schedule("namespace", cluster, "", meta["name"])
        if ev.key == "/secrets" and ev.type != "DELETED" and ev.obj.get("type") == TOKEN_SECRET_TYPE:
            self._schedule("token", cluster, meta["namespace"], meta["name"])
        if ev.key == "/serviceaccounts" and ev.type == "DELETED":  # its token Secrets go with it
            for (ns, name), secret in list(self.store.clusters[cluster].bucket(BY_KEY["/secrets"]).items()):
                annotations = secret["metadata"].get("annotations") or {}
                if ns == meta["namespace"] and annotations.get(TOKEN_SECRET_ACCOUNT) == meta["name"]:
                    self._schedule("token", cluster, ns, name)
        if ev.key in (PODS.key, PDBS.key):
            self._schedule("pdb", cluster, meta["namespace"], "")
        if ev.type == "DELETED" and meta.get("namespace"):  # maybe the last object of a terminating ns
            nso = self.store.clusters[cluster].bucket(NAMESPACES).get(("", meta["namespace"]))
            if nso is not None and nso["metadata"].get("deletionTimestamp"):
                self._schedule("namespace", cluster, "", meta["namespace"])

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and (not self._heap or self._heap[0].due > time.monotonic()):
                    self._cv.wait(self._heap[0].due - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                task = heapq.heappop(self._heap)
            try:
                {
                    "deployment": self._sync_deployment,
                    "namespace": self._finalize_namespace,
                    "unregister": self._unregister,
                    "pdb": self._sync_pdbs,
                    "gc": self._collect_garbage,
                    "token": self._fill_token_secret,
                }[task.action](task)
            except Exception:  # a controller bug must not kill the emulator
                log.exception("controller task %s failed", task)

    def _fill_token_secret(self, t: _Task) -> None:
        if self.tokens is not None:
            self.tokens.fill_token_secret(t.cluster, t.ns, t.name, self.ca_pem)

    def _collect_garbage(self, t: _Task) -> None:
        with self._cv:
            self._gc_pending.discard(t.cluster)
        self.garbage.collect(t.cluster)

    # --- namespaces -----------------------------------------------------------------------------

    def _finalize_namespace(self, t: _Task) -> None:
        """Delete every namespaced object; drop the namespace once nothing (finalizers) is left."""
        store = self.store
        with store.lock:
            nso = store.find(t.cluster, NAMESPACES, "", t.name)
            if nso is None or not nso["metadata"].get("deletionTimestamp"):
                return
            remaining = False
            for rt in NAMESPACED:
                for obj in store.list(t.cluster, rt, t.name)[0]:
                    remaining |= not store.delete(t.cluster, rt, t.name, obj["metadata"]["name"])[1]
            if not remaining and not nso["metadata"].get("finalizers"):
                store.remove(t.cluster, NAMESPACES, "", t.name)

    # --- pod disruption budgets (the disruption controller's status) ----------------------------

    def _sync_pdbs(self, t: _Task) -> None:
        store = self.store
        with store.lock:
            cl = store.cluster(t.cluster)
            for (ns, name), pdb in list(cl.bucket(PDBS).items()):
                if ns != t.ns:
                    continue
                allowed, desired, healthy, expected = store.pdb_budget(cl, pdb)
                status = {
                    **(pdb.get("status") or {}),
                    "observedGeneration": pdb["metadata"].get("generation"),
                    "disruptionsAllowed": allowed,
                    "currentHealthy": healthy,
                    "desiredHealthy": desired,
                    "expectedPods": expected,
                }

                def with_status(cur: Obj | None, new: Obj = status) -> Obj | None:
                    return {**cur, "status": new} if cur else None

                store.mutate(t.cluster, PDBS, ns, name, with_status)

    # --- deployments ----------------------------------------------------------------------------

    def _sync_deployment(self, t: _Task) -> None:
        key = (t.cluster, t.ns, t.name)
        d = self.store.peek(t.cluster, DEPLOYMENTS, t.ns, t.name)  # read-only
        if d is None or d["metadata"].get("deletionTimestamp"):
            self._rollouts.pop(key, None)
            return
        anns = d["metadata"].get("annotations") or {}
        never = anns.get(NEVER_READY, "").lower() == "true"
        try:
            delay = float(anns.get(READY_DELAY, self.ready_delay))
        except ValueError:
            delay = self.ready_delay
        now = time.monotonic()
        fingerprint = (d["metadata"].get("generation"), never)
        tracked = self._rollouts.get(key)
        if tracked is None or tracked[0] != fingerprint:
            # A new rollout starts now, unless the status already shows it done (e.g. after a restart).
            done = not never and _strip(d.get("status") or {}) == _strip(self._status(d, "ready"))
            tracked = self._rollouts[key] = (fingerprint, now - delay if done else now)
        started = tracked[1]
        if never:
            deadline = float((d.get("spec") or {}).get("progressDeadlineSeconds", 600))
            if now - started < deadline:
                self._schedule("deployment", *key, delay=started + deadline - now)
            self._write_status(t.cluster, d, "stalled" if now - started >= deadline else "never")
            sync_replicasets(self.store, t.cluster, d, done=False)
            self._node(t.cluster, d, ready=False)
        elif now - started < delay:
            self._write_status(t.cluster, d, "progressing")
            sync_replicasets(self.store, t.cluster, d, done=False)
            self._schedule("deployment", *key, delay=started + delay - now)
        else:
            self._write_status(t.cluster, d, "ready")
            sync_replicasets(self.store, t.cluster, d, done=True)
            self._node(t.cluster, d, ready=True)

    def _write_status(self, cluster: str, d: Obj, phase: str) -> None:
        meta = d["metadata"]

        def fn(cur: Obj | None) -> Obj | None:
            if cur is None or cur["metadata"].get("generation") != meta.get("generation"):
                return None  # changed under us: the event it caused re-queues a sync
            cur["status"] = self._status(cur, phase)
            return cur

        self.store.mutate(cluster, DEPLOYMENTS, meta["namespace"], meta["name"], fn, top_level_spec=True)

    def _status(self, d: Obj, phase: str) -> Obj:
        spec, old = d.get("spec") or {}, d.get("status") or {}
        replicas, conds = int(spec.get("replicas", 1)), old.get("conditions") or []
        rs = f'ReplicaSet "{replicaset_name(d)}"'
        gen = d["metadata"].get("generation")
        if phase == "ready":
            status: Obj = {
                "observedGeneration": gen,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    condition(
                        conds, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
                    ),
                    condition(
                        conds, "Progressing", "True", "NewReplicaSetAvailable", f"{rs} has successfully progressed."
                    ),
                ],
            }
        elif phase == "progressing":  # old pods keep serving; observedGeneration catches up when done
            available = int(old.get("availableReplicas", 0))
            status = {
                "observedGeneration": old.get("observedGeneration"),
                "replicas": replicas,
                "readyReplicas": old.get("readyReplicas"),
                "availableReplicas": available,
                "unavailableReplicas": max(replicas - available, 0),
                "conditions": [
                    condition(
                        conds,
                        "Available",
                        *(
                            ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
                            if available >= replicas
                            else (
                                "False",
                                "MinimumReplicasUnavailable",
                                "Deployment does not have minimum availability.",
                            )
                        ),
                    ),
                    condition(conds, "Progressing", "True", "ReplicaSetUpdated", f"{rs} is progressing."),
                ],
            }
        else:  # never / stalled: observed, but its pods never become ready
            progressing = (
                ("False", "ProgressDeadlineExceeded", f"{rs} has timed out progressing.")
                if phase == "stalled"
                else ("True", "ReplicaSetUpdated", f"{rs} is progressing.")
            )
            status = {
                "observedGeneration": gen,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "unavailableReplicas": replicas,
                "conditions": [
                    condition(
                        conds,
                        "Available",
                        "False",
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.",
                    ),
                    condition(conds, "Progressing", *progressing),
                ],
            }
        kept = {k: v for k, v in old.items() if k not in _OWNED}  # e.g. collisionCount stays
        return {**kept, **{k: v for k, v in status.items() if v}}  # the API omits zero counts

    # --- tenant nodes ---------------------------------------------------------------------------

    def _node(self, cluster: str, d: Obj, ready: bool) -> None:
        """A host Deployment annotated tenant-node is a VM whose kubelet registers in the tenant cluster."""
        anns, labels = d["metadata"].get("annotations") or {}, d["metadata"].get("labels") or {}
        tenant, _, node = anns.get(TENANT_NODE, "").partition("/")
        if cluster != "" or not tenant or not node:
            return
        version = anns.get(KUBELET_VERSION)
        copied = {k: v for k, v in labels.items() if k.startswith(NODE_LABEL_PREFIXES)}
        created = False

        def fn(cur: Obj | None) -> Obj | None:
            nonlocal created
            if cur is None:
                if not ready:
                    return None  # a VM that never booted never registers
                created, cur = True, {"metadata": {"name": node}, "spec": {}}
            meta = cur["metadata"]
            meta["labels"] = {
                **(meta.get("labels") or {}),
                **copied,
                "kubernetes.io/hostname": node,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            }
            status = cur.setdefault("status", {})
            ident = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}.{tenant}"))
            info = status.setdefault(
                "nodeInfo",
                {  # every field: the client models require them all
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "containerd://1.7.24",
                    "osImage": "tenantctl emulated node",
                    "kernelVersion": "6.1.0-emulated",
                    "bootID": ident,
                    "machineID": ident.replace("-", ""),
                    "systemUUID": ident,
                    "kubeletVersion": "v1.32.0",
                    "kubeProxyVersion": "v1.32.0",
                },
            )
            if version:
                info["kubeletVersion"] = info["kubeProxyVersion"] = version
            status.setdefault("capacity", {"cpu": "2", "memory": "4Gi", "pods": "110"})
            status.setdefault("allocatable", dict(status["capacity"]))
            status["addresses"] = [{"type": "Hostname", "address": node}]
            ready_cond = (
                ("True", "KubeletReady", "kubelet is posting ready status")
                if ready
                else ("False", "KubeletNotReady", "the host deployment is not available")
            )
            status["conditions"] = [
                condition(status.get("conditions") or [], "Ready", *ready_cond, stamp="lastHeartbeatTime")
            ]
            return cur

        self.store.mutate(tenant, NODES, "", node, fn)
        try:
            count = int(anns.get(TENANT_PODS, "0")) if created else 0
        except ValueError:
            count = 0
        for i in range(count):  # only at first registration, so evicted pods stay evicted
            pod = {
                "metadata": {"name": f"{node}-workload-{i}", "labels": {"app": "workload"}},
                "spec": {"nodeName": node, "containers": [{"name": "workload", "image": "registry.k8s.io/pause:3.10"}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            }
            with contextlib.suppress(ApiError):  # e.g. the tenant deleted its default namespace
                self.store.mutate(
                    tenant,
                    PODS,
                    "default",
                    pod["metadata"]["name"],
                    lambda cur, p=pod: p if cur is None else None,  # type: ignore[misc]
                )

    def _unregister(self, t: _Task) -> None:
        """The host Deployment is gone: its Node leaves the tenant cluster with the pods bound to it."""
        self._rollouts.pop((t.cluster, t.ns, t.name), None)
        tenant, _, node = t.extra.partition("/")
        if t.cluster != "" or not tenant or not node:
            return
        with self.store.lock:
            if self.store.find(t.cluster, DEPLOYMENTS, t.ns, t.name) is not None:
                return  # re-created meanwhile
            self.store.remove(tenant, NODES, "", node)
            for pod in self.store.list(tenant, PODS)[0]:
                if (pod.get("spec") or {}).get("nodeName") == node:
                    self.store.remove(tenant, PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])


def _strip(status: Obj) -> Obj:
    """Status without condition timestamps, to compare what a sync would write with what is there."""
    return {
        k: ([{ck: cv for ck, cv in c.items() if not ck.startswith("last")} for c in v] if k == "conditions" else v)
        for k, v in status.items()
    }
