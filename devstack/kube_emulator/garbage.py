"""The garbage collector: ownerReferences, the three propagation policies, blockOwnerDeletion.

As kube-controller-manager's, it works after the fact, from store events, and as its graph builder
it keeps an index of who owns what (owner uid -> dependents) from those events, so a pass looks only
at the objects an event concerns (the object whose references changed, the dependents of a deleted
owner, the owners of a deleted or released dependent, an owner being deleted with a finalizer), not
at every object of the cluster: the host cluster of a fleet holds thousands, and creating a tenant
writes dozens of owned objects. Passes run on the controllers' thread:

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

from .resources import BY_KEY, BY_KIND, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, RESOURCES, Obj, ResourceType
from .store import Store, WatchEvent, key_of

ObjectKey = tuple[str, str, str]
"""(resource type key, namespace or "", name)."""
GC_FINALIZERS = frozenset({FOREGROUND_FINALIZER, ORPHAN_FINALIZER})

SETTLE_PASSES = 20  # bounds a request's synchronous collection (each pass resolves one level of owners)


class GarbageCollector:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Both guarded by the store's lock: events arrive under it, and passes run under it.
        self._dependents: dict[str, dict[str, set[ObjectKey]]] = {}  # cluster -> owner uid -> dependents
        self._work: dict[str, set[ObjectKey]] = {}  # cluster -> objects a pass must look at

    # --- the index, from events ---------------------------------------------------------------------
    def observe(self, cluster: str, ev: WatchEvent) -> bool:
        """Index the event's object and queue what it concerns; True when a pass has work."""
        meta = ev.obj["metadata"]
        old_refs = (ev.old["metadata"].get("ownerReferences") or []) if ev.old is not None else []
        new_refs = [] if ev.type == "DELETED" else (meta.get("ownerReferences") or [])
        finalizing = bool(GC_FINALIZERS & set(meta.get("finalizers") or []))
        if ev.type != "DELETED" and ev.old is not None and old_refs == new_refs and not finalizing:
            return False  # most events: a status or spec write that keeps the owners
        key = (ev.key, meta.get("namespace") or "", meta["name"])
        index = self._dependents.setdefault(cluster, {})
        old_uids = {r.get("uid", "") for r in old_refs}
        new_uids = {r.get("uid", "") for r in new_refs}
        for uid in old_uids - new_uids:
            if (deps := index.get(uid)) is not None:
                deps.discard(key)
                if not deps:
                    del index[uid]
        for uid in new_uids - old_uids:
            index.setdefault(uid, set()).add(key)
        work = self._work.setdefault(cluster, set())
        before = len(work)
        if ev.type == "DELETED":
            work |= index.pop(meta.get("uid", ""), set())  # its dependents may have lost their last owner
        elif new_refs or finalizing:
            work.add(key)
        # An owner deleted in the foreground waits for its blocking dependents: one that went, or
        # dropped its reference, may let it go.
        ns = meta.get("namespace") or ""
        for ref in old_refs if ev.type == "DELETED" else [r for r in old_refs if r.get("uid", "") not in new_uids]:
            if (rt := BY_KIND.get((ref.get("apiVersion", ""), ref.get("kind", "")))) is not None:
                work.add((rt.key, ns if rt.namespaced else "", ref.get("name", "")))
        return len(work) > before

    def rebuild(self, cluster: str) -> None:
        """Index every object of a cluster and queue all those with owners or a collector's finalizer
        (a state file brought them back: what was pending then is pending now)."""
        with self.store.lock:
            index: dict[str, set[ObjectKey]] = {}
            work = self._work.setdefault(cluster, set())
            for rt, obj in self._objects(cluster):
                meta = obj["metadata"]
                key = (rt.key, meta.get("namespace") or "", meta["name"])
                refs = meta.get("ownerReferences") or []
                for ref in refs:
                    index.setdefault(ref.get("uid", ""), set()).add(key)
                if refs or GC_FINALIZERS & set(meta.get("finalizers") or []):
                    work.add(key)
            self._dependents[cluster] = index

    def queued(self, cluster: str) -> set[ObjectKey]:
        """What the next pass will look at."""
        with self.store.lock:
            return set(self._work.get(cluster, set()))

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
        """One pass over what the events queued; every step is idempotent, and what a step changes
        queues the next pass's work (its own events)."""
        store = self.store
        with store.lock:
            work, self._work[cluster] = self._work.get(cluster, set()), set()
            index = self._dependents.get(cluster, {})
            for rt_key, ns, name in sorted(work):
                rt = BY_KEY[rt_key]
                obj = store.peek(cluster, rt, ns, name)
                if obj is None:
                    continue  # gone: its deletion queued what it concerned
                meta = obj["metadata"]
                finalizers = meta.get("finalizers") or []
                if not meta.get("deletionTimestamp"):
                    self._check_owners(cluster, rt, obj)
                elif ORPHAN_FINALIZER in finalizers:
                    self._orphan(cluster, rt, obj, self._current(cluster, index.get(meta["uid"], set())))
                elif FOREGROUND_FINALIZER in finalizers:
                    self._foreground(cluster, rt, obj, self._current(cluster, index.get(meta["uid"], set())))

    def _current(self, cluster: str, keys: set[ObjectKey]) -> list[tuple[ResourceType, Obj]]:
        found = []
        for rt_key, ns, name in sorted(keys):
            rt = BY_KEY[rt_key]
            if (obj := self.store.peek(cluster, rt, ns, name)) is not None:
                found.append((rt, obj))
        return found

    def settle(self, cluster: str) -> None:
        """Run collection passes within a Foreground/Orphan delete request until nothing changes.

        What nothing holds (no custom finalizer on a dependent) is therefore gone when the request
        returns, where a real collector takes a moment; clients that delete and then look again (or
        re-create under the same name) meet a settled state instead of racing the collector. What
        a finalizer holds stays visible, terminating, as on a real cluster.
        """
        with self.store.lock:
            for _ in range(SETTLE_PASSES):
                if not self._work.get(cluster):
                    return
                self.collect(cluster)

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
