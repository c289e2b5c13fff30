"""Garbage collection as kube-controller-manager does it: ownerReferences and the propagation policies."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .test_emu_kubectl import KUBECTL, SKIP_REASON, kubectl


def _owned_by(owner: client.V1ConfigMap, block: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "blockOwnerDeletion": block,
    }


def _cm(core: client.CoreV1Api, ns: str, name: str, refs: list[dict[str, Any]] | None = None, **meta: Any) -> Any:
    return core.create_namespaced_config_map(ns, {"metadata": {"name": name, "ownerReferences": refs or [], **meta}})


def _gone(core: client.CoreV1Api, ns: str, name: str) -> bool:
    return name not in {c.metadata.name for c in core.list_namespaced_config_map(ns).items}


def test_background_deletes_the_owner_at_once_then_its_dependents(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    """Background (the default): the owner goes now, the collector deletes dependents whose owners are all gone,
    and keeps a dependent that still has another live owner (only the stale reference is dropped)."""
    owner, other = _cm(core, ns, "owner"), _cm(core, ns, "other")
    _cm(core, ns, "child", [_owned_by(owner)])
    _cm(core, ns, "shared", [_owned_by(owner), _owned_by(other)])
    core.delete_namespaced_config_map("owner", ns)
    assert _gone(core, ns, "owner")
    kit.wait_for(lambda: _gone(core, ns, "child"), what="child collected")
    shared = kit.wait_for(
        lambda: (c := core.read_namespaced_config_map("shared", ns)).metadata.owner_references[0].name == "other" and c
    )
    assert [r.name for r in shared.metadata.owner_references] == ["other"]


def test_orphan_keeps_dependents_and_removes_their_reference(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    """Orphan: the owner carries the `orphan` finalizer until its dependents no longer reference it."""
    owner = _cm(core, ns, "owner")
    _cm(core, ns, "child", [_owned_by(owner)])
    # the answer is the object (not a Status): it is not gone yet; the client hands it over undecoded
    answer = core.delete_namespaced_config_map("owner", ns, propagation_policy="Orphan")
    assert answer["metadata"]["deletionTimestamp"] and "orphan" in answer["metadata"]["finalizers"]
    kit.wait_for(lambda: _gone(core, ns, "owner"), what="owner gone")
    assert core.read_namespaced_config_map("child", ns).metadata.owner_references is None


def test_foreground_waits_for_blocking_dependents(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    """Foreground: the owner carries `foregroundDeletion`, its dependents are deleted, and it stays (with a
    deletionTimestamp) until no dependent with blockOwnerDeletion is left."""
    owner = _cm(core, ns, "owner")
    _cm(core, ns, "blocker", [_owned_by(owner, block=True)], finalizers=["example.com/hold"])
    _cm(core, ns, "free", [_owned_by(owner)])
    answer = core.delete_namespaced_config_map("owner", ns, propagation_policy="Foreground")
    assert "foregroundDeletion" in answer["metadata"]["finalizers"]
    kit.wait_for(lambda: _gone(core, ns, "free"), what="non-blocking dependent deleted")
    blocker = kit.wait_for(lambda: core.read_namespaced_config_map("blocker", ns).metadata.deletion_timestamp)
    assert blocker is not None
    held = core.read_namespaced_config_map("owner", ns)
    assert held.metadata.deletion_timestamp is not None and held.metadata.finalizers == ["foregroundDeletion"]
    core.patch_namespaced_config_map("blocker", ns, {"metadata": {"finalizers": None}})
    kit.wait_for(lambda: _gone(core, ns, "blocker") and _gone(core, ns, "owner"), what="owner gone after blocker")


def test_dangling_owner_references(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    """A reference whose uid matches no object is dangling: an object with only dangling owners is
    deleted; references to kinds the server does not know are left alone."""
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": str(uuid.uuid4())}
    _cm(core, ns, "orphaned", [ghost])
    foreign = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": str(uuid.uuid4())}
    _cm(core, ns, "foreign", [foreign])
    kit.wait_for(lambda: _gone(core, ns, "orphaned"), what="dangling dependent collected")
    assert not _gone(core, ns, "foreign")


def test_deployment_foreground_delete(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    """A Deployment deleted in the foreground is still readable, marked, until the collector lets it go."""
    apps.create_namespaced_deployment(ns, kit.deployment("web"))
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Foreground")
    kit.wait_for(lambda: not apps.list_namespaced_deployment(ns).items, what="deployment gone")


def test_unsupported_propagation_policy(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    """An unknown policy is refused as invalid DeleteOptions, naming the supported values."""
    _cm(core, ns, "c")
    err, body = kit.api_error(core.delete_namespaced_config_map, "c", ns, propagation_policy="Sometimes")
    assert err.status == 422 and 'Unsupported value: "Sometimes"' in body["message"]


@pytest.mark.skipif(KUBECTL is None, reason=SKIP_REASON)
def test_kubectl_delete_cascade(kubeconfig: Path, core: client.CoreV1Api, ns: str, kit: Any) -> None:
    """`kubectl delete --cascade=orphan` keeps dependents; the default (background) cascade removes them."""
    owner = _cm(core, ns, "owner")
    _cm(core, ns, "child", [_owned_by(owner)])
    kubectl(kubeconfig, "delete", "configmap", "owner", "-n", ns, "--cascade=orphan")
    assert not _gone(core, ns, "child")
    owner = _cm(core, ns, "owner2")
    _cm(core, ns, "child2", [_owned_by(owner)])
    kubectl(kubeconfig, "delete", "configmap", "owner2", "-n", ns)
    kit.wait_for(lambda: _gone(core, ns, "child2"), what="child2 collected")
