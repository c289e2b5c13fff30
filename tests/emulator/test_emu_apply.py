"""Server-side apply, as kube-apiserver does it, through the dynamic client and `kubectl apply --server-side`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError

from devstack.kube_emulator import Emulator

from .test_emu_kubectl import KUBECTL, SKIP_REASON, kubectl

APPLY = "application/apply-patch+yaml"


def _managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"].get("managedFields") or []}


def _http(emulator: Emulator, method: str, path: str, body: bytes, ctype: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(emulator.url + path, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def dyn(api: client.ApiClient) -> DynamicClient:
    return DynamicClient(api)


def test_patch_type_is_checked_before_the_object_is_looked_up(emulator: Emulator, ns: str) -> None:
    """A real server answers 415 for an unknown patch type even when the object does not exist; an apply
    of a missing object creates it (201) instead of answering 404."""
    path = f"/api/v1/namespaces/{ns}/configmaps/missing"
    status, body = _http(emulator, "PATCH", path, b"{}", "application/x-unknown")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    assert "application/apply-patch+yaml" in body["message"]
    manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: missing}\ndata: {a: b}\n"
    status, body = _http(emulator, "PATCH", path + "?fieldManager=me", manifest, "application/apply-patch+yaml")
    assert status == 201 and body["data"] == {"a": "b"}
    assert _managers(body)[("me", "Apply")] == {"f:data": {"f:a": {}}}


def test_apply_merges_per_manager_and_removes_what_a_manager_dropped(dyn: DynamicClient, ns: str) -> None:
    """Each manager owns what it applied; a field one manager stops applying is removed, others' stay."""
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")

    def apply(manager: str, data: dict[str, str]) -> dict[str, Any]:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": data}
        return dict(cms.server_side_apply(body=body, name="shared", namespace=ns, field_manager=manager).to_dict())

    apply("alice", {"a": "1", "common": "x"})
    both = apply("bob", {"b": "2", "common": "x"})  # same value: shared ownership, no conflict
    assert both["data"] == {"a": "1", "b": "2", "common": "x"}
    owned = _managers(both)
    assert owned[("alice", "Apply")] == {"f:data": {"f:a": {}, "f:common": {}}}
    assert owned[("bob", "Apply")] == {"f:data": {"f:b": {}, "f:common": {}}}
    after = apply("alice", {"common": "x"})
    assert after["data"] == {"b": "2", "common": "x"}  # alice's `a` is gone, bob's `b` stays
    again = apply("alice", {"common": "x"})
    assert again["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]  # no-op apply


def test_conflicts_name_fields_and_manager_and_force_takes_ownership(
    dyn: DynamicClient, apps: client.AppsV1Api, ns: str, kit: Any
) -> None:
    """A field owned by another manager with another value is a 409 naming field and manager; force
    moves it to the applier; an Update manager is named with the API version it used."""
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = {"apiVersion": "apps/v1", "kind": "Deployment", **kit.deployment("web", replicas=2)}
    deployments.server_side_apply(body=body, name="web", namespace=ns, field_manager="ci")
    body["spec"]["replicas"] = 5
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    with pytest.raises(ConflictError) as info:
        deployments.server_side_apply(body=body, name="web", namespace=ns, field_manager="ops")
    status = json.loads(info.value.body)
    assert status["message"] == (
        'Apply failed with 2 conflicts: conflicts with "ci":\n- .spec.replicas\n'
        '- .spec.template.spec.containers[name="main"].image'
    )
    assert {c["field"] for c in status["details"]["causes"]} == {
        ".spec.replicas",
        '.spec.template.spec.containers[name="main"].image',
    }
    assert {c["reason"] for c in status["details"]["causes"]} == {"FieldManagerConflict"}
    forced = deployments.server_side_apply(
        body=body, name="web", namespace=ns, field_manager="ops", force_conflicts=True
    )
    assert forced.spec.replicas == 5
    owned = _managers(forced.to_dict())
    assert "f:replicas" in owned[("ops", "Apply")]["f:spec"]
    assert "f:replicas" not in owned[("ci", "Apply")]["f:spec"]

    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 7}}, field_manager="autoscaler")
    body["spec"]["replicas"] = 6
    with pytest.raises(ConflictError) as info:
        deployments.server_side_apply(body=body, name="web", namespace=ns, field_manager="ops")
    message = json.loads(info.value.body)["message"]
    assert message == (
        'Apply failed with 1 conflict: conflict with "autoscaler" with subresource "scale" using apps/v1: '
        ".spec.replicas"
    )


