"""Discovery: what the typed client, the dynamic client and kubectl read before anything else."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.dynamic import DynamicClient

from devstack.kube_emulator import RESOURCES

GROUPS = {
    "apps": "apps/v1",
    "networking.k8s.io": "networking.k8s.io/v1",
    "policy": "policy/v1",
    "coordination.k8s.io": "coordination.k8s.io/v1",
    "authentication.k8s.io": "authentication.k8s.io/v1",  # TokenReview (test_emu_tokens.py)
}


def test_version_and_legacy_api(api: client.ApiClient) -> None:
    version = client.VersionApi(api).get_code()
    assert (version.major, version.minor) == ("1", "32")
    assert version.git_version.startswith("v1.32")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]


def test_api_groups(api: client.ApiClient) -> None:
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert set(groups) == set(GROUPS)
    for name, gv in GROUPS.items():
        assert groups[name].preferred_version.group_version == gv
        assert [v.group_version for v in groups[name].versions] == [gv]


def test_resource_lists(api: client.ApiClient) -> None:
    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {
        "namespaces",
        "nodes",
        "secrets",
        "configmaps",
        "services",
        "serviceaccounts",
        "pods",
        "events",
        "pods/status",
        "pods/eviction",
        "nodes/status",
    } <= set(core)
    assert core["namespaces"].namespaced is False and core["nodes"].namespaced is False
    assert core["pods"].namespaced is True and "watch" in core["pods"].verbs
    assert core["pods/eviction"].group == "policy" and core["pods/eviction"].kind == "Eviction"
    apps = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    assert apps["deployments"].kind == "Deployment" and apps["deployments"].short_names == ["deploy"]
    assert apps["deployments/scale"].kind == "Scale" and apps["deployments/scale"].group == "autoscaling"
    assert "deployments/status" in apps
    networking = {r.name for r in client.NetworkingV1Api(api).get_api_resources().resources}
    assert {"ingresses", "networkpolicies"} <= networking
    assert "poddisruptionbudgets" in {r.name for r in client.PolicyV1Api(api).get_api_resources().resources}
    assert "leases" in {r.name for r in client.CoordinationV1Api(api).get_api_resources().resources}


def test_dynamic_client_discovers_every_kind(api: client.ApiClient) -> None:
    dyn = DynamicClient(api)
    for rt in RESOURCES:
        res = dyn.resources.get(api_version=rt.api_version, kind=rt.kind)
        assert (res.name, res.namespaced) == (rt.plural, rt.namespaced)
    scale = dyn.resources.get(api_version="apps/v1", kind="Deployment").subresources["scale"]
    assert scale.kind == "Scale"
    assert dyn.resources.get(api_version="v1", kind="Namespace").get().kind == "NamespaceList"


def test_unknown_paths_are_404_status(api: client.ApiClient, kit: Any) -> None:
    for path in (
        "/apis/nope/v1",
        "/api/v2",
        "/apis/apps/v1/widgets",
        "/apis/apps/v1/namespaces/x/deployments/a/b/c",
        "/api/v1/pods/name-without-namespace",
        "/api/v1/namespaces/default/pods/p/logs",
    ):
        status, body, _ = kit.raw(api, "GET", path)
        assert status == 404, path
        assert body["reason"] == "NotFound" and body["kind"] == "Status"


def test_openapi_v3_advertises_field_validation(api: client.ApiClient, kit: Any) -> None:
    status, root, _ = kit.raw(api, "GET", "/openapi/v3")
    assert status == 200 and "apis/apps/v1" in root["paths"]
    status, doc, _ = kit.raw(api, "GET", root["paths"]["apis/apps/v1"]["serverRelativeURL"])
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert patch["parameters"][0]["name"] == "fieldValidation"
