"""Object metadata, error Status objects, preconditions, finalizers, pagination, dry-run."""

from __future__ import annotations

from typing import Any

from kubernetes import client


def test_metadata_and_global_resource_version(
    core: client.CoreV1Api, apps: client.AppsV1Api, ns: str, kit: Any
) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    secret = core.create_namespaced_secret(ns, {"metadata": {"name": "b"}})
    dep = apps.create_namespaced_deployment(ns, kit.deployment("c"))
    node = core.create_node({"metadata": {"name": kit.unique("node")}})
    rvs = [int(o.metadata.resource_version) for o in (cm, secret, dep, node)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4  # one counter for every kind and scope
    assert len({cm.metadata.uid, secret.metadata.uid, dep.metadata.uid}) == 3
    assert cm.metadata.creation_timestamp is not None and cm.metadata.generation is None
    listed = core.list_namespaced_config_map(ns)
    assert listed.kind == "ConfigMapList" and listed.api_version == "v1"
    assert int(listed.metadata.resource_version) >= rvs[-1]
    core.delete_node(node.metadata.name)


def test_generation_tracks_spec_only(api: client.ApiClient, apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    dep = apps.create_namespaced_deployment(ns, kit.deployment("gen"))
    assert dep.metadata.generation == 1
    patched = apps.patch_namespaced_deployment("gen", ns, {"metadata": {"labels": {"x": "y"}, "annotations": {}}})
    assert patched.metadata.generation == 1
    patched = apps.patch_namespaced_deployment_status("gen", ns, {"status": {"collisionCount": 1}})
    assert patched.metadata.generation == 1
    assert apps.patch_namespaced_deployment("gen", ns, {"spec": {"replicas": 2}}).metadata.generation == 2

    # Ingress has a status subresource and no controller here, so replace races with nothing.
    net = client.NetworkingV1Api(api)
    ing = net.create_namespaced_ingress(
        ns,
        {
            "metadata": {"name": "ing"},
            "spec": {"ingressClassName": "a"},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}},
        },
    )
    assert ing.metadata.generation == 1 and ing.status.load_balancer.ingress is None  # not writable on create
    ing.status = client.V1IngressStatus(
        load_balancer=client.V1IngressLoadBalancerStatus(ingress=[client.V1IngressLoadBalancerIngress(ip="10.0.0.1")])
    )
    ing.spec.ingress_class_name = "ignored-by-status"
    after_status = net.replace_namespaced_ingress_status("ing", ns, ing)
    assert after_status.metadata.generation == 1 and after_status.spec.ingress_class_name == "a"
    assert after_status.status.load_balancer.ingress[0].ip == "10.0.0.1"
    after_status.spec.ingress_class_name = "b"
    after_status.status.load_balancer.ingress = None  # the main resource ignores status
    bumped = net.replace_namespaced_ingress("ing", ns, after_status)
    assert bumped.metadata.generation == 2 and bumped.status.load_balancer.ingress[0].ip == "10.0.0.1"
    again = net.replace_namespaced_ingress("ing", ns, bumped)  # a no-op write bumps nothing
    assert again.metadata.resource_version == bumped.metadata.resource_version
    assert again.metadata.generation == 2


def test_error_statuses(
    api: client.ApiClient, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str, kit: Any
) -> None:
    apps.create_namespaced_deployment(ns, kit.deployment("dup"))
    err, body = kit.api_error(apps.create_namespaced_deployment, ns, kit.deployment("dup"))
    assert (err.status, err.reason, body["reason"]) == (409, "Conflict", "AlreadyExists")
    assert body["details"] == {"name": "dup", "group": "apps", "kind": "deployments"}
    assert body["message"] == 'deployments.apps "dup" already exists'

    err, body = kit.api_error(core.read_namespaced_config_map, "absent", ns)
    assert (err.status, err.reason, body["reason"]) == (404, "Not Found", "NotFound")
    assert body["message"] == 'configmaps "absent" not found'
    assert body["details"] == {"name": "absent", "kind": "configmaps"}
    err, body = kit.api_error(core.delete_namespaced_config_map, "absent", ns)
    assert body["reason"] == "NotFound"

    for bad in ("Bad_Name", "-x", "a" * 254):
        err, body = kit.api_error(core.create_namespaced_config_map, ns, {"metadata": {"name": bad}})
        assert (err.status, err.reason, body["reason"]) == (422, "Unprocessable Entity", "Invalid")
        assert body["details"]["causes"][0]["field"] == "metadata.name"
    err, body = kit.api_error(core.create_namespace, {"metadata": {"name": "has.dot"}})  # DNS-1123 label
    assert body["reason"] == "Invalid"
    err, body = kit.api_error(core.create_namespaced_config_map, ns, {"metadata": {}})
    assert body["reason"] == "Invalid" and "name or generateName is required" in body["message"]
    err, body = kit.api_error(
        apps.create_namespaced_deployment,
        ns,
        {
            **kit.deployment("mismatch"),
            "spec": {**kit.deployment("m")["spec"], "selector": {"matchLabels": {"a": "b"}}},
        },
    )
    assert body["reason"] == "Invalid" and "selector" in body["message"]

    err, body = kit.api_error(core.create_namespaced_config_map, ns, {"metadata": {"name": "x", "namespace": "other"}})
    assert (err.status, body["reason"]) == (400, "BadRequest")
    assert "does not match the namespace" in body["message"]
    core.create_namespaced_config_map(ns, {"metadata": {"name": "named"}})
    err, body = kit.api_error(core.replace_namespaced_config_map, "named", ns, {"metadata": {"name": "other"}})
    assert (err.status, body["reason"]) == (400, "BadRequest")

    status, body, _ = kit.raw(api, "POST", f"/api/v1/namespaces/{ns}/configmaps", "{not json")
    assert (status, body["reason"]) == (400, "BadRequest")
    for method, path in (
        ("POST", "/api/v1/pods"),
        ("PUT", f"/api/v1/namespaces/{ns}/configmaps"),
        ("POST", "/api/v1"),
        ("POST", f"/api/v1/namespaces/{ns}/configmaps/named"),
    ):
        status, body, _ = kit.raw(api, method, path, {})
        assert (status, body["reason"]) == (405, "MethodNotAllowed"), (method, path)
    err, body = kit.api_error(
        core.patch_namespaced_config_map,
        "named",
        ns,
        {"data": {"a": "b"}},
        _content_type="application/apply-patch+yaml",
    )
    # a real server requires a field manager for server-side apply
    assert (err.status, body["reason"]) == (422, "Invalid")
    assert "fieldManager: Required value" in body["message"]


