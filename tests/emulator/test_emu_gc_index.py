"""The collector's owner index: a pass looks at what events concern, not at every object."""

from __future__ import annotations

from typing import Any

from devstack.kube_emulator.garbage import GarbageCollector
from devstack.kube_emulator.resources import BY_KEY, NAMESPACES
from devstack.kube_emulator.store import Store

CONFIG_MAPS = BY_KEY["/configmaps"]
HOST = ""


def _config_map(name: str, owner: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
             "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True}] if owner else []  # fmt: skip
    return {"metadata": {"name": name, "ownerReferences": refs, **meta}}


def _store_with_collector() -> tuple[Store, GarbageCollector]:
    store = Store()
    store.cluster(HOST)
    collector = GarbageCollector(store)
    store.listeners.append(collector.observe)
    store.create(HOST, NAMESPACES, "", {"metadata": {"name": "t"}})
    return store, collector


def test_deleting_an_owner_queues_its_dependents_only() -> None:
    store, collector = _store_with_collector()
    owner = store.create(HOST, CONFIG_MAPS, "t", _config_map("owner"))
    for i in range(50):  # a fleet's worth of unrelated objects, some owned by someone else
        store.create(HOST, CONFIG_MAPS, "t", _config_map(f"other-{i}", owner=None))
    other_owner = store.create(HOST, CONFIG_MAPS, "t", _config_map("other-owner"))
    store.create(HOST, CONFIG_MAPS, "t", _config_map("other-dependent", other_owner))
    store.create(HOST, CONFIG_MAPS, "t", _config_map("dependent", owner))
    collector.collect(HOST)  # the creates' checks: every owner is there
    assert collector.queued(HOST) == set()
    assert store.find(HOST, CONFIG_MAPS, "t", "dependent") is not None

    store.delete(HOST, CONFIG_MAPS, "t", "owner")
    assert collector.queued(HOST) == {("/configmaps", "t", "dependent")}
    collector.collect(HOST)
    assert store.find(HOST, CONFIG_MAPS, "t", "dependent") is None
    assert store.find(HOST, CONFIG_MAPS, "t", "other-dependent") is not None
    assert store.find(HOST, CONFIG_MAPS, "t", "other-49") is not None


def test_status_writes_queue_nothing() -> None:
    store, collector = _store_with_collector()
    owner = store.create(HOST, CONFIG_MAPS, "t", _config_map("owner"))
    store.create(HOST, CONFIG_MAPS, "t", _config_map("dependent", owner))
    collector.collect(HOST)

    def relabel(cur: dict[str, Any] | None) -> dict[str, Any] | None:
        assert cur is not None
        cur["metadata"]["labels"] = {"seen": "yes"}
        return cur

    store.mutate(HOST, CONFIG_MAPS, "t", "dependent", relabel)
    assert collector.queued(HOST) == set()


def test_a_restored_state_is_indexed_and_its_pending_work_done() -> None:
    store, collector = _store_with_collector()
    owner = store.create(HOST, CONFIG_MAPS, "t", _config_map("owner"))
    store.create(HOST, CONFIG_MAPS, "t", _config_map("dependent", owner))
    # Saved while the owner was being deleted in the foreground, its dependent still there.
    store.delete(HOST, CONFIG_MAPS, "t", "owner", {"propagationPolicy": "Foreground"})
    snapshot = store.snapshot()

    restored = Store()
    restored.restore(snapshot)
    collector = GarbageCollector(restored)
    restored.listeners.append(collector.observe)
    collector.rebuild(HOST)
    assert collector.queued(HOST) == {("/configmaps", "t", "owner"), ("/configmaps", "t", "dependent")}
    collector.settle(HOST)
    assert restored.find(HOST, CONFIG_MAPS, "t", "dependent") is None
    assert restored.find(HOST, CONFIG_MAPS, "t", "owner") is None
