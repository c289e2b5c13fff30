"""Lists in one namespace read that namespace's objects only, and always all of them."""

from __future__ import annotations

from typing import Any

from devstack.kube_emulator.resources import BY_KEY, NAMESPACES
from devstack.kube_emulator.selectors import match_selector_object
from devstack.kube_emulator.store import Store

CONFIG_MAPS = BY_KEY["/configmaps"]
HOST = ""
TENANTS = ("tenant-a", "tenant-b", "tenant-c")


def _names(store: Store, ns: str | None) -> list[tuple[str, str]]:
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in store.peek_list(HOST, CONFIG_MAPS, ns)]


def _brute_force(store: Store, ns: str) -> list[tuple[str, str]]:
    """What a list in ``ns`` must return: every object of the kind whose namespace is ``ns``, by name."""
    return sorted(k for k in store.cluster(HOST).bucket(CONFIG_MAPS) if k[0] == ns)


def _fleet() -> Store:
    store = Store()
    for ns in TENANTS:
        store.create(HOST, NAMESPACES, "", {"metadata": {"name": ns}})
        for i in (3, 1, 2):
            labels = {"role": "node" if i % 2 else "other"}
            store.create(HOST, CONFIG_MAPS, ns, {"metadata": {"name": f"cm-{i}", "labels": labels}})
    return store


def test_a_namespaced_list_has_exactly_that_namespaces_objects_in_name_order() -> None:
    store = _fleet()
    assert _names(store, "tenant-b") == [("tenant-b", "cm-1"), ("tenant-b", "cm-2"), ("tenant-b", "cm-3")]
    assert _names(store, "nowhere") == []
    assert len(_names(store, None)) == 9  # every namespace


def test_the_index_follows_deletes_and_a_restored_state() -> None:
    store = _fleet()
    store.delete(HOST, CONFIG_MAPS, "tenant-a", "cm-2")
    store.delete(HOST, CONFIG_MAPS, "tenant-c", "cm-1")
    store.delete(HOST, CONFIG_MAPS, "tenant-c", "cm-2")
    store.delete(HOST, CONFIG_MAPS, "tenant-c", "cm-3")
    store.create(HOST, CONFIG_MAPS, "tenant-c", {"metadata": {"name": "cm-0"}})
    for ns in TENANTS:
        assert _names(store, ns) == _brute_force(store, ns)
    assert _names(store, "tenant-a") == [("tenant-a", "cm-1"), ("tenant-a", "cm-3")]

    restored = Store()
    restored.restore(store.snapshot())
    for ns in TENANTS:
        assert _names(restored, ns) == _brute_force(store, ns)


def test_a_label_selector_in_a_namespace_filters_only_its_objects() -> None:
    store = _fleet()

    def nodes(obj: dict[str, Any]) -> bool:
        return match_selector_object({"matchLabels": {"role": "node"}}, obj["metadata"].get("labels") or {})

    listed = store.peek_list(HOST, CONFIG_MAPS, "tenant-a", nodes)
    assert [o["metadata"]["name"] for o in listed] == ["cm-1", "cm-3"]