def test_every_write_records_its_manager(core: client.CoreV1Api, ns: str) -> None:
    """create/replace/patch are Update operations owned by fieldManager (else the User-Agent's product)."""
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"k": "v"}})
    (entry,) = cm.metadata.managed_fields
    assert (entry.manager, entry.operation, entry.api_version) == ("OpenAPI-Generator", "Update", "v1")
    assert entry.fields_v1 == {"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}}
    patched = core.patch_namespaced_config_map("c", ns, {"data": {"k": "w"}}, field_manager="editor")
    owned = {e.manager: e.fields_v1 for e in patched.metadata.managed_fields}
    assert owned["editor"] == {"f:data": {"f:k": {}}}
    assert "f:k" not in owned["OpenAPI-Generator"].get("f:data", {})


def test_apply_unknown_field_and_wrong_type(emulator: Emulator, ns: str) -> None:
    """Apply decodes like every write: wrong types are a 400, undeclared fields a 400 under Strict."""
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/typo?fieldManager=me&fieldValidation=Strict"
    manifest = (
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typo}\nspec: {replica: 3, selector: {}, template: {}}"
    )
    status, body = _http(emulator, "PATCH", path, manifest, "application/apply-patch+yaml")
    assert (status, body["reason"]) == (400, "BadRequest")
    assert 'unknown field "spec.replica"' in body["message"]
    status, body = _http(emulator, "PATCH", path, b"apiVersion: apps/v1\nmetadata: {name: typo}", APPLY)
    assert (status, body["reason"]) == (400, "BadRequest") and body["message"].startswith("Object 'Kind' is missing")


@pytest.mark.skipif(KUBECTL is None, reason=SKIP_REASON)
def test_kubectl_apply_server_side(kubeconfig: Path, tmp_path: Path, ns: str) -> None:
    """`kubectl apply --server-side` creates, updates, reports conflicts and takes over with --force-conflicts."""
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ssa, namespace: {ns}}}\ndata: {{mode: one}}\n"
    )
    created = kubectl(kubeconfig, "apply", "--server-side", "-f", str(manifest))
    assert "configmap/ssa serverside-applied" in created.stdout
    manifest.write_text(manifest.read_text().replace("one", "two"))
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(manifest))
    manifest.write_text(manifest.read_text().replace("two", "three"))
    clash = kubectl(kubeconfig, "apply", "--server-side", "--field-manager=other", "-f", str(manifest), check=False)
    assert clash.returncode != 0
    assert 'conflict with "kubectl"' in clash.stderr and ".data.mode" in clash.stderr
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", str(manifest))
    live = json.loads(
        kubectl(kubeconfig, "get", "configmap", "ssa", "-n", ns, "-o", "json", "--show-managed-fields").stdout
    )
    assert live["data"] == {"mode": "three"}
    assert {(e["manager"], e["operation"]) for e in live["metadata"]["managedFields"]} == {("other", "Apply")}


def test_status_writes_are_owned_under_the_status_subresource(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    """A /status write records its manager with `subresource: status`, owning status fields only."""
    apps.create_namespaced_deployment(ns, kit.deployment("web"))
    patched = apps.patch_namespaced_deployment_status(
        "web", ns, {"status": {"collisionCount": 1}}, field_manager="status-writer"
    )
    (entry,) = [e for e in patched.metadata.managed_fields if e.manager == "status-writer"]
    assert (entry.operation, entry.subresource) == ("Update", "status")
    assert entry.fields_v1 == {"f:status": {"f:collisionCount": {}}}
