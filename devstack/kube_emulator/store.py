"""Generic, thread-safe object store shared by the host cluster and every tenant virtual cluster.

One re-entrant lock guards everything; one resourceVersion counter serves the whole server (as etcd's
revision does). Stored dicts are never mutated after they are committed (every write builds a new
dict), so watch history and snapshots can share them; callers get deep copies, except those that
say they only read what they get (``list(read_only=True)``, ``mutate``'s result, ``peek``).
"""

from __future__ import annotations

import itertools
import math
import random
import string
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import apply, schema
from .fieldsets import carry_over, record_update
from .patching import APPLY_PATCH, apply_patch, patch_type
from .resources import (
    BY_KIND,
    FOREGROUND_FINALIZER,
    INITIAL_STATUS,
    NAMESPACES,
    ORPHAN_FINALIZER,
    PDBS,
    PODS,
    RESOURCES,
    SYSTEM_NAMESPACES,
    ApiError,
    Obj,
    ResourceType,
    WriteOptions,
    admit,
    clone,
    now_iso,
    scale_view,
)
from .selectors import Matcher, match_selector_object
from .validation import validate, validate_name

Key = tuple[str, str]  # (namespace or "", name)
GroupKey = tuple[str, str, str]  # (cluster, ResourceType.key, namespace or ""): what a save encodes as one
_GROUP_VERSIONS = itertools.count(1)


@dataclass
class WatchEvent:
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    key: str  # ResourceType.key
    obj: Obj
    old: Obj | None  # previous state, so label-selector watches can turn MODIFIED into ADDED/DELETED


@dataclass(frozen=True)
class SnapshotGroup:
    """One kind's objects in one namespace of one cluster, at ``version`` (``Store.snapshot_groups``)."""

    key: GroupKey
    version: int
    objects: list[Obj] | None  # None: unchanged since the version the caller already has


@dataclass
class Cluster:
    name: str  # "" is the host cluster, anything else a tenant virtual cluster
    compacted_rv: int  # watches from an older resourceVersion get 410 Expired
    objects: dict[str, dict[Key, Obj]] = field(default_factory=dict)
    history: deque[WatchEvent] = field(default_factory=deque)
    # rt.key -> namespace -> names of its objects: a list in one namespace (a tenant's nodes, a drift
    # check) looks at that namespace's objects only, not at every tenant's objects of the kind
    names_by_namespace: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    # (rt.key, namespace) -> a number that moves whenever an object of that kind in that namespace
    # changes, for every group that has objects: a save re-encodes only the groups whose number moved
    group_versions: dict[tuple[str, str], int] = field(default_factory=dict)

    def bucket(self, rt: ResourceType) -> dict[Key, Obj]:
        """The kind's objects by (namespace, name); change them only through ``put`` and ``drop``."""
        return self.objects.setdefault(rt.key, {})

    def put(self, rt: ResourceType, obj: Obj) -> None:
        key = key_of(obj)
        self.bucket(rt)[key] = obj
        self.names_by_namespace.setdefault(rt.key, {}).setdefault(key[0], set()).add(key[1])
        self.group_versions[(rt.key, key[0])] = next(_GROUP_VERSIONS)

    def drop(self, rt: ResourceType, key: Key) -> None:
        self.bucket(rt).pop(key, None)
        names = self.names_by_namespace.get(rt.key, {}).get(key[0])
        if names is not None:
            names.discard(key[1])
            if not names:
                del self.names_by_namespace[rt.key][key[0]]
                self.group_versions.pop((rt.key, key[0]), None)
            else:
                self.group_versions[(rt.key, key[0])] = next(_GROUP_VERSIONS)

    def group(self, kind: str, ns: str) -> list[Obj]:
        """The stored objects of one kind in one namespace, in name order (read-only)."""
        bucket = self.objects.get(kind, {})
        return [bucket[(ns, name)] for name in sorted(self.names_by_namespace.get(kind, {}).get(ns, ()))]

    def names_in(self, rt: ResourceType, ns: str) -> set[str]:
        """The names of the kind's objects in ``ns``: the index itself, to read under the store's lock."""
        return self.names_by_namespace.get(rt.key, {}).get(ns, set())


