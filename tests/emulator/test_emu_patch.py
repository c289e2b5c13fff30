"""The three patch types, through the typed client's content-type selection."""

from __future__ import annotations

from typing import Any

from kubernetes import client

POD_SPEC = {
    "containers": [
        {
            "name": "app",
            "image": "app:1",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80}, {"containerPort": 443}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        },
        {"name": "sidecar", "image": "side:1"},
    ],
    "volumes": [{"name": "data", "emptyDir": {}}],
}


def _deploy(apps: client.AppsV1Api, ns: str, name: str) -> None:
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": POD_SPEC},
            },
        },
    )


def test_strategic_merge_patch_is_the_default(apps: client.AppsV1Api, ns: str) -> None:
    _deploy(apps, ns, "smp")
    patched = apps.patch_namespaced_deployment(
        "smp",
        ns,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "app:2",
                                "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}],
                                "ports": [{"containerPort": 8080}],
                                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                            },
                            {"name": "sidecar", "$patch": "delete"},
                        ],
                        "volumes": [{"name": "cache", "emptyDir": {}}],
                    }
                }
            }
        },
    )
    spec = patched.spec.template.spec
    app = spec.containers[0]
    assert [c.name for c in spec.containers] == ["app"] and app.image == "app:2"
    assert [(e.name, e.value) for e in app.env] == [("A", "1"), ("B", "22"), ("C", "3")]
    assert [p.container_port for p in app.ports] == [80, 443, 8080]
    assert [m.mount_path for m in app.volume_mounts] == ["/data", "/cache"]
    assert [v.name for v in spec.volumes] == ["data", "cache"]
    # null deletes a field; $retainKeys drops the keys not listed
    patched = apps.patch_namespaced_deployment(
        "smp",
        ns,
        {
            "spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                "template": {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}},
            }
        },
    )
    assert patched.spec.strategy.type == "Recreate" and patched.spec.strategy.rolling_update is None
    assert [e.name for e in patched.spec.template.spec.containers[0].env] == ["B", "C"]


def test_service_ports_merge_by_port(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "svc"},
            "spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]},
        },
    )
    patched = core.patch_namespaced_service("svc", ns, {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    assert [(p.port, p.target_port) for p in patched.spec.ports] == [(80, 8080), (443, None)]


def test_json_merge_patch_replaces_lists(apps: client.AppsV1Api, ns: str) -> None:
    _deploy(apps, ns, "merge")
    patched = apps.patch_namespaced_deployment(
        "merge",
        ns,
        {
            "metadata": {"labels": {"new": "label"}},
            "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "only:1"}], "volumes": None}}},
        },
        _content_type="application/merge-patch+json",
    )
    spec = patched.spec.template.spec
    assert [(c.name, c.image) for c in spec.containers] == [("only", "only:1")] and spec.volumes is None
    assert patched.metadata.labels == {"new": "label"}


def test_json_patch_from_a_list_body(apps: client.AppsV1Api, ns: str, kit: Any) -> None:
    _deploy(apps, ns, "jp")
    patched = apps.patch_namespaced_deployment(
        "jp",
        ns,
        [
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "app:3"},
            {"op": "add", "path": "/metadata/annotations", "value": {"via": "json-patch"}},
            {"op": "remove", "path": "/spec/template/spec/containers/1"},
        ],
    )
    assert [c.image for c in patched.spec.template.spec.containers] == ["app:3"]
    assert patched.metadata.annotations == {"via": "json-patch"}
    err, body = kit.api_error(
        apps.patch_namespaced_deployment, "jp", ns, [{"op": "test", "path": "/spec/replicas", "value": 42}]
    )
    assert (err.status, body["reason"]) == (422, "Invalid")
    err, body = kit.api_error(apps.patch_namespaced_deployment, "absent", ns, {"spec": {}})
    assert body["reason"] == "NotFound"


def test_patch_cannot_change_identity(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "id"}})
    patched = core.patch_namespaced_config_map("id", ns, {"metadata": {"uid": "forged", "creationTimestamp": None}})
    assert patched.metadata.uid == cm.metadata.uid and patched.metadata.creation_timestamp is not None


def test_strategic_merge_follows_the_schema(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> None:
    """Merge keys and strategies are the Go types' (from the OpenAPI schema): Service ports merge by
    `port`, container ports by `containerPort`, env by `name`; tolerations have no strategy and are replaced."""
    core.create_namespaced_service(
        ns,
        {"metadata": {"name": "s"}, "spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}},
    )
    svc = core.patch_namespaced_service("s", ns, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}})
    assert [(p.port, p.target_port) for p in svc.spec.ports] == [(80, None), (443, 8443)]
    template = {
        "metadata": {"labels": {"app": "d"}},
        "spec": {
            "containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}
            ],
            "tolerations": [{"key": "a", "operator": "Exists"}],
        },
    }
    apps.create_namespaced_deployment(
        ns, {"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template}}
    )
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "c", "ports": [{"containerPort": 81}], "env": [{"name": "B", "value": "2"}]}
                    ],
                    "tolerations": [{"key": "b", "operator": "Exists"}],
                }
            }
        }
    }
    patched = apps.patch_namespaced_deployment("d", ns, patch).spec.template.spec
    (container,) = patched.containers
    assert [p.container_port for p in container.ports] == [80, 81]
    assert [e.name for e in container.env] == ["A", "B"]
    assert [t.key for t in patched.tolerations] == ["b"]
