"""The KVM provider's desired objects and its comparison logic, without a server."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    V1ConfigMap,
    V1Deployment,
    V1Ingress,
    V1Namespace,
    V1NetworkPolicy,
    V1Service,
    V1ServiceAccount,
)

from activities.kvm import manifests
from activities.kvm.provider import OWNED, covers, node_readiness, plan_changes
from models.errors import InvalidInput
from models.naming import (
    CLUSTER_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NODE_LABEL,
    ROLE_LABEL,
    VERSION_LABEL,
    certificate_secret,
)
from models.pki import certificate_requests
from models.spec import ClusterSpec, memory_mib, parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kvm-cluster.yaml"


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return parse_spec(yaml.safe_load(EXAMPLE.read_text()), str(EXAMPLE))


def deployments(spec: ClusterSpec, **options: Any) -> dict[str, dict[str, Any]]:
    return {
        node: manifests.node_deployment_manifest(spec, node, spec.kubernetes_version, **options)
        for node in spec.node_names()
    }


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return result


def test_names_follow_the_cluster_id(spec: ClusterSpec) -> None:
    assert spec.id == "acme-prod"
    assert manifests.namespace_manifest(spec)["metadata"]["name"] == "tenant-acme-prod"
    assert sorted(deployments(spec)) == ["master-0", "master-1", "master-2", "worker-0", "worker-1", "worker-2"]
    assert manifests.cloud_config_name("master", "v1.32.4") == "cloud-config-master-1.32.4"
    for manifest in (
        manifests.network_policy_manifest(spec),
        manifests.service_account_manifest(spec),
        manifests.cluster_configmap_manifest(spec),
        manifests.api_service_manifest(spec),
        manifests.etcd_service_manifest(spec),
        manifests.api_ingress_manifest(spec),
        manifests.cloud_config_manifest(spec, "worker", spec.kubernetes_version),
        *deployments(spec).values(),
    ):
        assert manifest["metadata"]["namespace"] == "tenant-acme-prod"
    assert [
        manifests.network_policy_manifest(spec)["metadata"]["name"],
        manifests.service_account_manifest(spec)["metadata"]["name"],
    ] == [
        "isolate-tenant",
        "tenant-node",
    ]


def test_every_object_carries_the_cluster_labels(spec: ClusterSpec) -> None:
    objects = [
        manifests.namespace_manifest(spec),
        manifests.network_policy_manifest(spec),
        manifests.service_account_manifest(spec),
        manifests.cluster_configmap_manifest(spec),
        manifests.api_service_manifest(spec),
        manifests.etcd_service_manifest(spec),
        manifests.api_ingress_manifest(spec),
        manifests.cloud_config_manifest(spec, "master", spec.kubernetes_version),
        *deployments(spec).values(),
    ]
    for manifest in objects:
        labels = manifest["metadata"]["labels"]
        assert labels[CLUSTER_LABEL] == "acme-prod", manifest["metadata"]["name"]
        assert labels[MANAGED_BY_LABEL] == MANAGED_BY
    assert manifests.namespace_manifest(spec)["metadata"]["labels"][manifests.OWNER_LABEL] == "acme"


def test_owner_reference_points_at_the_namespace(spec: ClusterSpec) -> None:
    owned = manifests.with_owner(manifests.api_service_manifest(spec), "uid-1")
    assert owned["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Namespace", "name": "tenant-acme-prod", "uid": "uid-1"}
    ]
    assert "ownerReferences" not in manifests.api_service_manifest(spec)["metadata"]  # a copy, not mutated


def test_node_deployment_shape(spec: ClusterSpec) -> None:
    for node, deployment in deployments(spec).items():
        role = node.split("-")[0]
        assert deployment["metadata"]["name"] == node
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        labels = {
            CLUSTER_LABEL: "acme-prod",
            MANAGED_BY_LABEL: MANAGED_BY,
            ROLE_LABEL: role,
            NODE_LABEL: node,
            VERSION_LABEL: "1.32.4",
        }
        assert deployment["metadata"]["labels"] == labels
        assert deployment["spec"]["template"]["metadata"] == {"labels": labels}
        # the selector never includes the version: it is immutable, an upgrade changes the version
        assert deployment["spec"]["selector"] == {"matchLabels": {CLUSTER_LABEL: "acme-prod", NODE_LABEL: node}}
        containers = pod_spec(deployment)["containers"]
        assert [c["name"] for c in containers] == ["k8s-kvm"]
        container = containers[0]
        assert container["image"] == "quay.io/tenantctl/k8s-kvm-node:v1.32.4"
        assert container["securityContext"] == {"privileged": True}
        assert pod_spec(deployment)["serviceAccountName"] == "tenant-node"
        assert pod_spec(deployment)["hostname"] == node
        assert ("subdomain" in pod_spec(deployment)) is (role == "master")


def test_resources_come_from_the_pool(spec: ClusterSpec) -> None:
    for node, deployment in deployments(spec).items():
        pool = spec.masters if node.startswith("master") else spec.workers
        resources = pod_spec(deployment)["containers"][0]["resources"]
        assert resources["requests"] == resources["limits"]  # Guaranteed QoS
        assert resources["limits"]["cpu"] == str(pool.cpu)
        assert pool.memory is not None
        assert resources["limits"]["memory"] == manifests.memory_quantity(pool.memory)
        env = {e["name"]: e["value"] for e in pod_spec(deployment)["containers"][0]["env"]}
        assert env["MEMORY"] == str(memory_mib(pool.memory))
        assert env["CORES"] == str(pool.cpu)
    masters = pod_spec(deployments(spec)["master-0"])["containers"][0]["resources"]["limits"]
    workers = pod_spec(deployments(spec)["worker-0"])["containers"][0]["resources"]["limits"]
    assert masters == {"cpu": "2", "memory": "4Gi"}
    assert workers == {"cpu": "4", "memory": "8Gi"}


def test_memory_quantity_is_canonical() -> None:
    assert manifests.memory_quantity("8Gi") == "8Gi"
    assert manifests.memory_quantity("4096Mi") == "4Gi"  # as the API server prints it back
    assert manifests.memory_quantity("1536Mi") == "1536Mi"


def test_anti_affinity_required_for_masters_preferred_for_workers(spec: ClusterSpec) -> None:
    master = pod_spec(deployments(spec)["master-1"])["affinity"]["podAntiAffinity"]
    assert master["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "labelSelector": {"matchLabels": {CLUSTER_LABEL: "acme-prod", ROLE_LABEL: "master"}},
            "topologyKey": "kubernetes.io/hostname",
        }
    ]
    worker = pod_spec(deployments(spec)["worker-1"])["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in worker
    for affinity in (master, worker):
        [preferred] = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        assert preferred["podAffinityTerm"] == {
            "labelSelector": {"matchLabels": {CLUSTER_LABEL: "acme-prod"}},
            "topologyKey": "kubernetes.io/hostname",
        }


def test_volumes_match_the_certificate_consumers(spec: ClusterSpec) -> None:
    requests = certificate_requests(spec)
    for node, deployment in deployments(spec).items():
        volumes = pod_spec(deployment)["volumes"]
        secrets = {v["secret"]["secretName"] for v in volumes if "secret" in v}
        assert secrets == {certificate_secret(r.name) for r in requests if node in r.consumers}, node
        assert "cert-admin" not in secrets  # the admin key pair is for people, not for nodes
        [config] = [v for v in volumes if "configMap" in v]
        assert config["configMap"]["name"] == "cloud-config-" + node.split("-")[0] + "-1.32.4"
        mounts = pod_spec(deployment)["containers"][0]["volumeMounts"]
        assert sorted(x["name"] for x in mounts) == sorted(v["name"] for v in volumes)
        assert len({x["mountPath"] for x in mounts}) == len(mounts)
        assert all(x["readOnly"] for x in mounts)
    master = {v["name"]: v for v in pod_spec(deployments(spec)["master-2"])["volumes"]}
    assert master["cert-etcd-peer"]["secret"]["secretName"] == "cert-etcd-peer-master-2"
    assert master["cert-node"]["secret"]["secretName"] == "cert-node-master-2"
    assert master["cert-apiserver"]["secret"]["secretName"] == "cert-apiserver"
    worker = {v["name"] for v in pod_spec(deployments(spec)["worker-0"])["volumes"]}
    assert worker == {"cloud-config", "cert-node"}


def test_a_surge_worker_beyond_the_count_gets_its_own_certificate(spec: ClusterSpec) -> None:
    deployment = manifests.node_deployment_manifest(spec, "worker-3", "1.33.1")
    secrets = {v["secret"]["secretName"] for v in pod_spec(deployment)["volumes"] if "secret" in v}
    assert secrets == {"cert-node-worker-3"}
    assert pod_spec(deployment)["containers"][0]["image"].endswith(":v1.33.1")


def test_restart_token_is_opt_in_and_manifests_carry_no_local_stack_annotations(spec: ClusterSpec) -> None:
    # the local stack's stand-in kubelets are the SimulatedNodes hook's business (devstack), not the manifests'.
    plain = manifests.node_deployment_manifest(spec, "worker-0", "1.32.4")
    assert "annotations" not in plain["metadata"]
    assert "annotations" not in plain["spec"]["template"]["metadata"]
    rolled = manifests.node_deployment_manifest(spec, "worker-0", "1.32.4", "serials-abc")
    assert rolled["spec"]["template"]["metadata"]["annotations"] == {manifests.RESTART_TOKEN_ANNOTATION: "serials-abc"}
    assert not any(key.startswith("emulator.") for key in rolled["metadata"].get("annotations") or {})


def test_endpoint_objects(spec: ClusterSpec) -> None:
    api = manifests.api_service_manifest(spec)["spec"]
    assert api["type"] == "ClusterIP"
    assert api["selector"] == {CLUSTER_LABEL: "acme-prod", ROLE_LABEL: "master"}
    assert api["ports"] == [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}]
    etcd = manifests.etcd_service_manifest(spec)["spec"]
    assert etcd["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in etcd["ports"]} == {"client": 2379, "peer": 2380}
    ingress = manifests.api_ingress_manifest(spec)
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "api.acme-prod.k8s.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": "api", "port": {"number": 443}}}


def test_network_policy_isolates_the_namespace(spec: ClusterSpec) -> None:
    policy = manifests.network_policy_manifest(spec)["spec"]
    assert policy["podSelector"] == {}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [rule] = policy["ingress"]
    assert rule["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
    ]
    assert policy["egress"] == [{}]  # VMs reach the internet


def test_cluster_facts(spec: ClusterSpec) -> None:
    data = manifests.cluster_configmap_manifest(spec)["data"]
    assert data["cluster-id"] == "acme-prod"
    assert data["api-domain"] == "api.acme-prod.k8s.example.com"
    assert data["service-cidr"] == "172.31.0.0/16"
    assert data["api-service-ip"] == "172.31.0.1"
    assert data["dns-service-ip"] == "172.31.0.10"
    assert all(isinstance(v, str) for v in data.values())  # ConfigMap data is strings only


def test_cloud_config_per_role(spec: ClusterSpec) -> None:
    master = manifests.cloud_config(spec, "master", "1.32.4")
    worker = manifests.cloud_config(spec, "worker", "1.32.4")
    for text in (master, worker):
        assert text.startswith("#cloud-config\n")
        assert "v1.32.4" in text
        assert "api.acme-prod.k8s.example.com" in text
        document = yaml.safe_load(text)
        paths = [f["path"] for f in document["write_files"]]
        assert "/etc/kubernetes/kubeconfig/kubelet.yaml" in paths
        assert "/etc/kubernetes/ssl/node/tls.crt" in text
    members = "master-0=https://master-0.etcd.acme-prod.k8s.example.com:2380"
    assert members in master and "master-2=" in master
    assert "etcd" not in [f["path"].rsplit("/", 1)[-1].split(".")[0] for f in yaml.safe_load(worker)["write_files"]]
    assert "/etc/kubernetes/ssl/etcd-peer/tls.crt" in master
    assert "/etc/kubernetes/ssl/etcd-peer" not in worker
    # masters reach their own API server; workers go through the ingress
    assert "https://127.0.0.1:6443" in master
    assert "https://api.acme-prod.k8s.example.com:443" in worker
    # every certificate directory the cloud-config reads is one the node mounts
    for node in ("master-0", "worker-0"):
        text = master if node.startswith("master") else worker
        mounted = {
            x["mountPath"]
            for x in pod_spec(manifests.node_deployment_manifest(spec, node, "1.32.4"))["containers"][0]["volumeMounts"]
        }
        for directory in {part.split("/")[0] for part in text.split("/etc/kubernetes/ssl/")[1:]}:
            if directory and not directory.startswith(("tls", "ca")):
                assert f"/etc/kubernetes/ssl/{directory}" in mounted, (node, directory)
    manifest = manifests.cloud_config_manifest(spec, "master", "v1.32.4")
    assert manifest["data"] == {"user-data": master}
    assert manifest["metadata"]["labels"][VERSION_LABEL] == "1.32.4"


def test_cloud_config_is_rendered_once_per_role_and_afresh_for_any_change(spec: ClusterSpec) -> None:
    cache = manifests._rendered_cloud_config
    cache.cache_clear()
    first = manifests.cloud_config(spec, "worker", "1.32.4")
    for _ in range(3):  # the other workers of the cluster (and "v1.32.4" is the same version)
        assert manifests.cloud_config(spec, "worker", "v1.32.4") == first
    assert cache.cache_info().misses == 1
    # the kept text is what a fresh render gives
    cache.cache_clear()
    assert manifests.cloud_config(spec, "worker", "1.32.4") == first
    # a change in any field of the spec (even one the text shows only indirectly) renders again
    changed = spec.model_copy(deep=True)
    changed.networking.service_cidr = "172.30.0.0/16"
    text = manifests.cloud_config(changed, "worker", "1.32.4")
    assert text != first and "172.30.0.10" in text
    assert cache.cache_info().misses == 2
    # a spec changed in place after a render (models validate on assignment) is not served stale
    spec.base_domain = "k8s.example.org"
    assert "api.acme-prod.k8s.example.org" in manifests.cloud_config(spec, "worker", "1.32.4")


def test_nodes_ensured_at_once_render_their_cloud_config_once(spec: ClusterSpec) -> None:
    cache = manifests._rendered_cloud_config
    cache.cache_clear()
    start = threading.Barrier(6)

    def ensure_node(_: int) -> str:  # what each of a create's six ensure_node threads does first
        start.wait()
        return manifests.cloud_config(spec, "master", "1.32.4")

    with ThreadPoolExecutor(6) as pool:
        texts = set(pool.map(ensure_node, range(6)))
    assert len(texts) == 1
    assert cache.cache_info().misses == 1


@pytest.mark.parametrize(
    ("model", "build"),
    [
        (V1Namespace, manifests.namespace_manifest),
        (V1NetworkPolicy, manifests.network_policy_manifest),
        (V1ServiceAccount, manifests.service_account_manifest),
        (V1ConfigMap, manifests.cluster_configmap_manifest),
        (V1Service, manifests.api_service_manifest),
        (V1Service, manifests.etcd_service_manifest),
        (V1Ingress, manifests.api_ingress_manifest),
        (V1ConfigMap, lambda s: manifests.cloud_config_manifest(s, "master", "1.32.4")),
        (V1Deployment, lambda s: manifests.node_deployment_manifest(s, "master-0", "1.32.4", "t")),
        (V1Deployment, lambda s: manifests.node_deployment_manifest(s, "worker-0", "1.32.4")),
    ],
)
def test_manifests_are_valid_api_objects(spec: ClusterSpec, model: Any, build: Any) -> None:
    """The client's models know every field, and sending one sends exactly the manifest."""
    manifest = build(spec)
    serialized = ApiClient().sanitize_for_serialization(model.model_validate(manifest))  # type: ignore[no-untyped-call]
    assert serialized == manifest