Listener = Callable[[str, WatchEvent], None]


def key_of(obj: Obj) -> Key:
    return obj["metadata"].get("namespace") or "", obj["metadata"]["name"]


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def pod_healthy(pod: Obj) -> bool:
    """Healthy unless its status says otherwise (terminal phase or a Ready=False condition)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded") or pod["metadata"].get("deletionTimestamp"):
        return False
    return not any(c.get("type") == "Ready" and c.get("status") == "False" for c in status.get("conditions") or [])


def _writable(obj: Obj) -> Obj:
    """A copy whose metadata, status and spec's own keys may change; deeper spec values and the
    managed fields (which only writes through the API record) are shared."""
    meta = {k: v if k == "managedFields" else clone(v) for k, v in obj["metadata"].items()}
    out = {**obj, "metadata": meta}
    if "status" in obj:
        out["status"] = clone(obj["status"])
    if isinstance(obj.get("spec"), dict):
        out["spec"] = dict(obj["spec"])
    return out


def _scaled(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value)


class Store:
    def __init__(self, history_size: int = 1000) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 0
        self.history_size = history_size
        self.clusters: dict[str, Cluster] = {}
        self.listeners: list[Listener] = []
        self.closed = False
        self._ips = 0  # service clusterIP allocator

    # --- clusters, persistence ----------------------------------------------------------------

    def cluster(self, name: str) -> Cluster:
        """The cluster's store, created (with the usual system namespaces) on first use."""
        with self.lock:
            cl = self.clusters.get(name)
            if cl is None:
                cl = self.clusters[name] = Cluster(name, compacted_rv=self.rv)
                for ns in SYSTEM_NAMESPACES:
                    self._create(cl, NAMESPACES, "", {"metadata": {"name": ns}}, copy=False)
            return cl

    def snapshot(self) -> Obj:
        """Everything, as the state file holds it (in the order ``snapshot_groups`` lists it)."""
        with self.lock:  # stored dicts are immutable, so sharing them outside the lock is safe
            head, groups = self.snapshot_groups({})
            clusters: dict[str, list[Obj]] = {name: [] for name in head["clusters"]}
            for group in groups:
                clusters[group.key[0]].extend(group.objects or ())
            return {**head, "clusters": clusters}

    def snapshot_groups(self, known: Mapping[GroupKey, int]) -> tuple[Obj, list[SnapshotGroup]]:
        """The snapshot's header (``clusters``: their names) and its objects by cluster, kind and
        namespace; a group whose version ``known`` already has comes without its objects."""
        with self.lock:
            head = {"format": 1, "resourceVersion": self.rv, "ips": self._ips, "clusters": list(self.clusters)}
            groups = []
            for name, cl in self.clusters.items():
                for (kind, ns), version in cl.group_versions.items():
                    key = (name, kind, ns)
                    objects = None if known.get(key) == version else cl.group(kind, ns)
                    groups.append(SnapshotGroup(key, version, objects))
            return head, groups

    def restore(self, data: Obj) -> None:
        with self.lock:
            self.rv, self._ips = int(data["resourceVersion"]), int(data.get("ips", 0))
            for name, objs in data["clusters"].items():
                cl = self.clusters[name] = Cluster(name, compacted_rv=self.rv)
                for obj in objs:
                    cl.put(BY_KIND[(obj["apiVersion"], obj["kind"])], obj)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.cond.notify_all()

    # --- the single write path ------------------------------------------------------------------

    def _commit(
        self, cl: Cluster, rt: ResourceType, obj: Obj, old: Obj | None, delete: bool = False, copy: bool = True
    ) -> Obj:
        """Store ``obj`` (or drop it) and tell watchers; returns a copy, or with ``copy=False`` the
        stored object itself (read-only: for callers that do not keep or change it)."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if delete:
            cl.drop(rt, key_of(obj))
        else:
            cl.put(rt, obj)
        etype = "DELETED" if delete else "ADDED" if old is None else "MODIFIED"
        event = WatchEvent(self.rv, etype, rt.key, obj, old)
        cl.history.append(event)
        while len(cl.history) > self.history_size:
            cl.compacted_rv = cl.history.popleft().rv
        self.cond.notify_all()
        for listener in self.listeners:
            listener(cl.name, event)
        return clone(obj) if copy else obj

    # --- reads ----------------------------------------------------------------------------------

    def _existing(self, cl: Cluster, rt: ResourceType, ns: str, name: str) -> Obj:
        obj = cl.bucket(rt).get((ns if rt.namespaced else "", name))
        if obj is None:
            raise ApiError(404, f'{rt.qualified} "{name}" not found', details=rt.details(name))
        return obj

    def get(self, cluster: str, rt: ResourceType, ns: str, name: str) -> Obj:
        with self.lock:
            return clone(self._existing(self.cluster(cluster), rt, ns, name))

    def find(self, cluster: str, rt: ResourceType, ns: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.cluster(cluster).bucket(rt).get((ns if rt.namespaced else "", name))
            return clone(obj) if obj is not None else None

    # Controllers read far more than they write (a Deployment's sync looks at every ReplicaSet it
    # owns); these two hand out the stored dicts themselves, which is safe because a committed dict is
    # never mutated (every write builds a new one). Callers must not change what they get.
    def peek(self, cluster: str, rt: ResourceType, ns: str, name: str) -> Obj | None:
        """The stored object, not a copy: read-only."""
        with self.lock:
            return self.cluster(cluster).bucket(rt).get((ns if rt.namespaced else "", name))

    def peek_list(
        self, cluster: str, rt: ResourceType, ns: str | None = None, match: Matcher | None = None
    ) -> list[Obj]:
        """The stored objects in name order, not copies: read-only."""
        with self.lock:
            cl = self.cluster(cluster)
            bucket = cl.bucket(rt)
            keys = [(ns, name) for name in sorted(cl.names_in(rt, ns))] if ns else sorted(bucket)
            return [o for o in (bucket[k] for k in keys) if match is None or match(o)]

    def list(
        self,
        cluster: str,
        rt: ResourceType,
        ns: str | None = None,
        match: Matcher | None = None,
        read_only: bool = False,
    ) -> tuple[list[Obj], int]:
        """Copies of the matching objects and the resourceVersion they are at; ``read_only``: the
        stored objects themselves, for a caller that only encodes them (a list response)."""
        with self.lock:
            items = self.peek_list(cluster, rt, ns, match)
            return (items if read_only else [clone(o) for o in items]), self.rv

    # --- writes ---------------------------------------------------------------------------------

    def _check_body(self, rt: ResourceType, body: Any, ns: str) -> Obj:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise ApiError(400, f"the object provided is unrecognized (must be of type {rt.kind})")
        if body.get("kind") not in (None, "", rt.kind) or body.get("apiVersion") not in (None, "", rt.api_version):
            raise ApiError(
                400,
                f"the API version in the data ({body.get('apiVersion')}) and kind "
                f"({body.get('kind')}) do not match the expected {rt.api_version} {rt.kind}",
            )
        obj = clone(body)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(
                    400, "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        return obj

    def create(self, cluster: str, rt: ResourceType, ns: str, body: Any, opts: WriteOptions | None = None) -> Obj:
        with self.lock:
            return self._create(self.cluster(cluster), rt, ns, body, opts or WriteOptions())

    @staticmethod
    def _decode(rt: ResourceType, obj: Obj, opts: WriteOptions) -> Obj:
        """Schema check of a client's write: wrong types are a 400; undeclared fields per fieldValidation."""
        decoded = schema.decode(rt, obj)
        schema.check_unknown(rt, decoded.unknown, opts.validation, opts.warnings)
        return decoded.obj

    def _create(
        self,
        cl: Cluster,
        rt: ResourceType,
        ns: str,
        body: Any,
        opts: WriteOptions | None = None,
        keep_status: bool = False,
        applied: bool = False,
        copy: bool = True,
    ) -> Obj:
        """opts None: a controller's write (trusted, no field manager); applied: managedFields are set."""
        obj = self._check_body(rt, body, ns)
        if opts is not None and not applied:
            obj = self._decode(rt, obj, opts)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + "2456789", k=5))
        validate_name(rt, meta.get("name") or "")
        name = meta["name"]
        if rt.namespaced:
            nso = cl.bucket(NAMESPACES).get(("", ns))
            if nso is None:
                raise ApiError(404, f'namespaces "{ns}" not found', details={"name": ns, "kind": "namespaces"})
            if nso["metadata"].get("deletionTimestamp"):
                msg = f"unable to create new content in namespace {ns} because it is being terminated"
                details = {
                    **rt.details(name),
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "field": "metadata.namespace",
                            "message": f"namespace {ns} is being terminated",
                        }
                    ],
                }
                raise ApiError(403, f'{rt.qualified} "{name}" is forbidden: {msg}', details=details)
        if key_of(obj) in cl.bucket(rt):
            raise ApiError(409, f'{rt.qualified} "{name}" already exists', "AlreadyExists", rt.details(name))
        for transient in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "generation",
        ):
            meta.pop(transient, None)
        if not applied:
            meta.pop("managedFields", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso())
        if rt.generation:
            meta["generation"] = 1
        if "status" in rt.subresources and rt.kind != "Node" and not keep_status:
            obj["status"] = clone(INITIAL_STATUS.get(rt.kind, {}))  # status is the controllers' to write
        self._ips += rt.kind == "Service"
        admit(rt, obj, None, self._ips)
        validate(rt, obj, None)
        if opts is not None and opts.manager and not applied:
            record_update(rt, None, obj, opts.manager)
        return obj if opts is not None and opts.dry_run else self._commit(cl, rt, obj, None, copy=copy)

    def update(
        self,
        cluster: str,
        rt: ResourceType,
        ns: str,
        name: str,
        body: Any,
        sub: str = "",
        opts: WriteOptions | None = None,
    ) -> Obj:
        with self.lock:
            cl = self.cluster(cluster)
            return self._replace(cl, rt, self._existing(cl, rt, ns, name), body, sub, opts or WriteOptions())

    def patch(
        self,
        cluster: str,
        rt: ResourceType,
        ns: str,
        name: str,
        content_type: str,
        raw: bytes,
        sub: str = "",
        opts: WriteOptions | None = None,
    ) -> tuple[Obj, bool]:
        """Returns (object, created): server-side apply creates what does not exist yet."""
        opts = opts or WriteOptions()
        ctype = patch_type(content_type)  # the patch type is checked before any lookup
        apply.check_manager(opts.manager, opts.force, ctype == APPLY_PATCH)
        with self.lock:  # read-patch-write is atomic: patches never conflict with each other
            cl = self.cluster(cluster)
            if ctype == APPLY_PATCH:
                return self._apply(cl, rt, ns, name, raw, sub, opts)
            old = self._existing(cl, rt, ns, name)
            base = scale_view(rt, old) if sub == "scale" else clone(old)
            node = schema.scale_root() if sub == "scale" else schema.root(rt)
            return self._replace(cl, rt, old, apply_patch(ctype, base, raw, node), sub, opts), False

    def _apply(
        self, cl: Cluster, rt: ResourceType, ns: str, name: str, raw: bytes, sub: str, opts: WriteOptions
    ) -> tuple[Obj, bool]:
        body = self._check_body(rt, apply.parse(raw), ns)
        if body["metadata"].get("name", name) != name:
            raise ApiError(
                400, f"the name of the object ({body['metadata']['name']}) does not match the name on the URL ({name})"
            )
        body["metadata"]["name"] = name
        config = self._decode(rt, body, opts)
        assert opts.manager is not None
        live = cl.bucket(rt).get((ns if rt.namespaced else "", name))
        if live is None:
            if sub:
                raise ApiError(404, f'{rt.qualified} "{name}" not found', details=rt.details(name))
            merged = apply.apply(rt, {}, config, opts.manager, opts.force)
            return self._create(cl, rt, ns, merged, opts, applied=True), True
        merged = apply.apply(rt, clone(live), config, opts.manager, opts.force)
        return self._replace(cl, rt, live, merged, sub, opts, applied=True), False

    def _replace(
        self, cl: Cluster, rt: ResourceType, old: Obj, body: Any, sub: str, opts: WriteOptions, applied: bool = False
    ) -> Obj:
        ns, name = key_of(old)
        if sub == "scale":
            spec = body.get("spec") if isinstance(body, dict) else None
            replicas = spec.get("replicas", 0) if isinstance(spec, dict) else None
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(
                    422,
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                    f"{replicas}: must be greater than or equal to 0",
                )
            rv = (body.get("metadata") or {}).get("resourceVersion")
            new = clone(old)
            new["spec"]["replicas"] = replicas
        else:
            obj = self._check_body(rt, body, ns)
            if not applied:
                obj = self._decode(rt, obj, opts)
            if obj["metadata"].get("name", name) != name:
                raise ApiError(
                    400,
                    f"the name of the object ({obj['metadata']['name']}) does not match the name on the URL ({name})",
                )
            rv = obj["metadata"].get("resourceVersion")
            if sub == "status":
                new = clone(old)
                new["status"] = obj.get("status") or {}
            else:
                new, meta = obj, obj["metadata"]
                for system_field in (
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "generation",
                    "name",
                    "deletionGracePeriodSeconds",
                ):
                    if system_field in old["metadata"]:
                        meta[system_field] = old["metadata"][system_field]
                    else:
                        meta.pop(system_field, None)
                if "status" in rt.subresources:  # the main resource ignores status, as on a real server
                    new.pop("status", None)
                    if "status" in old:
                        new["status"] = old["status"]
                if not applied:
                    carry_over(old, new)
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                "Conflict",
                rt.details(name),
            )
        result = self._update(cl, rt, old, new, opts, None if applied else sub)
        return scale_view(rt, result) if sub == "scale" else result

    def _update(
        self,
        cl: Cluster,
        rt: ResourceType,
        old: Obj,
        new: Obj,
        opts: WriteOptions | None = None,
        track: str | None = None,
        copy: bool = True,
    ) -> Obj:
        """track: the subresource whose write is recorded for opts.manager (None: apply did it already)."""
        meta = new["metadata"]
        dry_run = opts is not None and opts.dry_run
        admit(rt, new, old, self._ips)  # defaulting first, so omitted defaults are not a spec change
        validate(rt, new, old)
        if opts is not None and opts.manager and track is not None:
            record_update(rt, old, new, opts.manager, track)
        if rt.generation and _spec_part(new) != _spec_part(old):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old or dry_run:  # a no-op write does not bump resourceVersion, like a real server
            return clone(new) if copy else new
        gone = meta.get("deletionTimestamp") and not meta.get("finalizers") and rt is not NAMESPACES
        return self._commit(cl, rt, new, old, delete=bool(gone), copy=copy)

    def delete(
        self, cluster: str, rt: ResourceType, ns: str, name: str, options: Obj | None = None, dry_run: bool = False
    ) -> tuple[Obj, bool]:
        """Returns (object, deleted_now). Finalizers / namespaces only get a deletionTimestamp."""
        with self.lock:
            cl = self.cluster(cluster)
            old = self._existing(cl, rt, ns, name)
            if rt is NAMESPACES and name in ("default", "kube-system", "kube-public"):
                raise ApiError(
                    403,
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    details={"name": name, "kind": "namespaces"},
                )
            pre = (options or {}).get("preconditions") or {}
            for what, value in (("UID", pre.get("uid")), ("ResourceVersion", pre.get("resourceVersion"))):
                actual = old["metadata"]["uid" if what == "UID" else "resourceVersion"]
                if value and value != actual:
                    raise ApiError(
                        409,
                        f'Operation cannot be fulfilled on {rt.qualified} "{name}": '
                        f"Precondition failed: {what} in precondition: {value}, {what} in object "
                        f"meta: {actual}",
                        "Conflict",
                        rt.details(name),
                    )
            gc_finalizer = _gc_finalizer(options or {})
            if rt is NAMESPACES or old["metadata"].get("finalizers") or gc_finalizer:
                if old["metadata"].get("deletionTimestamp") and rt is NAMESPACES:
                    raise ApiError(
                        409,
                        f'Operation cannot be fulfilled on namespaces "{name}": The system is '
                        "ensuring all content is removed from this namespace.  Upon completion, "
                        "this namespace will automatically be purged by the system.",
                        "Conflict",
                        rt.details(name),
                    )
                if old["metadata"].get("deletionTimestamp"):
                    return clone(old), False
                new = clone(old)
                new["metadata"].update(deletionTimestamp=now_iso(), deletionGracePeriodSeconds=0)
                if gc_finalizer and gc_finalizer not in (finalizers := new["metadata"].setdefault("finalizers", [])):
                    finalizers.append(gc_finalizer)  # the garbage collector finishes the deletion
                if rt is NAMESPACES:
                    new["status"] = {**new.get("status", {}), "phase": "Terminating"}
                return (new if dry_run else self._commit(cl, rt, new, old)), False
            if dry_run:
                return clone(old), True
            return self._commit(cl, rt, clone(old), old, delete=True), True

    # --- controller helpers ---------------------------------------------------------------------

    def mutate(
        self,
        cluster: str,
        rt: ResourceType,
        ns: str,
        name: str,
        fn: Callable[[Obj | None], Obj | None],
        *,
        top_level_spec: bool = False,
    ) -> Obj | None:
        """Privileged read-modify-write for controllers: may create, and may write status directly.
        Returns the written object as stored (read-only: no copy is made, as no controller keeps
        it), or None when ``fn`` declined or changed nothing.

        ``top_level_spec``: ``fn`` changes metadata, status and at most the spec's own keys (a replica
        count), so it gets those copied and shares the rest (a pod template) with the stored object.
        """
        with self.lock:
            cl = self.cluster(cluster)
            cur = cl.bucket(rt).get((ns if rt.namespaced else "", name))
            new = fn(None if cur is None else _writable(cur) if top_level_spec else clone(cur))
            if new is None:
                return None
            if new == cur:  # controllers converge the same values again and again: nothing to write
                return None
            if cur is None:
                return self._create(cl, rt, ns, new, keep_status=True, copy=False)
            return self._update(cl, rt, cur, new, copy=False)

    def remove(self, cluster: str, rt: ResourceType, ns: str, name: str) -> None:
        """Drop an object regardless of finalizers (namespace controller, node unregistration)."""
        with self.lock:
            cl = self.cluster(cluster)
            cur = cl.bucket(rt).get((ns if rt.namespaced else "", name))
            if cur is not None:
                self._commit(cl, rt, clone(cur), cur, delete=True, copy=False)

    def evict(self, cluster: str, ns: str, name: str) -> None:
        """policy/v1 Eviction: delete the pod unless a matching PodDisruptionBudget would be violated."""
        with self.lock:
            cl = self.cluster(cluster)
            pod = self._existing(cl, PODS, ns, name)
            labels = pod["metadata"].get("labels") or {}
            pdbs = [
                p
                for (pns, _), p in sorted(cl.bucket(PDBS).items())
                if pns == ns and match_selector_object(p.get("spec", {}).get("selector"), labels)
            ]
            if len(pdbs) > 1:
                raise ApiError(
                    500,
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                )
            if pdbs and pod_healthy(pod):  # unhealthy pods may always be evicted
                allowed, desired, healthy, _ = self.pdb_budget(cl, pdbs[0])
                if allowed <= 0:
                    pdb_name = pdbs[0]["metadata"]["name"]
                    raise ApiError(
                        429,
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        details={
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb_name} needs {desired} healthy "
                                    f"pods and has {healthy} currently",
                                }
                            ]
                        },
                    )
            self.delete(cluster, PODS, ns, name)

    def pdb_budget(self, cl: Cluster, pdb: Obj) -> tuple[int, int, int, int]:
        """(disruptionsAllowed, desiredHealthy, currentHealthy, expectedPods) over the matching pods."""
        ns, spec = pdb["metadata"]["namespace"], pdb.get("spec") or {}
        pods = [
            p
            for (pns, _), p in cl.bucket(PODS).items()
            if pns == ns
            and not p["metadata"].get("deletionTimestamp")
            and match_selector_object(spec.get("selector"), p["metadata"].get("labels") or {})
        ]
        expected, healthy = len(pods), sum(pod_healthy(p) for p in pods)
        if spec.get("minAvailable") is not None:
            desired = _scaled(spec["minAvailable"], expected)
        elif spec.get("maxUnavailable") is not None:
            desired = max(expected - _scaled(spec["maxUnavailable"], expected), 0)
        else:
            desired = 0
        return max(healthy - desired, 0), desired, healthy, expected

    # --- watch ----------------------------------------------------------------------------------

    def watch(
        self, cluster: str, rt: ResourceType, ns: str | None, match: Matcher, since: str | None, timeout: float
    ) -> Generator[Obj, None, None]:
        """Yield watch events ({type, object}); replays history newer than `since`, then blocks."""
        deadline = time.monotonic() + timeout
        with self.lock:
            cl = self.cluster(cluster)
            if since in (None, "", "0"):  # "start at most recent": synthetic ADDED for what exists
                last = self.rv
                pending = [{"type": "ADDED", "object": clone(o)} for o in self.peek_list(cluster, rt, ns, match)]
            else:
                try:
                    last = int(since)
                except ValueError:
                    raise ApiError(400, f'Invalid value: "{since}": resourceVersion must be an integer') from None
                pending = []
        yield from pending
        expired = False
        while not expired:
            with self.lock:
                if last < cl.compacted_rv:  # the events it needs have left the bounded history
                    expired = True
                    out = [
                        {
                            "type": "ERROR",
                            "object": ApiError(410, f"too old resource version: {last} ({cl.compacted_rv})").status(),
                        }
                    ]
                else:
                    events = [e for e in cl.history if e.rv > last]
                    if not events:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or self.closed:
                            return
                        self.cond.wait(min(remaining, 1.0))
                        continue
                    last = events[-1].rv
                    out = [ev for e in events if (ev := _visible(e, rt, ns, match)) is not None]
            yield from out  # outside the lock: the consumer writes to a socket


def _gc_finalizer(options: Obj) -> str | None:
    """The finalizer a propagation policy puts on the owner (Background: none, the owner goes at once)."""
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy not in (None, "Background", "Foreground", "Orphan"):
        raise ApiError(
            422,
            f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}": '
            'supported values: "Foreground", "Background", "Orphan", "nil"',
        )
    return {"Foreground": FOREGROUND_FINALIZER, "Orphan": ORPHAN_FINALIZER}.get(policy or "")


def _visible(e: WatchEvent, rt: ResourceType, ns: str | None, match: Matcher) -> Obj | None:
    if e.key != rt.key or (ns and e.obj["metadata"].get("namespace") != ns):
        return None
    now_ok, was_ok = match(e.obj), e.old is not None and match(e.old)
    if e.type == "MODIFIED":
        etype = "MODIFIED" if now_ok and was_ok else "ADDED" if now_ok else "DELETED" if was_ok else None
    else:
        etype = e.type if now_ok else None
    return {"type": etype, "object": clone(e.obj)} if etype else None


NAMESPACED = tuple(rt for rt in RESOURCES if rt.namespaced)
