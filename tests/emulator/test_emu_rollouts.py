"""ReplicaSets behind Deployments with revisions: what `kubectl rollout history|undo` read and write."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from kubernetes import client

from devstack.kube_emulator import rollouts
from devstack.kube_emulator.resources import clone

from .test_emu_kubectl import KUBECTL, SKIP_REASON, kubectl

REVISION = "deployment.kubernetes.io/revision"


def _by_revision(apps: client.AppsV1Api, ns: str) -> dict[str, client.V1ReplicaSet]:
    return {rs.metadata.annotations[REVISION]: rs for rs in apps.list_namespaced_replica_set(ns).items}


def _set_image(apps: client.AppsV1Api, ns: str, image: str) -> None:
    apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}}
    )


def test_each_template_is_a_controlled_replicaset_with_a_revision(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    """The deployment controller keeps one ReplicaSet per pod template, named with its pod-template-hash,
    controlled by the Deployment; the current one has the highest revision and all replicas, the
    Deployment carries the same revision; deleting the Deployment collects its ReplicaSets."""
    deployment = apps.create_namespaced_deployment(ns, kit.deployment("web", replicas=3))
    first = kit.wait_for(lambda: _by_revision(apps, ns).get("1"), what="first replicaset")
    pod_hash = first.metadata.labels["pod-template-hash"]
    assert first.metadata.name == f"web-{pod_hash}"
    assert first.spec.selector.match_labels == {"app": "web", "pod-template-hash": pod_hash}
    (ref,) = first.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
        "Deployment",
        "web",
        deployment.metadata.uid,
        True,
        True,
    )
    _set_image(apps, ns, "nginx:1.28")
    kit.wait_for(lambda: (rs := _by_revision(apps, ns)).get("2") and rs["2"].status.ready_replicas == 3)
    revisions = _by_revision(apps, ns)
    assert (revisions["1"].spec.replicas, revisions["2"].spec.replicas) == (0, 3)
    assert apps.read_namespaced_deployment("web", ns).metadata.annotations[REVISION] == "2"
    _set_image(apps, ns, "nginx:1.27")  # back to the first template: re-numbered, not re-created
    kit.wait_for(lambda: set(_by_revision(apps, ns)) == {"2", "3"}, what="revision 1 re-numbered to 3")
    assert _by_revision(apps, ns)["3"].metadata.name == first.metadata.name
    apps.delete_namespaced_deployment("web", ns)
    kit.wait_for(lambda: not apps.list_namespaced_replica_set(ns).items, what="replicasets collected")


def test_revision_history_limit(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    """Old ReplicaSets beyond spec.revisionHistoryLimit are deleted, oldest first."""
    body = kit.deployment("web")
    body["spec"]["revisionHistoryLimit"] = 1
    apps.create_namespaced_deployment(ns, body)
    for image in ("nginx:1.28", "nginx:1.29"):
        kit.wait_for(lambda: apps.read_namespaced_deployment("web", ns).metadata.annotations.get(REVISION))
        _set_image(apps, ns, image)
    kit.wait_for(lambda: set(_by_revision(apps, ns)) == {"2", "3"}, what="revision 1 pruned")


@pytest.mark.skipif(KUBECTL is None, reason=SKIP_REASON)
def test_kubectl_rollout_history_and_undo(kubeconfig: Path, apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    """`rollout history` lists revisions with their change-cause; `rollout undo` restores the previous
    template, whose ReplicaSet becomes the newest revision."""
    apps.create_namespaced_deployment(ns, kit.deployment("web"))
    kit.wait_for(lambda: _by_revision(apps, ns).get("1"))
    kubectl(kubeconfig, "-n", ns, "annotate", "deployment/web", "kubernetes.io/change-cause=to 1.28")
    kubectl(kubeconfig, "-n", ns, "set", "image", "deployment/web", "main=nginx:1.28")
    kit.wait_for(lambda: _by_revision(apps, ns).get("2"))
    history = kubectl(kubeconfig, "-n", ns, "rollout", "history", "deployment/web").stdout
    assert [line.split(maxsplit=1) for line in history.strip().splitlines()[1:]] == [
        ["REVISION", "CHANGE-CAUSE"],
        ["1", "<none>"],
        ["2", "to 1.28"],
    ]
    kubectl(kubeconfig, "-n", ns, "rollout", "undo", "deployment/web")

    def image() -> str:
        return str(apps.read_namespaced_deployment("web", ns).spec.template.spec.containers[0].image)

    assert image() == "nginx:1.27"
    kit.wait_for(lambda: set(_by_revision(apps, ns)) == {"2", "3"}, what="undo re-numbered revision 1")
    kubectl(kubeconfig, "-n", ns, "rollout", "status", "deployment/web", "--timeout=10s")
    kubectl(kubeconfig, "-n", ns, "rollout", "undo", "deployment/web", "--to-revision=2")
    assert image() == "nginx:1.28"


def test_a_stored_template_is_walked_once_and_another_dict_afresh() -> None:
    """Syncs compare and hash the same stored templates again and again: the normal form and hash
    are kept per template dict, while an equal template in another dict still hashes alike and a
    changed one differently."""
    template = {
        "metadata": {"labels": {"app": "web", "pod-template-hash": "old"}},
        "spec": {"containers": [{"name": "main", "image": "a", "resources": {}}]},
    }
    with mock.patch.object(rollouts, "_normal", wraps=rollouts._normal) as normal:
        first = rollouts.template_hash(template)
        walked = normal.call_count
        assert walked > 0
        assert rollouts.template_hash(template) == first
        assert rollouts.same_template(template, template)
        assert normal.call_count == walked  # kept: not walked again
    # the same pod template read back through a typed client (nulls, no hash label) is the same
    again = {
        "metadata": {"labels": {"app": "web"}, "creationTimestamp": None},
        "spec": {"containers": [{"name": "main", "image": "a"}]},
    }
    assert rollouts.template_hash(again) == first
    assert rollouts.same_template(template, again)
    changed = clone(template)
    changed["spec"]["containers"][0]["image"] = "b"
    assert rollouts.template_hash(changed) != first
    assert not rollouts.same_template(template, changed)


def test_the_template_cache_keeps_digests_not_copies() -> None:
    """A kept shape is a digest and a hash, not the template's normal form (a copy of every
    stored template, 100 MiB at 1,000 clusters)."""
    template = {
        "metadata": {"labels": {"app": "web", "tier": "node"}},
        "spec": {
            "containers": [{"name": f"c{i}", "image": "registry/vm:1.32", "args": ["--x"] * 20} for i in range(5)]
        },
    }
    templates = [clone(template) for _ in range(500)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for each in templates:
            rollouts.template_hash(each)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 500 * 600, f"{kept} bytes kept for 500 templates"
