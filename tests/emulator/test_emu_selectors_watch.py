"""Label and field selectors on list and watch; watch replay, timeouts, 410 Expired."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from devstack.kube_emulator import Emulator

PODS = {
    "a": {"env": "prod", "tier": "web"},
    "b": {"env": "dev", "tier": "web"},
    "c": {"env": "prod"},
    "d": {"tier": "db"},
}


@pytest.fixture
def labelled(core: client.CoreV1Api, ns: str) -> str:
    for name, labels in PODS.items():
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})
    return ns


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", "ac"),
        ("env==prod", "ac"),
        ("env!=prod", "bd"),
        ("env in (prod,dev)", "abc"),
        ("env notin (prod)", "bd"),
        ("tier", "abd"),
        ("!tier", "c"),
        ("!env", "d"),
        ("env=prod,tier=web", "a"),
        ("env in (prod, dev),!tier", "c"),
        ("tier=web,env notin (dev)", "a"),
        ("", "abcd"),
        ("env=none", ""),
    ],
)
def test_label_selectors(core: client.CoreV1Api, labelled: str, selector: str, expected: str) -> None:
    names = [c.metadata.name for c in core.list_namespaced_config_map(labelled, label_selector=selector).items]
    assert "".join(names) == expected


def test_field_selectors(core: client.CoreV1Api, labelled: str, kit: Any) -> None:
    by_name = core.list_namespaced_config_map(labelled, field_selector="metadata.name=b")
    assert [c.metadata.name for c in by_name.items] == ["b"]
    others = core.list_namespaced_config_map(labelled, field_selector="metadata.name!=b", label_selector="env")
    assert [c.metadata.name for c in others.items] == ["a", "c"]
    everywhere = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={labelled}")
    assert len(everywhere.items) == 4
    core.create_namespaced_pod(
        labelled, {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}
    )
    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1")
    assert [(p.metadata.namespace, p.metadata.name) for p in on_node.items] == [(labelled, "p")]
    err, body = kit.api_error(core.list_namespaced_config_map, labelled, field_selector="data.key=x")
    assert (err.status, body["reason"]) == (400, "BadRequest") and "field label not supported" in body["message"]
    err, body = kit.api_error(core.list_namespaced_config_map, labelled, label_selector="env in (prod")
    assert (err.status, body["reason"]) == (400, "BadRequest")


def test_watch_replays_from_resource_version(core: client.CoreV1Api, ns: str) -> None:
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w", "labels": {"w": "1"}}})
    core.patch_namespaced_config_map("w", ns, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("w", ns)
    events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=start, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "w"),
        ("MODIFIED", "w"),
        ("DELETED", "w"),
    ]
    assert events[1]["object"].data == {"k": "v"}
    rvs = [int(e["object"].metadata.resource_version) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(start)


def test_watch_streams_live_events_with_selectors(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "pre", "labels": {"app": "x"}}})
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    ready = threading.Event()

    def consume() -> None:
        for event in w.stream(core.list_namespaced_config_map, ns, label_selector="app=x", timeout_seconds=5):
            seen.append((event["type"], event["object"].metadata.name))
            ready.set()
            if event["type"] == "DELETED" and event["object"].metadata.name == "live":
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(3)  # the synthetic ADDED for what already exists
    core.create_namespaced_config_map(ns, {"metadata": {"name": "other", "labels": {"app": "y"}}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "live", "labels": {"app": "x"}}})
    core.patch_namespaced_config_map("other", ns, {"metadata": {"labels": {"app": "x"}}})  # enters selector
    core.patch_namespaced_config_map("other", ns, {"metadata": {"labels": {"app": "z"}}})  # leaves it
    core.delete_namespaced_config_map("live", ns)
    thread.join(5)
    assert seen == [("ADDED", "pre"), ("ADDED", "live"), ("ADDED", "other"), ("DELETED", "other"), ("DELETED", "live")]


def test_watch_single_object_and_timeout(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "one"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "two"}})
    began = time.monotonic()
    events = list(
        watch.Watch().stream(core.list_namespaced_config_map, ns, field_selector="metadata.name=two", timeout_seconds=1)
    )
    elapsed = time.monotonic() - began
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "two")]
    assert 0.9 <= elapsed < 3  # timeoutSeconds is honoured by the server


def test_watch_cluster_scoped_and_all_namespaces(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    start = core.list_namespace().metadata.resource_version
    node = kit.unique("node")
    core.create_node({"metadata": {"name": node}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}})
    nodes = list(watch.Watch().stream(core.list_node, resource_version=start, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in nodes] == [("ADDED", node)]
    secrets = list(watch.Watch().stream(core.list_secret_for_all_namespaces, resource_version=start, timeout_seconds=1))
    assert [(e["object"].metadata.namespace, e["object"].metadata.name) for e in secrets] == [(ns, "s")]
    core.delete_node(node)


def test_watch_from_compacted_resource_version_is_expired(tmp_path: Any, kit: Any) -> None:
    with Emulator(port=0, history_size=5) as emu, kit.client_for(emu.write_kubeconfig(tmp_path / "kc")) as api:
        core = client.CoreV1Api(api)
        start = core.list_namespaced_config_map("default").metadata.resource_version
        for i in range(8):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as info:
            list(
                watch.Watch().stream(
                    core.list_namespaced_config_map, "default", resource_version=start, timeout_seconds=1
                )
            )
        assert info.value.status == 410 and info.value.reason.startswith("Expired")
        recent = core.list_namespaced_config_map("default").metadata.resource_version
        core.create_namespaced_config_map("default", {"metadata": {"name": "late"}})
        events = list(
            watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=recent, timeout_seconds=1)
        )
        assert [e["object"].metadata.name for e in events] == ["late"]
