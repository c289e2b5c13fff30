"""Writes decoded against the real Kubernetes 1.32 OpenAPI schemas; OpenAPI documents for kubectl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .test_emu_kubectl import KUBECTL, SKIP_REASON, kubectl


def test_wrong_types_are_refused_with_the_decoders_wording(
    api: client.ApiClient, core: client.CoreV1Api, ns: str, kit: Any
) -> None:
    """A real server cannot decode a number into a string field (and so never stores it, which would
    break every typed list of the namespace in the official client). Sent raw: the client itself
    refuses such bodies."""
    base = f"/api/v1/namespaces/{ns}"
    status, body, _ = kit.raw(api, "POST", f"{base}/configmaps", {"metadata": {"name": "c"}, "data": {"port": 8080}})
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal number into Go '
        "struct field ConfigMap.data of type string"
    )
    assert core.list_namespaced_config_map(ns).items == []  # typed list still decodes
    bad = kit.deployment("web")
    bad["spec"]["replicas"] = "3"
    _, body, _ = kit.raw(api, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", bad)
    assert body["message"].endswith(
        "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
    )
    _, body, _ = kit.raw(api, "POST", f"{base}/secrets", {"metadata": {"name": "s"}, "data": {"k": "not base64!"}})
    assert (
        body["message"] == 'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 3'
    )


def test_unknown_fields_per_field_validation(api: client.ApiClient, ns: str, kit: Any) -> None:
    """Strict: 400 naming every undeclared field; Warn (the server's default): stored without it, one
    Warning header per field; Ignore: dropped silently."""
    typo = kit.deployment("web")
    typo["spec"]["replica"] = 3
    typo["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    status, body, _ = kit.raw(api, "POST", path + "?fieldValidation=Strict", typo)
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].imagee", unknown field "spec.replica"'
    )  # in document order: `replica` came after the template
    status, body, headers = kit.raw(api, "POST", path, typo)
    assert status == 201 and "replica" not in body["spec"]
    assert "imagee" not in body["spec"]["template"]["spec"]["containers"][0]
    assert headers["Warning"] == (
        '299 - "unknown field \\"spec.template.spec.containers[0].imagee\\"", 299 - "unknown field \\"spec.replica\\""'
    )
    typo["metadata"]["name"] = "quiet"
    status, body, headers = kit.raw(api, "POST", path + "?fieldValidation=Ignore", typo)
    assert status == 201 and "replica" not in body["spec"] and "Warning" not in headers
    status, body, _ = kit.raw(api, "POST", path + "?fieldValidation=Sometimes", typo)
    assert status == 400 and "fieldValidation" in body["message"]


def test_openapi_documents(api: client.ApiClient, kit: Any) -> None:
    """/openapi/v2 holds every definition; each /openapi/v3 group-version document the schemas of its
    kinds (tagged with their group-version-kind) and of everything they reference."""
    status, v2, _ = kit.raw(api, "GET", "/openapi/v2")
    assert status == 200 and v2["swagger"] == "2.0"
    assert v2["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"]["type"] == "integer"
    status, root, _ = kit.raw(api, "GET", "/openapi/v3")
    status, apps_v1, _ = kit.raw(api, "GET", root["paths"]["apis/apps/v1"]["serverRelativeURL"])
    schemas = apps_v1["components"]["schemas"]
    assert schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}
    ]
    assert "io.k8s.api.core.v1.PodSpec" in schemas  # referenced through the pod template
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"


@pytest.mark.skipif(KUBECTL is None, reason=SKIP_REASON)
def test_kubectl_explain_and_strict_apply(kubeconfig: Path, tmp_path: Path, ns: str) -> None:
    """`kubectl explain` reads the schemas; `kubectl apply` (fieldValidation=Strict) refuses a typo."""
    explained = kubectl(kubeconfig, "explain", "deployment.spec.replicas").stdout
    assert "FIELD: replicas <integer>" in explained and "Number of desired pods" in explained
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: typo, namespace: {ns}}}\ndatta: {{a: b}}\n"
    )
    result = kubectl(kubeconfig, "apply", "-f", str(manifest), check=False)
    assert result.returncode != 0 and 'strict decoding error: unknown field "datta"' in result.stderr
    warned = kubectl(kubeconfig, "apply", "--validate=warn", "-f", str(manifest))
    assert 'unknown field "datta"' in warned.stderr
