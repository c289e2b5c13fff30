"""``KubeRest`` against the host API emulator: JSON in and out, the client's own errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from activities.common.kube_rest import CONFIG_MAPS, NAMESPACES, KubeRest, delete_options
from devstack.kube_emulator import Emulator
from tests.specs import unique_id


@pytest.fixture
def rest(kube_emulator: object) -> Iterator[KubeRest]:
    config = Configuration(host=cast(Emulator, kube_emulator).url)
    config.retries = False
    with ApiClient(config) as client:
        yield KubeRest(client)


@pytest.fixture
def namespace(rest: KubeRest) -> Iterator[str]:
    name = f"rest-{unique_id()}"
    rest.create(NAMESPACES, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    rest.delete(NAMESPACES, None, name)


def config_map(name: str, **data: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"t": "x"}}, "data": data}


def test_create_read_replace_patch_delete(rest: KubeRest, namespace: str) -> None:
    created = rest.create(CONFIG_MAPS, namespace, config_map("a", k="1"))
    assert created["metadata"]["namespace"] == namespace and created["data"] == {"k": "1"}
    assert rest.read(CONFIG_MAPS, namespace, "a")["metadata"]["uid"] == created["metadata"]["uid"]

    replaced = rest.replace(
        CONFIG_MAPS, namespace, "a", {**config_map("a", k="2"), "metadata": {**created["metadata"]}}
    )
    assert replaced["data"] == {"k": "2"}
    json_patched = rest.patch(CONFIG_MAPS, namespace, "a", [{"op": "add", "path": "/data/j", "value": "3"}])
    assert json_patched["data"] == {"k": "2", "j": "3"}
    merged = rest.patch(CONFIG_MAPS, namespace, "a", {"data": {"m": "4"}})
    assert merged["data"] == {"k": "2", "j": "3", "m": "4"}

    rest.delete(CONFIG_MAPS, namespace, "a", delete_options("Background", uid=created["metadata"]["uid"]))
    with pytest.raises(ApiException) as missing:
        rest.read(CONFIG_MAPS, namespace, "a")
    assert missing.value.status == 404


def test_errors_are_the_clients_own(rest: KubeRest, namespace: str) -> None:
    rest.create(CONFIG_MAPS, namespace, config_map("b"))
    with pytest.raises(ApiException) as exists:
        rest.create(CONFIG_MAPS, namespace, config_map("b"))
    assert exists.value.status == 409 and "AlreadyExists" in str(exists.value.body)
    stale = rest.read(CONFIG_MAPS, namespace, "b")
    rest.patch(CONFIG_MAPS, namespace, "b", {"data": {"x": "1"}})
    with pytest.raises(ApiException) as conflict:
        rest.replace(CONFIG_MAPS, namespace, "b", stale)
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as wrong_uid:
        rest.delete(CONFIG_MAPS, namespace, "b", delete_options(uid="not-its-uid"))
    assert wrong_uid.value.status == 409


def test_list_all_follows_continue_tokens(rest: KubeRest, namespace: str) -> None:
    for i in range(7):
        rest.create(CONFIG_MAPS, namespace, config_map(f"c{i}"))
    assert len(rest.list_page(CONFIG_MAPS, namespace, label_selector="t=x", limit=3)["items"]) == 3
    names = [o["metadata"]["name"] for o in rest.list_all(CONFIG_MAPS, namespace, "t=x", page_size=3)]
    assert sorted(names) == [f"c{i}" for i in range(7)]
    assert rest.list_all(CONFIG_MAPS, namespace, "t=other") == []
    everywhere = rest.list_all(CONFIG_MAPS, None, "t=x", page_size=2)
    assert {o["metadata"]["namespace"] for o in everywhere} >= {namespace}
