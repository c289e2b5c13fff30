"""The deployment controller: status, conditions, rollouts, failure annotations, scale and status subresources."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client

NEVER_READY = "emulator.tenantctl.io/never-ready"
DELAY = "emulator.tenantctl.io/ready-delay-seconds"


def _conditions(dep: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in dep.status.conditions or []}


def _available(apps: client.AppsV1Api, name: str, ns: str, generation: int = 1) -> Any:
    def probe() -> Any:
        dep = apps.read_namespaced_deployment(name, ns)
        ok = dep.status.observed_generation == generation and _conditions(dep).get("Available", ("",))[0] == "True"
        return dep if ok else None

    return probe


def test_deployment_becomes_available_after_delay(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    apps.create_namespaced_deployment(ns, kit.deployment("web", replicas=3))
    early = kit.wait_for(lambda: (d := apps.read_namespaced_deployment("web", ns)).status.conditions and d)
    assert early.status.observed_generation is None and early.status.ready_replicas is None
    assert _conditions(early) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("True", "ReplicaSetUpdated"),
    }
    dep = kit.wait_for(_available(apps, "web", ns), what="available")
    status = dep.status
    assert (status.replicas, status.updated_replicas, status.ready_replicas, status.available_replicas) == (3, 3, 3, 3)
    assert status.unavailable_replicas is None
    assert _conditions(dep) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }


def test_template_change_rolls_out(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    apps.create_namespaced_deployment(ns, kit.deployment("roll", replicas=2, annotations={DELAY: "0.5"}))
    kit.wait_for(_available(apps, "roll", ns), what="first rollout")
    changed = apps.patch_namespaced_deployment(
        "roll", ns, {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.28"}]}}}}
    )
    assert changed.metadata.generation == 2
    rolling = kit.wait_for(
        lambda: (d := apps.read_namespaced_deployment("roll", ns)).status.updated_replicas is None and d,
        what="rollout start",
    )
    assert rolling.status.observed_generation == 1 and rolling.status.available_replicas == 2
    assert _conditions(rolling)["Progressing"] == ("True", "ReplicaSetUpdated")
    began = time.monotonic()
    done = kit.wait_for(_available(apps, "roll", ns, generation=2), what="second rollout")
    assert time.monotonic() - began > 0.2
    assert done.status.updated_replicas == 2
    assert _conditions(done)["Progressing"] == ("True", "NewReplicaSetAvailable")


def test_never_ready_until_annotation_removed(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    apps.create_namespaced_deployment(ns, kit.deployment("stuck", replicas=2, annotations={NEVER_READY: "true"}))
    dep = kit.wait_for(lambda: (d := apps.read_namespaced_deployment("stuck", ns)).status.observed_generation and d)
    time.sleep(0.6)  # three ready delays later it is still not available
    dep = apps.read_namespaced_deployment("stuck", ns)
    assert dep.status.available_replicas is None and dep.status.ready_replicas is None
    assert dep.status.unavailable_replicas == 2
    assert _conditions(dep) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("True", "ReplicaSetUpdated"),
    }
    apps.patch_namespaced_deployment("stuck", ns, {"metadata": {"annotations": {NEVER_READY: None}}})
    kit.wait_for(_available(apps, "stuck", ns), what="available after annotation removal")


def test_progress_deadline_exceeded(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    body = kit.deployment("deadline", annotations={NEVER_READY: "true"})
    body["spec"]["progressDeadlineSeconds"] = 1
    apps.create_namespaced_deployment(ns, body)
    dep = kit.wait_for(
        lambda: (
            _conditions(d := apps.read_namespaced_deployment("deadline", ns)).get("Progressing", ("", ""))[1]
            == "ProgressDeadlineExceeded"
            and d
        ),
        timeout=4,
        what="deadline",
    )
    assert _conditions(dep)["Progressing"][0] == "False"


def test_ready_delay_annotation(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    apps.create_namespaced_deployment(ns, kit.deployment("slow", annotations={DELAY: "1.5"}))
    apps.create_namespaced_deployment(ns, kit.deployment("fast", annotations={DELAY: "0"}))
    kit.wait_for(_available(apps, "fast", ns), timeout=1, what="fast deployment")
    assert apps.read_namespaced_deployment("slow", ns).status.available_replicas is None
    kit.wait_for(_available(apps, "slow", ns), timeout=4, what="slow deployment")


def test_scale_subresource(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    apps.create_namespaced_deployment(ns, kit.deployment("scaled", replicas=2))
    kit.wait_for(_available(apps, "scaled", ns))
    scale = apps.read_namespaced_deployment_scale("scaled", ns)
    assert (scale.kind, scale.api_version) == ("Scale", "autoscaling/v1")
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (2, 2, "app=scaled")
    patched = apps.patch_namespaced_deployment_scale("scaled", ns, {"spec": {"replicas": 5}})
    assert patched.spec.replicas == 5
    dep = apps.read_namespaced_deployment("scaled", ns)
    assert dep.spec.replicas == 5 and dep.metadata.generation == 2
    dep = kit.wait_for(_available(apps, "scaled", ns, generation=2), what="scaled up")
    assert dep.status.available_replicas == 5
    scale.spec.replicas = 1  # scale still carries the old resourceVersion
    _, body = kit.api_error(apps.replace_namespaced_deployment_scale, "scaled", ns, scale)
    assert body["reason"] == "Conflict"
    fresh = apps.read_namespaced_deployment_scale("scaled", ns)
    fresh.spec.replicas = 0
    assert apps.replace_namespaced_deployment_scale("scaled", ns, fresh).spec.replicas == 0
    dep = kit.wait_for(_available(apps, "scaled", ns, generation=3), what="scaled to zero")
    assert dep.status.replicas is None and dep.status.available_replicas is None  # zero counts are omitted
    _, body = kit.api_error(apps.patch_namespaced_deployment_scale, "scaled", ns, {"spec": {"replicas": -1}})
    assert body["reason"] == "Invalid"


def test_status_subresource_patch(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    apps.create_namespaced_deployment(ns, kit.deployment("st", annotations={NEVER_READY: "true"}))
    patched = apps.patch_namespaced_deployment_status(
        "st", ns, {"status": {"collisionCount": 4}, "spec": {"replicas": 9}}
    )
    assert patched.status.collision_count == 4 and patched.spec.replicas == 1
    read = apps.read_namespaced_deployment_status("st", ns)
    assert read.status.collision_count == 4
