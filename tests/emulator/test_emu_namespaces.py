"""Namespace lifecycle: termination removes contents, creation into terminating / missing namespaces fails."""

from __future__ import annotations

from typing import Any

from kubernetes import client


def test_namespace_termination(core: client.CoreV1Api, apps: client.AppsV1Api, kit: Any) -> None:
    ns = kit.unique("term")
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "plain"}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    apps.create_namespaced_deployment(ns, kit.deployment("web"))
    client.CoordinationV1Api(core.api_client).create_namespaced_lease(ns, {"metadata": {"name": "l"}})

    deleted = core.delete_namespace(ns)
    assert deleted["status"]["phase"] == "Terminating" and deleted["metadata"]["deletionTimestamp"]
    assert core.read_namespace(ns).status.phase == "Terminating"
    err, body = kit.api_error(core.delete_namespace, ns)  # deleting it again is a conflict
    assert (err.status, body["reason"]) == (409, "Conflict") and "ensuring all content is removed" in body["message"]
    kit.wait_for(lambda: not core.list_namespaced_config_map(ns).items, what="configmaps removed")
    kit.wait_for(lambda: not apps.list_namespaced_deployment(ns).items, what="deployments removed")
    assert not client.CoordinationV1Api(core.api_client).list_namespaced_lease(ns).items
    held = core.read_namespaced_secret("held", ns)  # waits for its finalizer, and so does the namespace
    assert held.metadata.deletion_timestamp is not None
    assert core.read_namespace(ns).status.phase == "Terminating"

    err, body = kit.api_error(core.create_namespaced_config_map, ns, {"metadata": {"name": "late"}})
    assert (err.status, err.reason, body["reason"]) == (403, "Forbidden", "Forbidden")
    assert body["message"] == (
        f'configmaps "late" is forbidden: unable to create new content in namespace {ns} because it is being terminated'
    )
    assert body["details"]["causes"][0]["reason"] == "NamespaceTerminating"

    core.patch_namespaced_secret("held", ns, {"metadata": {"finalizers": None}})
    kit.wait_for(lambda: not core.list_namespace(field_selector=f"metadata.name={ns}").items, what="ns gone")
    err, body = kit.api_error(core.read_namespace, ns)
    assert body["reason"] == "NotFound"


def test_create_in_missing_namespace(core: client.CoreV1Api, kit: Any) -> None:
    err, body = kit.api_error(core.create_namespaced_config_map, "does-not-exist", {"metadata": {"name": "x"}})
    assert (err.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'namespaces "does-not-exist" not found'
    assert body["details"] == {"name": "does-not-exist", "kind": "namespaces"}


def test_namespace_can_be_recreated_after_deletion(core: client.CoreV1Api, kit: Any) -> None:
    ns = kit.unique("again")
    first = core.create_namespace({"metadata": {"name": ns}})
    core.delete_namespace(ns)
    kit.wait_for(lambda: not core.list_namespace(field_selector=f"metadata.name={ns}").items, what="ns gone")
    second = core.create_namespace({"metadata": {"name": ns}})
    assert second.metadata.uid != first.metadata.uid and second.status.phase == "Active"


def test_system_namespaces_cannot_be_deleted(core: client.CoreV1Api, kit: Any) -> None:
    for name in ("default", "kube-system", "kube-public"):
        err, body = kit.api_error(core.delete_namespace, name)
        assert (err.status, body["reason"]) == (403, "Forbidden")
        assert body["message"] == f'namespaces "{name}" is forbidden: this namespace may not be deleted'
    assert core.read_namespace("default").status.phase == "Active"
