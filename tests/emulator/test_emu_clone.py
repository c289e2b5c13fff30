"""The store's copies (``resources.clone``): equal to what was stored, sharing nothing with it."""

from __future__ import annotations

import copy
import json
from typing import Any

from devstack.kube_emulator.resources import BY_KEY, NAMESPACES, clone
from devstack.kube_emulator.store import Store

CONFIG_MAPS = BY_KEY["/configmaps"]
HOST = ""

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "worker-0",
        "labels": {"tenantctl.io/cluster": "acme"},
        "managedFields": [{"manager": "tenantctl", "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
        "generation": 2,
    },
    "spec": {
        "replicas": 1,
        "paused": False,
        "progressDeadlineSeconds": 600,
        "template": {"spec": {"containers": [{"name": "vm", "resources": {"limits": {"cpu": "2"}}}]}},
    },
    "status": {"availableReplicas": None, "ratio": 0.5, "conditions": []},
}


def test_a_clone_equals_the_original_in_value_and_type() -> None:
    copied = clone(DEPLOYMENT)
    assert copied == DEPLOYMENT == copy.deepcopy(DEPLOYMENT)
    assert json.dumps(copied) == json.dumps(DEPLOYMENT)  # 1 stays int, False bool, 0.5 float, None null
    assert copied is not DEPLOYMENT


def test_a_clone_shares_no_container_with_the_original() -> None:
    original = copy.deepcopy(DEPLOYMENT)
    copied = clone(original)
    copied["metadata"]["labels"]["extra"] = "x"
    copied["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"].clear()
    copied["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    copied["status"]["conditions"].append({"type": "Available"})
    assert original == DEPLOYMENT


def test_reads_that_only_encode_get_the_stored_objects_and_every_other_caller_a_copy() -> None:
    """A list response and a controller's write only read what they get, so they are not copied
    (those copies were an eighth of the emulator's CPU during 100 creates); every other caller gets
    a copy it may change without changing the store."""
    store = Store()
    store.create(HOST, NAMESPACES, "", {"metadata": {"name": "t"}})
    created = store.create(HOST, CONFIG_MAPS, "t", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    stored = store.peek(HOST, CONFIG_MAPS, "t", "cm")
    assert stored is not None and created is not stored and created == stored

    (listed,), _ = store.list(HOST, CONFIG_MAPS, "t", read_only=True)
    assert listed is stored
    (copied,), _ = store.list(HOST, CONFIG_MAPS, "t")
    assert copied is not stored and copied == stored
    copied["data"]["a"] = "changed"
    assert store.get(HOST, CONFIG_MAPS, "t", "cm")["data"] == {"a": "1"}

    def relabel(cur: dict[str, Any] | None) -> dict[str, Any] | None:
        assert cur is not None
        cur["metadata"]["labels"] = {"seen": "yes"}
        return cur

    written = store.mutate(HOST, CONFIG_MAPS, "t", "cm", relabel)
    assert written is not None and written is store.peek(HOST, CONFIG_MAPS, "t", "cm")
    assert written["metadata"]["labels"] == {"seen": "yes"}
    assert stored["metadata"].get("labels") is None  # the object stored before is left as it was
