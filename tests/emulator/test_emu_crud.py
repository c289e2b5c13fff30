"""Every resource type: create / get / list / replace / patch / delete through the typed client."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client

# (api class, method suffix, body without metadata, namespaced)
KINDS: dict[str, tuple[type, str, dict[str, Any], bool]] = {
    "namespace": (client.CoreV1Api, "namespace", {}, False),
    "node": (client.CoreV1Api, "node", {"spec": {"podCIDR": "10.0.0.0/24"}}, False),
    "secret": (client.CoreV1Api, "secret", {"stringData": {"password": "s3cr3t"}}, True),
    "configmap": (client.CoreV1Api, "config_map", {"data": {"key": "value"}}, True),
    "service": (client.CoreV1Api, "service", {"spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}, True),
    "serviceaccount": (client.CoreV1Api, "service_account", {}, True),
    "pod": (client.CoreV1Api, "pod", {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}, True),
    "event": (
        client.CoreV1Api,
        "event",
        {"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Test", "message": "hello", "type": "Normal"},
        True,
    ),
    "deployment": (
        client.AppsV1Api,
        "deployment",
        {
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            }
        },
        True,
    ),
    "ingress": (
        client.NetworkingV1Api,
        "ingress",
        {
            "spec": {
                "rules": [
                    {
                        "host": "a.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "s", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            }
        },
        True,
    ),
    "networkpolicy": (
        client.NetworkingV1Api,
        "network_policy",
        {"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
        True,
    ),
    "pdb": (
        client.PolicyV1Api,
        "pod_disruption_budget",
        {"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}},
        True,
    ),
    "lease": (client.CoordinationV1Api, "lease", {"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}, True),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crud_round_trip(kind: str, api: client.ApiClient, ns: str, kit: Any) -> None:
    api_cls, suffix, spec, namespaced = KINDS[kind]
    typed = api_cls(api)
    scope = (ns,) if namespaced else ()
    infix = "namespaced_" if namespaced else ""

    def call(verb: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(typed, f"{verb}_{infix}{suffix}")(*args, **kwargs)

    name = kit.unique(kind)
    body = {"metadata": {"name": name, "labels": {"crud": kind}}, **spec}
    if kind == "deployment":  # keep the controller quiet after its first status write
        body["metadata"]["annotations"] = {"emulator.tenantctl.io/never-ready": "true"}
    created = call("create", *scope, body)
    if kind in ("deployment", "pdb"):  # both have a controller writing status once
        created = kit.wait_for(lambda: (d := call("read", name, *scope)).status.observed_generation and d)
    assert created.metadata.name == name and created.metadata.uid
    if namespaced:
        assert created.metadata.namespace == ns

    got = call("read", name, *scope)
    assert got.metadata.uid == created.metadata.uid
    assert got.metadata.resource_version == created.metadata.resource_version

    listed = call("list", *scope, label_selector=f"crud={kind}")
    assert [i.metadata.name for i in listed.items] == [name]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)

    got.metadata.labels["replaced"] = "yes"
    replaced = call("replace", name, *scope, got)
    assert replaced.metadata.labels["replaced"] == "yes"
    assert int(replaced.metadata.resource_version) > int(got.metadata.resource_version)

    patched = call("patch", name, *scope, {"metadata": {"annotations": {"patched": "yes"}}})
    assert patched.metadata.annotations["patched"] == "yes" and patched.metadata.labels["replaced"] == "yes"

    call("delete", name, *scope)
    if kind == "namespace":  # namespaces terminate asynchronously
        kit.wait_for(lambda: not call("list", field_selector=f"metadata.name={name}").items, what="ns gone")
    err, status = kit.api_error(call, "read", name, *scope)
    assert err.status == 404 and status["reason"] == "NotFound"
    assert status["details"]["name"] == name


def test_kind_specific_defaulting(core: client.CoreV1Api, ns: str) -> None:
    secret = core.create_namespaced_secret(
        ns, {"metadata": {"name": "s"}, "stringData": {"a": "b"}, "data": {"c": base64.b64encode(b"d").decode()}}
    )
    assert secret.type == "Opaque" and secret.string_data is None
    assert {k: base64.b64decode(v) for k, v in secret.data.items()} == {"a": b"b", "c": b"d"}
    svc = core.create_namespaced_service(ns, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})
    assert svc.spec.type == "ClusterIP" and svc.spec.cluster_ip.startswith("10.96.")
    svc.spec.cluster_ip = None  # clusterIP stays allocated on replace
    assert core.replace_namespaced_service("svc", ns, svc).spec.cluster_ip == svc.spec.cluster_ips[0]
    pod = core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"},
        },
    )
    assert pod.status.phase == "Pending"  # status is not writable on create
    namespace = core.read_namespace(ns)
    assert namespace.status.phase == "Active" and namespace.spec.finalizers == ["kubernetes"]
    assert namespace.metadata.labels["kubernetes.io/metadata.name"] == ns
