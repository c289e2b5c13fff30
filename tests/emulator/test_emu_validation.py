"""422 Invalid with apimachinery's field paths and wording; the field selectors the real server indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .test_emu_kubectl import KUBECTL, SKIP_REASON, kubectl


def _causes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["field"], c["reason"]) for c in body["details"]["causes"]]


def test_immutable_config_map_and_secret(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    """`immutable: true` freezes data and itself; metadata may still change. A Secret's type never changes."""
    core.create_namespaced_config_map(ns, {"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": True})
    err, body = kit.api_error(core.patch_namespaced_config_map, "frozen", ns, {"data": {"a": "2"}})
    assert (err.status, body["reason"]) == (422, "Invalid")
    assert (
        body["message"] == 'ConfigMap "frozen" is invalid: data: Forbidden: field is immutable when `immutable` is set'
    )
    _, body = kit.api_error(core.patch_namespaced_config_map, "frozen", ns, {"immutable": False})
    assert _causes(body) == [("immutable", "FieldValueForbidden")]
    labelled = core.patch_namespaced_config_map("frozen", ns, {"metadata": {"labels": {"ok": "yes"}}})
    assert labelled.metadata.labels == {"ok": "yes"}
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"k": "v"}, "immutable": True})
    _, body = kit.api_error(core.patch_namespaced_secret, "s", ns, {"stringData": {"k": "w"}})
    assert body["message"] == 'Secret "s" is invalid: data: Forbidden: field is immutable when `immutable` is set'
    core.create_namespaced_secret(ns, {"metadata": {"name": "t"}, "type": "Opaque"})
    _, body = kit.api_error(core.patch_namespaced_secret, "t", ns, {"type": "kubernetes.io/tls"})
    assert body["message"] == 'Secret "t" is invalid: type: Invalid value: "kubernetes.io/tls": field is immutable'


def test_deployment_selector_and_service_cluster_ip_are_immutable(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str, kit: Any
) -> None:
    """apps/v1 Deployment selectors cannot change; neither can an allocated Service cluster IP."""
    apps.create_namespaced_deployment(ns, kit.deployment("web"))
    relabel = {
        "spec": {
            "selector": {"matchLabels": {"app": "other"}},
            "template": {"metadata": {"labels": {"app": "other"}}},
        }
    }
    _, body = kit.api_error(apps.patch_namespaced_deployment, "web", ns, relabel)
    assert body["message"] == (
        'Deployment.apps "web" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:'
        'map[string]string{"app":"other"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable'
    )
    svc = core.create_namespaced_service(ns, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})
    _, body = kit.api_error(core.patch_namespaced_service, "svc", ns, {"spec": {"clusterIP": "10.96.99.99"}})
    assert (
        body["message"]
        == 'Service "svc" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.99.99": may not change once set'
    )
    assert core.read_namespaced_service("svc", ns).spec.cluster_ip == svc.spec.cluster_ip


def test_labels_keys_and_pod_templates(
    api: client.ApiClient, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str, kit: Any
) -> None:
    """Label values/keys, ConfigMap keys, containers with names and images: every error at once."""
    _, body = kit.api_error(
        core.create_namespaced_config_map,
        ns,
        {"metadata": {"name": "c", "labels": {"bad key!": "x", "k": "bad value!"}}, "data": {"bad key": "v"}},
    )
    assert _causes(body) == [
        ("metadata.labels", "FieldValueInvalid"),
        ("metadata.labels", "FieldValueInvalid"),
        ("data[bad key]", "FieldValueInvalid"),
    ]
    assert body["message"].startswith(
        'ConfigMap "c" is invalid: [metadata.labels: Invalid value: "bad key!": name part'
    )
    assert 'metadata.labels: Invalid value: "bad value!": a valid label must be an empty string' in body["message"]
    assert 'data[bad key]: Invalid value: "bad key": a valid config key must consist of' in body["message"]
    empty = kit.deployment("empty")
    empty["spec"]["template"]["spec"]["containers"] = []
    _, body = kit.api_error(apps.create_namespaced_deployment, ns, empty)
    assert body["message"] == 'Deployment.apps "empty" is invalid: spec.template.spec.containers: Required value'
    noimage = kit.deployment("noimage")
    noimage["spec"]["template"]["spec"]["containers"] = [{"name": "main"}, {"image": "x"}]
    status, body, _ = kit.raw(api, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", noimage)  # the client
    assert status == 422  # itself refuses a container without a name
    assert _causes(body) == [
        ("spec.template.spec.containers[0].image", "FieldValueRequired"),
        ("spec.template.spec.containers[1].name", "FieldValueRequired"),
    ]
    _, body = kit.api_error(core.create_namespaced_pod, ns, {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert body["message"] == 'Pod "p" is invalid: spec.containers: Required value'
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    core.create_namespaced_pod(ns, pod)
    assert core.patch_namespaced_pod("p", ns, {"spec": {"containers": [{"name": "c", "image": "j"}]}})
    _, body = kit.api_error(core.patch_namespaced_pod, "p", ns, {"spec": {"hostname": "other"}})
    assert body["message"].startswith('Pod "p" is invalid: spec: Forbidden: pod updates may not change fields other')


def test_field_selectors_the_server_indexes(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    """Events by involvedObject.uid (kubectl describe), namespaces by status.phase, pods by restartPolicy."""
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
    ref = {"kind": "ConfigMap", "namespace": ns, "name": "c", "uid": cm.metadata.uid, "apiVersion": "v1"}
    core.create_namespaced_event(
        ns, {"metadata": {"name": "e1"}, "involvedObject": ref, "reason": "Synced", "source": {"component": "me"}}
    )
    core.create_namespaced_event(ns, {"metadata": {"name": "e2"}, "involvedObject": {**ref, "uid": "other"}})
    found = core.list_namespaced_event(ns, field_selector=f"involvedObject.uid={cm.metadata.uid},source=me")
    assert [e.metadata.name for e in found.items] == ["e1"]
    stuck = kit.unique("stuck")  # the usual "find stuck namespaces" query
    core.create_namespace({"metadata": {"name": stuck}})
    core.create_namespaced_config_map(stuck, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespace(stuck)
    terminating = {n.metadata.name for n in core.list_namespace(field_selector="status.phase=Terminating").items}
    assert stuck in terminating and ns not in terminating
    assert ns in {n.metadata.name for n in core.list_namespace(field_selector="status.phase=Active").items}
    core.patch_namespaced_config_map("held", stuck, {"metadata": {"finalizers": None}})
    core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    pods = core.list_namespaced_pod(ns, field_selector="spec.restartPolicy=Always,spec.hostNetwork=false")
    assert [p.metadata.name for p in pods.items] == ["p"]
    _, body = kit.api_error(core.list_namespaced_pod, ns, field_selector="spec.containers=x")
    assert body["message"] == "field label not supported: spec.containers"


@pytest.mark.skipif(KUBECTL is None, reason=SKIP_REASON)
def test_kubectl_describe_configmap(kubeconfig: Path, core: client.CoreV1Api, ns: str) -> None:
    """`kubectl describe` lists the object's events through the involvedObject field selector."""
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "described"}, "data": {"k": "v"}})
    ref = {"kind": "ConfigMap", "namespace": ns, "name": "described", "uid": cm.metadata.uid}
    core.create_namespaced_event(
        ns, {"metadata": {"name": "ev"}, "involvedObject": ref, "reason": "Checked", "message": "all good"}
    )
    out = kubectl(kubeconfig, "describe", "configmap", "described", "-n", ns).stdout
    assert "Name:" in out and "described" in out and "Checked" in out and "all good" in out