def test_replace_conflict_and_preconditions(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    cm.data["v"] = "2"
    fresh = core.replace_namespaced_config_map("c", ns, cm)
    cm.data["v"] = "3"  # still carries the old resourceVersion
    err, body = kit.api_error(core.replace_namespaced_config_map, "c", ns, cm)
    assert (err.status, err.reason, body["reason"]) == (409, "Conflict", "Conflict")
    assert "the object has been modified" in body["message"]
    assert body["details"] == {"name": "c", "kind": "configmaps"}
    cm.metadata.resource_version = None  # unconditional update is allowed
    assert core.replace_namespaced_config_map("c", ns, cm).data == {"v": "3"}
    err, body = kit.api_error(
        core.delete_namespaced_config_map,
        "c",
        ns,
        body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=fresh.metadata.resource_version)
        ),
    )
    assert body["reason"] == "Conflict" and "Precondition failed" in body["message"]
    err, body = kit.api_error(
        core.patch_namespaced_config_map,
        "c",
        ns,
        {"metadata": {"resourceVersion": fresh.metadata.resource_version}, "data": {"v": "4"}},
    )
    assert body["reason"] == "Conflict"


def test_delete_responses(api: client.ApiClient, core: client.CoreV1Api, ns: str, kit: Any) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "gone"}})
    status, body, _ = kit.raw(
        api,
        "DELETE",
        f"/api/v1/namespaces/{ns}/configmaps/gone",
        {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
    )
    assert status == 200 and body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"] == {"name": "gone", "kind": "configmaps", "uid": cm.metadata.uid}
    # Foreground: not deleted yet when the server answers, so the answer is the object, marked
    core.create_namespaced_config_map(ns, {"metadata": {"name": "fg"}})
    status, body, _ = kit.raw(
        api, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/fg", {"propagationPolicy": "Foreground"}
    )
    assert status == 200 and body["kind"] == "ConfigMap" and body["metadata"]["finalizers"] == ["foregroundDeletion"]
    core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    pod = core.delete_namespaced_pod("p", ns, propagation_policy="Background", grace_period_seconds=0)
    assert pod.kind == "Pod" and pod.metadata.name == "p"  # pods answer the deleted object


def test_finalizers(core: client.CoreV1Api, ns: str, kit: Any) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "f", "finalizers": ["example.com/a"]}})
    core.patch_namespaced_config_map("f", ns, {"metadata": {"finalizers": ["example.com/b"]}})  # SMP: union
    assert core.read_namespaced_config_map("f", ns).metadata.finalizers == ["example.com/a", "example.com/b"]
    deleted = core.delete_namespaced_config_map("f", ns)
    assert deleted["metadata"]["deletionTimestamp"]
    pending = core.read_namespaced_config_map("f", ns)
    assert pending.metadata.deletion_timestamp is not None
    assert core.delete_namespaced_config_map("f", ns)["metadata"]["name"] == "f"  # idempotent while pending
    core.patch_namespaced_config_map("f", ns, [{"op": "remove", "path": "/metadata/finalizers/0"}])
    assert core.read_namespaced_config_map("f", ns).metadata.finalizers == ["example.com/b"]
    core.patch_namespaced_config_map(
        "f", ns, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    _, body = kit.api_error(core.read_namespaced_config_map, "f", ns)
    assert body["reason"] == "NotFound"


def test_owner_references_labels_annotations_round_trip(core: client.CoreV1Api, ns: str) -> None:
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid, "controller": True}
    child = core.create_namespaced_secret(
        ns, {"metadata": {"name": "child", "ownerReferences": [ref], "labels": {"l": "1"}, "annotations": {"a": "2"}}}
    )
    assert child.metadata.owner_references[0].uid == owner.metadata.uid
    assert (child.metadata.labels, child.metadata.annotations) == ({"l": "1"}, {"a": "2"})


def test_generate_name_dry_run_and_pagination(core: client.CoreV1Api, ns: str) -> None:
    made = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "gen-"}})
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == 9
    dry = core.create_namespaced_config_map(ns, {"metadata": {"name": "dry"}}, dry_run="All")
    assert dry.metadata.uid and dry.metadata.resource_version is None
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == [made.metadata.name]
    for i in range(5):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"page-{i}", "labels": {"page": "yes"}}})
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(ns, label_selector="page", limit=2, _continue=token)
        seen += [c.metadata.name for c in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"page-{i}" for i in range(5)] and pages == 3
    core.delete_collection_namespaced_config_map(ns, label_selector="page=yes")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == [made.metadata.name]
