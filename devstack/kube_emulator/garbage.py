"""The garbage collector: ownerReferences, the three propagation policies, blockOwnerDeletion.

As kube-controller-manager's, it works after the fact, from store events (one sweep per cluster,
run by the controllers' thread):

- an object whose owners are all gone (deleted, or never there: a *dangling* reference whose uid
  matches nothing) is deleted; one that still has a live owner only loses the dangling references;
- an owner deleted with `propagationPolicy=Orphan` carries the `orphan` finalizer: its dependents
  lose their reference to it, then the finalizer goes and with it the owner;
- an owner deleted with `Foreground` carries `foregroundDeletion`: its dependents are deleted (in the
  foreground too), and the owner goes once no dependent with `blockOwnerDeletion: true` is left;
- `Background` (the default) deletes the owner at once; the first rule then takes its dependents.

References to kinds the emulator does not serve are left alone (the real collector cannot resolve
them either).
"""

from __future__ import annotations

from collections.abc import Iterator

from .resources import BY_KIND, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, RESOURCES, Obj, ResourceType
from .store import Store, key_of

SETTLE_PASSES = 20  # bounds a request's synchronous collection (each pass resolves one level of owners)


class GarbageCollector:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _objects(self, cluster: str) -> Iterator[tuple[ResourceType, Obj]]:
        """Every object as it is now: an earlier step of the same pass may have changed or deleted it."""
        cl = self.store.cluster(cluster)
        for rt in RESOURCES:
            bucket = cl.bucket(rt)
            for key in list(bucket):
                if (obj := bucket.get(key)) is not None:
                    yield rt, obj

    def _owner_state(self, cluster: str, dependent: Obj, ref: Obj) -> str:
        """'live', 'gone' (dangling or deleted) or 'unknown' (a kind the emulator does not serve)."""
        rt = BY_KIND.get((ref.get("apiVersion", ""), ref.get("kind", "")))
        if rt is None:
            return "unknown"
        ns = dependent["metadata"].get("namespace", "")
        if rt.namespaced and not ns:
            return "gone"  # a cluster-scoped object cannot be owned by a namespaced one
        owner = self.store.cluster(cluster).bucket(rt).get((ns if rt.namespaced else "", ref.get("name", "")))
        return "live" if owner is not None and owner["metadata"].get("uid") == ref.get("uid") else "gone"

    def collect(self, cluster: str) -> None:
        """One pass over a cluster; every step is idempotent, later events bring the next pass."""
        store = self.store
        with store.lock:
            dependents: dict[str, list[tuple[ResourceType, Obj]]] = {}
            for rt, obj in self._objects(cluster):
                for ref in obj["metadata"].get("ownerReferences") or []:
                    dependents.setdefault(ref.get("uid", ""), []).append((rt, obj))
            for rt, obj in self._objects(cluster):
                meta = obj["metadata"]
                finalizers = meta.get("finalizers") or []
                if not meta.get("deletionTimestamp"):
                    self._check_owners(cluster, rt, obj)
                elif ORPHAN_FINALIZER in finalizers:
                    self._orphan(cluster, rt, obj, dependents.get(meta["uid"], []))
                elif FOREGROUND_FINALIZER in finalizers:
                    self._foreground(cluster, rt, obj, dependents.get(meta["uid"], []))

    def settle(self, cluster: str) -> None:
        """Run collection passes within a Foreground/Orphan delete request until nothing changes.

        What nothing holds (no custom finalizer on a dependent) is therefore gone when the request
        returns, where a real collector takes a moment; clients that delete and then look again (or
        re-create under the same name) meet a settled state instead of racing the collector. What
        a finalizer holds stays visible, terminating, as on a real cluster.
        """
        with self.store.lock:
            for _ in range(SETTLE_PASSES):
                before = self.store.rv
                self.collect(cluster)
                if self.store.rv == before:
                    return

    def _check_owners(self, cluster: str, rt: ResourceType, obj: Obj) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs:
            return
        states = [self._owner_state(cluster, obj, ref) for ref in refs]
        if "gone" not in states:
            return
        ns, name = key_of(obj)
        if all(state == "gone" for state in states):
            self.store.delete(cluster, rt, ns, name, {"propagationPolicy": "Background"})
            return
        dangling = {ref.get("uid", "") for ref, state in zip(refs, states, strict=True) if state == "gone"}
        self._drop_refs(cluster, rt, obj, dangling)

    def _drop_refs(self, cluster: str, rt: ResourceType, obj: Obj, owner_uids: set[str]) -> None:
        ns, name = key_of(obj)
        uid = obj["metadata"]["uid"]

        def fn(cur: Obj | None) -> Obj | None:
            if cur is None or cur["metadata"]["uid"] != uid:
                return None
            refs = [r for r in cur["metadata"].get("ownerReferences") or [] if r.get("uid") not in owner_uids]
            if refs:
                cur["metadata"]["ownerReferences"] = refs
            else:
                cur["metadata"].pop("ownerReferences", None)
            return cur

        self.store.mutate(cluster, rt, ns, name, fn)

    def _drop_finalizer(self, cluster: str, rt: ResourceType, owner: Obj, finalizer: str) -> None:
        ns, name = key_of(owner)
        uid = owner["metadata"]["uid"]

        def fn(cur: Obj | None) -> Obj | None:
            if cur is None or cur["metadata"]["uid"] != uid:
                return None
            rest = [f for f in cur["metadata"].get("finalizers") or [] if f != finalizer]
            if rest:
                cur["metadata"]["finalizers"] = rest
            else:
                cur["metadata"].pop("finalizers", None)
            return cur

        self.store.mutate(cluster, rt, ns, name, fn)

    def _orphan(self, cluster: str, rt: ResourceType, owner: Obj, deps: list[tuple[ResourceType, Obj]]) -> None:
        uid = owner["metadata"]["uid"]
        for dep_rt, dep in deps:
            self._drop_refs(cluster, dep_rt, dep, {uid})
        self._drop_finalizer(cluster, rt, owner, ORPHAN_FINALIZER)

    def _foreground(self, cluster: str, rt: ResourceType, owner: Obj, deps: list[tuple[ResourceType, Obj]]) -> None:
        uid = owner["metadata"]["uid"]
        blocking = False
        for dep_rt, stale in deps:
            dep = self.store.cluster(cluster).bucket(dep_rt).get(key_of(stale))
            if dep is None or dep["metadata"]["uid"] != stale["metadata"]["uid"]:
                continue  # collected earlier in this pass
            ref = next((r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") == uid), None)
            if ref is None:
                continue
            blocking |= bool(ref.get("blockOwnerDeletion"))
            if not dep["metadata"].get("deletionTimestamp"):
                ns, name = key_of(dep)
                self.store.delete(cluster, dep_rt, ns, name, {"propagationPolicy": "Foreground"})
        if not blocking:
            self._drop_finalizer(cluster, rt, owner, FOREGROUND_FINALIZER)