def test_refuses_foreign_input(spec: ClusterSpec) -> None:
    with pytest.raises(InvalidInput, match="node 'etcd-0'"):
        manifests.node_deployment_manifest(spec, "etcd-0", "1.32.4")
    with pytest.raises(InvalidInput, match="kubernetes_version"):
        manifests.node_deployment_manifest(spec, "worker-0", "latest")
    aws = parse_spec(yaml.safe_load((EXAMPLE.parent / "aws-cluster.yaml").read_text()))
    with pytest.raises(InvalidInput, match="provider is 'aws'"):
        manifests.network_policy_manifest(aws)


# --- comparison with live objects -------------------------------------------------------------------
def served(manifest: dict[str, Any]) -> dict[str, Any]:
    """What an API server stores: the manifest plus system fields and defaults."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(uid="u-1", resourceVersion="7", generation=1, creationTimestamp="2026-01-01T00:00:00Z")
    if live["kind"] == "Deployment":
        live["spec"].update(revisionHistoryLimit=10, progressDeadlineSeconds=600)
        template = live["spec"]["template"]["spec"]
        template.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler")
        for container in template["containers"]:
            container.update(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File")
            container["readinessProbe"].update(timeoutSeconds=1, successThreshold=1)
        live["status"] = {"observedGeneration": 1}
    return live


def test_server_defaults_are_not_drift(spec: ClusterSpec) -> None:
    desired = manifests.with_owner(manifests.node_deployment_manifest(spec, "worker-0", "1.32.4"), "u-ns")
    live = served(desired)
    live["metadata"]["labels"]["team"] = "platform"  # someone else's label stays theirs
    live["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    assert plan_changes(live, desired, OWNED["deployment"]).ops == []


def test_drift_in_owned_fields_is_patched(spec: ClusterSpec) -> None:
    desired = manifests.with_owner(manifests.node_deployment_manifest(spec, "worker-0", "1.32.4", "tok"), "u-ns")
    live = served(desired)
    live["spec"]["replicas"] = 0
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    del live["metadata"]["labels"][CLUSTER_LABEL]
    del live["spec"]["template"]["metadata"]["annotations"]
    live["metadata"]["ownerReferences"] = []
    plan = plan_changes(live, desired, OWNED["deployment"])
    assert not plan.recreate
    assert plan.changed == [
        f"metadata.labels[{CLUSTER_LABEL}]",
        "spec.replicas",
        "spec.template.metadata.annotations",
        "spec.template.spec",
        "metadata.ownerReferences",
    ]
    assert {"op": "add", "path": "/metadata/labels/tenantctl.io~1cluster", "value": "acme-prod"} in plan.ops
    assert {"op": "add", "path": "/spec/replicas", "value": 1} in plan.ops
    # the server applies exactly this; afterwards nothing is left to do

    patched = jsonpatch.apply_patch(live, plan.ops)
    assert plan_changes(patched, desired, OWNED["deployment"]).ops == []
    assert patched["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.32.4")


def test_immutable_difference_recreates(spec: ClusterSpec) -> None:
    desired = manifests.etcd_service_manifest(spec)
    live = served(desired)
    live["spec"]["clusterIP"] = "10.96.0.12"
    assert plan_changes(live, desired, OWNED["service"]).recreate


def test_missing_parent_objects_are_created_in_one_operation(spec: ClusterSpec) -> None:
    live = served(manifests.node_deployment_manifest(spec, "worker-0", "1.32.4"))
    del live["spec"]["template"]["metadata"]
    plan = plan_changes(
        live,
        {"spec": {"template": {"metadata": {"annotations": {"a": "b"}}}}},
        [(("spec", "template", "metadata", "annotations"), "map")],
    )
    assert plan.ops == [{"op": "add", "path": "/spec/template/metadata", "value": {"annotations": {"a": "b"}}}]


def test_covers() -> None:
    assert covers({"a": 1, "b": 2}, {"a": 1})
    assert not covers({"a": 1}, {"a": 1, "b": 2})
    assert not covers([{"a": 1}, {"a": 2}], [{"a": 1}])  # an extra list item is drift
    assert not covers({"matchLabels": {"x": "y"}}, {})  # {} means "select everything"
    assert covers({}, {})
    assert not covers(1, True)
    assert not covers("1", 1)


def deployment_status(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "worker-0", "generation": 2, "labels": {VERSION_LABEL: "1.32.4"}},
        "spec": {"replicas": 1},
        "status": status,
    }


AVAILABLE = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"}


def test_node_readiness() -> None:
    ready = deployment_status(
        observedGeneration=2, replicas=1, updatedReplicas=1, availableReplicas=1, conditions=[AVAILABLE]
    )
    assert node_readiness(ready, "worker-0") == (True, "available")
    assert node_readiness(ready, "worker-0", "v1.32.4") == (True, "available")
    assert node_readiness(ready, "worker-0", "1.33.0") == (False, "runs Kubernetes 1.32.4, not 1.33.0")
    assert node_readiness(None, "worker-0")[1] == "deployment worker-0 does not exist"
    stale = deployment_status(
        observedGeneration=1, replicas=1, updatedReplicas=1, availableReplicas=1, conditions=[AVAILABLE]
    )
    assert node_readiness(stale, "worker-0") == (False, "generation 2 not observed yet (at 1)")
    never = deployment_status(
        observedGeneration=2,
        replicas=1,
        updatedReplicas=1,
        conditions=[
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "no"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"},
        ],
    )
    ready_flag, detail = node_readiness(never, "worker-0")
    assert not ready_flag
    assert "availableReplicas=0" in detail
    assert "Available=False MinimumReplicasUnavailable: no" in detail
    assert "Progressing=False ProgressDeadlineExceeded: timed out" in detail


def test_cloud_config_rendered_again_is_the_same_text_and_reuses_the_yaml(spec: ClusterSpec) -> None:
    from activities.nodes import bootstrap

    first = manifests.cloud_config(spec, "worker", spec.kubernetes_version)
    kept = dict(bootstrap._rendered)
    again = manifests.cloud_config(spec, "worker", spec.kubernetes_version)
    assert again == first and bootstrap._rendered == kept  # nothing rendered anew
    other = manifests.cloud_config(spec, "master", spec.kubernetes_version)
    assert other != first and "master nodes" in other
