"""The KVM provider's activities against the host API emulator, over HTTP with the official client.

What every provider promises (every operation twice changes nothing, teardown of a cluster never
made, a deleted object restored, waits honouring their deadline across attempts) is held to both
providers in ``test_provider_contract.py``; these are the checks only the KVM provider has.
Each test makes its own cluster (a unique id), so tests share the session's emulator safely.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar, cast

import pytest
from kubernetes import watch
from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api, NetworkingV1Api
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.kvm import manifests
from activities.kvm.provider import KvmProvider
from activities.nodes.bootstrap import NODE_ROLE_LABEL
from devstack.kube_emulator import NEVER_READY, Emulator
from devstack.kube_emulator.controllers import KUBELET_VERSION
from models.errors import (
    NON_RETRYABLE_ERROR_TYPES,
    Conflict,
    InvalidInput,
    MissingPrerequisite,
    NodesNotReady,
    NotReady,
    PermanentError,
)
from models.naming import CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, certificate_secret, kvm_namespace
from models.pki import certificate_requests
from models.provider import ClusterRef, NodesResult, ResourceChange
from models.spec import ClusterSpec
from tests.activities.provider_helpers import changes, local_stack_nodes, node_ref, run, wait_input
from tests.specs import example, small_kvm, unique_id

T = TypeVar("T")
KINDS = ("namespace", "deployment", "service", "ingress", "networkpolicy", "configmap", "secret", "serviceaccount")


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def emulator(kube_emulator: object) -> Iterator[Emulator]:
    emu = cast(Emulator, kube_emulator)
    yield emu
    emu.clear_faults()  # whatever a test injected never leaks into the next one


@pytest.fixture
def api(emulator: Emulator) -> Iterator[ApiClient]:
    config = Configuration(host=emulator.url)
    # urllib3 would otherwise retry 503s that carry Retry-After by itself: the tests want to see
    # what reaches the activity (in production these retries are welcome).
    config.retries = False
    with ApiClient(config) as client:
        yield client


@pytest.fixture
def provider(api: ApiClient) -> KvmProvider:
    return KvmProvider(
        api,
        simulated_nodes=local_stack_nodes(api),
        poll_interval=0.05,
        namespace_delete_timeout=10,
    )


@pytest.fixture
def core(api: ApiClient) -> CoreV1Api:
    return CoreV1Api(api)


@pytest.fixture
def apps(api: ApiClient) -> AppsV1Api:
    return AppsV1Api(api)


@pytest.fixture
def spec() -> ClusterSpec:
    """1 master, 2 workers, a fresh id."""
    return small_kvm(id=unique_id("kvm"))


class Heartbeats(list[Any]):
    pass


@pytest.fixture
def heartbeats() -> Heartbeats:
    return Heartbeats()


@pytest.fixture
def env(heartbeats: Heartbeats) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    # as the runbooks call them (workflows/activity_stubs.py: the wait's timeout plus a minute), so
    # the waits here end by their own deadline, not by the attempt's
    environment.info = dataclasses.replace(environment.info, start_to_close_timeout=timedelta(minutes=10))
    environment.on_heartbeat = lambda *details: heartbeats.append(details[0] if details else None)
    return environment


# --- helpers -------------------------------------------------------------------------------------
def write_certificates(core: CoreV1Api, spec: ClusterSpec) -> None:
    """What the PKI activities do between foundation and nodes: one labelled Secret per certificate."""
    namespace = kvm_namespace(spec.id)
    for request in certificate_requests(spec):
        core.create_namespaced_secret(
            namespace,
            cast(
                Any,
                {
                    "metadata": {"name": certificate_secret(request.name), "labels": manifests.cluster_labels(spec)},
                    "type": "kubernetes.io/tls",
                    "stringData": {"tls.crt": "-----BEGIN CERTIFICATE-----", "tls.key": "k", "ca.crt": "ca"},
                },
            ),
        )


def provision(env: ActivityEnvironment, provider: KvmProvider, core: CoreV1Api, spec: ClusterSpec) -> NodesResult:
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    write_certificates(core, spec)
    run(env, provider.ensure_endpoint, ClusterRef(spec=spec))
    for node in spec.node_names():
        run(env, provider.ensure_node, node_ref(spec, node))
    return run(env, provider.wait_nodes_ready, wait_input(spec, version=spec.kubernetes_version))


def labelled(api: ApiClient, spec: ClusterSpec) -> dict[str, dict[str, Any]]:
    """Every object labelled with the cluster, by 'kind/namespace/name', as raw JSON."""
    core, apps, net = CoreV1Api(api), AppsV1Api(api), NetworkingV1Api(api)
    calls: dict[str, Callable[..., Any]] = {
        "namespace": core.list_namespace,
        "deployment": apps.list_deployment_for_all_namespaces,
        "service": core.list_service_for_all_namespaces,
        "ingress": net.list_ingress_for_all_namespaces,
        "networkpolicy": net.list_network_policy_for_all_namespaces,
        "configmap": core.list_config_map_for_all_namespaces,
        "secret": core.list_secret_for_all_namespaces,
        "serviceaccount": core.list_service_account_for_all_namespaces,
    }
    found = {}
    for kind in KINDS:
        items = raw(calls[kind](label_selector=f"{CLUSTER_LABEL}={spec.id}", _preload_content=False))["items"]
        for item in items:
            meta = item["metadata"]
            found["/".join(p for p in (kind, meta.get("namespace"), meta["name"]) if p)] = item
    return found


def raw(response: object) -> dict[str, Any]:
    """The JSON of a response read with ``_preload_content=False`` (as the provider reads)."""
    data = cast(Any, response).data
    result: dict[str, Any] = json.loads(data)
    return result


def versions(api: ApiClient, spec: ClusterSpec) -> dict[str, str]:
    return {key: obj["metadata"]["resourceVersion"] for key, obj in labelled(api, spec).items()}


def deployment(apps: AppsV1Api, spec: ClusterSpec, node: str) -> dict[str, Any]:
    return raw(apps.read_namespaced_deployment(node, kvm_namespace(spec.id), _preload_content=False))


def eventually(probe: Callable[[], T | None], timeout: float = 5.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def tenant_node(emulator: Emulator, spec: ClusterSpec, node: str) -> dict[str, Any] | None:
    with ApiClient(Configuration(host=emulator.tenant_url(spec.id))) as client:
        try:
            found = raw(CoreV1Api(client).read_node(node, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found


def expected_objects(spec: ClusterSpec) -> set[str]:
    ns = kvm_namespace(spec.id)
    objects = {
        f"namespace/{ns}",
        f"networkpolicy/{ns}/isolate-tenant",
        f"serviceaccount/{ns}/tenant-node",
        f"configmap/{ns}/tenant-cluster",
        f"service/{ns}/api",
        f"service/{ns}/etcd",
        f"ingress/{ns}/api",
        f"configmap/{ns}/cloud-config-master-{spec.kubernetes_version}",
        f"configmap/{ns}/cloud-config-worker-{spec.kubernetes_version}",
    }
    objects |= {f"deployment/{ns}/{node}" for node in spec.node_names()}
    objects |= {f"secret/{ns}/{certificate_secret(r.name)}" for r in certificate_requests(spec)}
    return objects


# --- tests ---------------------------------------------------------------------------------------
def test_create_sequence_makes_every_object_labelled_and_owned(
    env: ActivityEnvironment,
    provider: KvmProvider,
    core: CoreV1Api,
    api: ApiClient,
    emulator: Emulator,
    spec: ClusterSpec,
) -> None:
    foundation = run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    assert set(changes(foundation).values()) == {ResourceChange.CREATED}
    assert list(changes(foundation)) == [
        f"namespace/{kvm_namespace(spec.id)}",
        "networkpolicy/isolate-tenant",
        "serviceaccount/tenant-node",
        "configmap/tenant-cluster",
    ]
    write_certificates(core, spec)
    endpoint = run(env, provider.ensure_endpoint, ClusterRef(spec=spec))
    assert changes(endpoint) == {
        "service/api": ResourceChange.CREATED,
        "service/etcd": ResourceChange.CREATED,
        "ingress/api": ResourceChange.CREATED,
    }
    first = run(env, provider.ensure_node, node_ref(spec, "master-0"))
    assert changes(first) == {
        f"configmap/cloud-config-master-{spec.kubernetes_version}": ResourceChange.CREATED,
        "deployment/master-0": ResourceChange.CREATED,
    }
    for node in ("worker-0", "worker-1"):
        run(env, provider.ensure_node, node_ref(spec, node))
    ready = run(env, provider.wait_nodes_ready, wait_input(spec, version=spec.kubernetes_version))
    assert [(n.name, n.ready, n.kubernetes_version) for n in ready.nodes] == [
        ("master-0", True, "1.32.4"),
        ("worker-0", True, "1.32.4"),
        ("worker-1", True, "1.32.4"),
    ]

    objects = labelled(api, spec)
    assert set(objects) == expected_objects(spec)
    namespace = objects[f"namespace/{kvm_namespace(spec.id)}"]
    assert namespace["metadata"]["labels"][manifests.OWNER_LABEL] == spec.owner
    for key, obj in objects.items():
        labels = obj["metadata"]["labels"]
        assert labels[CLUSTER_LABEL] == spec.id and labels[MANAGED_BY_LABEL] == MANAGED_BY, key
        if obj is not namespace and not key.startswith("secret/"):  # Secrets are the PKI's
            assert obj["metadata"]["ownerReferences"] == [
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "name": kvm_namespace(spec.id),
                    "uid": namespace["metadata"]["uid"],
                }
            ], key

    # the listing the teardown verifies against sees the same set
    listed = run(env, provider.list_resources, ClusterRef(spec=spec))
    assert set(listed.resources) == expected_objects(spec)

    # every VM registered as a Ready node of the emulated tenant cluster
    for node in spec.node_names():
        registered = eventually(partial(tenant_node, emulator, spec, node), what=f"tenant node {node}")
        assert registered["status"]["nodeInfo"]["kubeletVersion"] == "v1.32.4"
        assert {c["type"]: c["status"] for c in registered["status"]["conditions"]}["Ready"] == "True"
        assert registered["metadata"]["labels"][NODE_ROLE_LABEL] == node.split("-")[0]

    nodes = run(env, provider.list_nodes, ClusterRef(spec=spec))
    assert [(n.name, n.role, n.kubernetes_version, n.ready) for n in nodes.nodes] == [
        ("master-0", "master", "1.32.4", True),
        ("worker-0", "worker", "1.32.4", True),
        ("worker-1", "worker", "1.32.4", True),
    ]


def test_drift_is_converged(
    env: ActivityEnvironment,
    provider: KvmProvider,
    core: CoreV1Api,
    apps: AppsV1Api,
    api: ApiClient,
    spec: ClusterSpec,
) -> None:
    provision(env, provider, core, spec)
    namespace = kvm_namespace(spec.id)
    # someone scales a VM away, another edits its image and adds an annotation of their own
    apps.patch_namespaced_deployment_scale("worker-0", namespace, {"spec": {"replicas": 0}})
    apps.patch_namespaced_deployment(
        "worker-1",
        namespace,
        {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"example.com/note": "kept"}},
                    "spec": {"containers": [{"name": "k8s-kvm", "image": "evil/vm:latest"}]},
                }
            }
        },
    )
    # and the foundation is tampered with: isolation removed, facts edited
    NetworkingV1Api(api).delete_namespaced_network_policy("isolate-tenant", namespace)
    core.patch_namespaced_config_map("tenant-cluster", namespace, {"data": {"api-domain": "evil.example.com"}})

    assert changes(run(env, provider.ensure_node, node_ref(spec, "worker-0")))["deployment/worker-0"] is (
        ResourceChange.UPDATED
    )
    assert changes(run(env, provider.ensure_node, node_ref(spec, "worker-1")))["deployment/worker-1"] is (
        ResourceChange.UPDATED
    )
    foundation = changes(run(env, provider.ensure_foundation, ClusterRef(spec=spec)))
    assert foundation["networkpolicy/isolate-tenant"] is ResourceChange.CREATED
    assert foundation["configmap/tenant-cluster"] is ResourceChange.UPDATED
    facts = raw(core.read_namespaced_config_map("tenant-cluster", namespace, _preload_content=False))
    assert facts["data"]["api-domain"] == spec.api_domain

    assert deployment(apps, spec, "worker-0")["spec"]["replicas"] == 1
    worker1 = deployment(apps, spec, "worker-1")
    assert worker1["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/tenantctl/k8s-kvm-node:v1.32.4"
    assert worker1["spec"]["template"]["metadata"]["annotations"] == {"example.com/note": "kept"}
    # converged means converged: nothing left to do, and the VMs come back
    for node in ("worker-0", "worker-1"):
        assert set(changes(run(env, provider.ensure_node, node_ref(spec, node))).values()) == {ResourceChange.UNCHANGED}
    run(env, provider.wait_nodes_ready, wait_input(spec))


def test_wait_times_out_naming_the_node_that_never_became_ready(
    env: ActivityEnvironment,
    provider: KvmProvider,
    core: CoreV1Api,
    apps: AppsV1Api,
    heartbeats: Heartbeats,
    spec: ClusterSpec,
) -> None:
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    run(env, provider.ensure_node, node_ref(spec, "worker-0"))
    run(env, provider.ensure_node, node_ref(spec, "worker-1"))
    # the emulator keeps an annotated Deployment unavailable forever (a VM that never boots)
    apps.patch_namespaced_deployment(
        "worker-1", kvm_namespace(spec.id), {"metadata": {"annotations": {NEVER_READY: "true"}}}
    )
    started = time.monotonic()
    with pytest.raises(ApplicationError) as info:
        run(env, provider.wait_nodes_ready, wait_input(spec, ["worker-0", "worker-1"], timeout=1.5))
    assert 1.5 <= time.monotonic() - started < 10
    error = info.value
    assert error.non_retryable and error.type == NodesNotReady.__name__
    assert "1 of 2 nodes" in error.message
    assert "worker-1: " in error.message and "Available=False MinimumReplicasUnavailable" in error.message
    assert "worker-0" not in error.message
    assert error.details == (["worker-1"],)
    # heartbeats named what was pending, with one start time that a retried attempt would resume
    assert heartbeats and all("worker-1" in " ".join(h["pending"]) for h in heartbeats)
    assert len({h["started_at"] for h in heartbeats}) == 1
    # re-running ensure_node keeps someone else's annotation: the node stays unready
    assert changes(run(env, provider.ensure_node, node_ref(spec, "worker-1")))["deployment/worker-1"] is (
        ResourceChange.UNCHANGED
    )


def test_wait_requires_the_requested_version(
    env: ActivityEnvironment, provider: KvmProvider, spec: ClusterSpec
) -> None:
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    run(env, provider.ensure_node, node_ref(spec, "worker-0"))
    run(env, provider.wait_nodes_ready, wait_input(spec, ["worker-0"]))
    with pytest.raises(ApplicationError, match=re.escape("worker-0: runs Kubernetes 1.32.4, not 1.33.1")):
        run(env, provider.wait_nodes_ready, wait_input(spec, ["worker-0"], timeout=0.3, version="1.33.1"))


def test_restart_with_the_same_token_rolls_once(
    env: ActivityEnvironment, provider: KvmProvider, apps: AppsV1Api, spec: ClusterSpec
) -> None:
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    run(env, provider.ensure_node, node_ref(spec, "master-0"))

    def generation() -> int:
        return int(deployment(apps, spec, "master-0")["metadata"]["generation"])

    start = generation()
    first = run(env, provider.restart_node, node_ref(spec, "master-0", token="serials-1"))
    second = run(env, provider.restart_node, node_ref(spec, "master-0", token="serials-1"))
    assert changes(first) == {"deployment/master-0": ResourceChange.UPDATED}
    assert changes(second) == {"deployment/master-0": ResourceChange.UNCHANGED}
    assert generation() == start + 1
    annotations = deployment(apps, spec, "master-0")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {manifests.RESTART_TOKEN_ANNOTATION: "serials-1"}
    # an ensure without a token has no opinion on it: no second roll
    assert changes(run(env, provider.ensure_node, node_ref(spec, "master-0")))["deployment/master-0"] is (
        ResourceChange.UNCHANGED
    )
    run(env, provider.restart_node, node_ref(spec, "master-0", token="serials-2"))
    assert generation() == start + 2
    run(env, provider.wait_nodes_ready, wait_input(spec, ["master-0"]))
    # a node that is gone has nothing to restart; an empty token is a caller's mistake
    absent = run(env, provider.restart_node, node_ref(spec, "worker-7", token="x"))
    assert changes(absent) == {"deployment/worker-7": ResourceChange.ABSENT}
    with pytest.raises(InvalidInput, match="restart_token is empty"):
        run(env, provider.restart_node, node_ref(spec, "master-0"))


def test_upgrade_moves_a_node_to_the_new_cloud_config(
    env: ActivityEnvironment,
    provider: KvmProvider,
    core: CoreV1Api,
    apps: AppsV1Api,
    emulator: Emulator,
    spec: ClusterSpec,
) -> None:
    provision(env, provider, core, spec)
    upgraded = changes(run(env, provider.ensure_node, node_ref(spec, "worker-0", "1.33.1")))
    assert upgraded == {
        "configmap/cloud-config-worker-1.33.1": ResourceChange.CREATED,
        "deployment/worker-0": ResourceChange.UPDATED,
    }
    run(env, provider.wait_nodes_ready, wait_input(spec, ["worker-0"], version="1.33.1"))
    assert deployment(apps, spec, "worker-0")["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.33.1")
    eventually(
        lambda: (
            (tenant_node(emulator, spec, "worker-0") or {}).get("status", {}).get("nodeInfo", {}).get("kubeletVersion")
            == "v1.33.1"
        ),
        what="the tenant node to report kubelet v1.33.1",
    )
    # worker-1 is the last 1.32.4 worker: its removal takes the old worker cloud-config along
    removed = changes(run(env, provider.ensure_node_absent, node_ref(spec, "worker-1", "1.32.4")))
    assert removed == {
        "deployment/worker-1": ResourceChange.DELETED,
        "configmap/cloud-config-worker-1.32.4": ResourceChange.DELETED,
    }
    eventually(lambda: tenant_node(emulator, spec, "worker-1") is None, what="worker-1 to leave the tenant")
    # the master config is still used by master-0 and the new worker config by worker-0
    listed = raw(core.list_namespaced_config_map(kvm_namespace(spec.id), _preload_content=False))
    names = {c["metadata"]["name"] for c in listed["items"]}
    assert {"cloud-config-master-1.32.4", "cloud-config-worker-1.33.1"} <= names
    # the caller may pass a stale version: the Deployment's own label decides which config to drop
    gone = changes(run(env, provider.ensure_node_absent, node_ref(spec, "worker-0", "1.32.4")))
    assert gone["configmap/cloud-config-worker-1.33.1"] is ResourceChange.DELETED


def test_the_local_stack_hook_annotates_the_vm_the_provider_left_without_reading_it(
    env: ActivityEnvironment,
    provider: KvmProvider,
    core: CoreV1Api,
    apps: AppsV1Api,
    emulator: Emulator,
    spec: ClusterSpec,
) -> None:
    provision(env, provider, core, spec)
    live = deployment(apps, spec, "worker-0")
    hook = provider.simulated_nodes
    assert hook is not None
    emulator.set_faults(outage_seconds=30)  # from here on, any request at all fails
    # the Deployment ensure_node just left already carries the annotations: nothing to read or write
    hook.node_ensured(spec, "worker-0", spec.kubernetes_version, live)
    with pytest.raises(ApiException) as outage:  # without it, the hook has to read the Deployment
        hook.node_ensured(spec, "worker-0", spec.kubernetes_version)
    assert outage.value.status == 503
    emulator.clear_faults()
    # a VM the provider left at another version gets its annotations written
    hook.node_ensured(spec, "worker-0", "1.33.1", live)
    assert deployment(apps, spec, "worker-0")["metadata"]["annotations"][KUBELET_VERSION] == "v1.33.1"


def test_the_local_stack_vm_is_written_once_with_the_annotations_its_stand_in_reads(
    env: ActivityEnvironment, provider: KvmProvider, core: CoreV1Api, apps: AppsV1Api, spec: ClusterSpec
) -> None:
    """The VM carries the emulator's annotations from its first write, and a new version brings
    its annotation in the same write as its template: never a Deployment that says one version in
    its template and another to the emulator (it used to be created, then patched)."""
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    write_certificates(core, spec)
    namespace = kvm_namespace(spec.id)
    start = raw(apps.list_namespaced_deployment(namespace, _preload_content=False))["metadata"]["resourceVersion"]
    run(env, provider.ensure_node, node_ref(spec, "worker-0"))
    run(env, provider.ensure_node, node_ref(spec, "worker-0", "1.33.1"))
    events = list(
        watch.Watch().stream(apps.list_namespaced_deployment, namespace, resource_version=start, timeout_seconds=1)
    )
    seen = [
        (event["type"], event["raw_object"]["spec"]["template"]["metadata"]["labels"][manifests.VERSION_LABEL],
         event["raw_object"]["metadata"]["annotations"].get(KUBELET_VERSION))
        for event in events
    ]  # fmt: skip
    assert seen[0] == ("ADDED", spec.kubernetes_version, f"v{spec.kubernetes_version}")
    assert all(annotation == f"v{template}" for _, template, annotation in seen), seen
    assert seen[-1][1:] == ("1.33.1", "v1.33.1")


def test_removal_twice_leaves_nothing(
    env: ActivityEnvironment, provider: KvmProvider, core: CoreV1Api, spec: ClusterSpec
) -> None:
    provision(env, provider, core, spec)
    ref = ClusterRef(spec=spec)
    first_master = changes(run(env, provider.ensure_node_absent, node_ref(spec, "master-0")))
    assert first_master == {
        "deployment/master-0": ResourceChange.DELETED,
        f"configmap/cloud-config-master-{spec.kubernetes_version}": ResourceChange.DELETED,
    }
    first_worker = changes(run(env, provider.ensure_node_absent, node_ref(spec, "worker-0")))
    # worker-1 still boots from the worker cloud-config
    assert first_worker[f"configmap/cloud-config-worker-{spec.kubernetes_version}"] is ResourceChange.UNCHANGED
    run(env, provider.ensure_node_absent, node_ref(spec, "worker-1"))
    for node in spec.node_names():
        assert set(changes(run(env, provider.ensure_node_absent, node_ref(spec, node))).values()) == {
            ResourceChange.ABSENT
        }
    assert not run(env, provider.list_nodes, ref).nodes

    assert set(changes(run(env, provider.ensure_endpoint_absent, ref)).values()) == {ResourceChange.DELETED}
    assert set(changes(run(env, provider.ensure_endpoint_absent, ref)).values()) == {ResourceChange.ABSENT}
    assert changes(run(env, provider.ensure_foundation_absent, ref)) == {
        f"namespace/{kvm_namespace(spec.id)}": ResourceChange.DELETED
    }
    assert changes(run(env, provider.ensure_foundation_absent, ref)) == {
        f"namespace/{kvm_namespace(spec.id)}": ResourceChange.ABSENT
    }
    # the Secrets the PKI wrote went with the namespace
    assert run(env, provider.list_resources, ref).resources == []


def test_nodes_and_endpoint_need_the_foundation(
    env: ActivityEnvironment, provider: KvmProvider, spec: ClusterSpec
) -> None:
    with pytest.raises(MissingPrerequisite, match=f"namespace {kvm_namespace(spec.id)} does not exist"):
        run(env, provider.ensure_endpoint, ClusterRef(spec=spec))
    with pytest.raises(MissingPrerequisite):
        run(env, provider.ensure_node, node_ref(spec, "master-0"))


def test_a_foreign_namespace_is_never_taken_over_nor_deleted(
    env: ActivityEnvironment, provider: KvmProvider, core: CoreV1Api, spec: ClusterSpec
) -> None:
    namespace = kvm_namespace(spec.id)
    core.create_namespace(cast(Any, {"metadata": {"name": namespace, "labels": {"team": "someone-else"}}}))
    try:
        with pytest.raises(Conflict, match=f"namespace {namespace} exists but is not tenantctl's"):
            run(env, provider.ensure_foundation, ClusterRef(spec=spec))
        with pytest.raises(Conflict):
            run(env, provider.ensure_foundation_absent, ClusterRef(spec=spec))
        assert raw(core.read_namespace(namespace, _preload_content=False))["status"]["phase"] == "Active"
    finally:
        core.delete_namespace(namespace)


def test_transient_faults_are_retryable_and_a_retry_converges(
    env: ActivityEnvironment,
    provider: KvmProvider,
    core: CoreV1Api,
    api: ApiClient,
    emulator: Emulator,
    heartbeats: Heartbeats,
    spec: ClusterSpec,
) -> None:
    ref = ClusterRef(spec=spec)
    # a full outage: the error is the backend's own, which Temporal retries (not a permanent type)
    emulator.set_faults(outage_seconds=30)
    with pytest.raises(ApiException) as outage:
        run(env, provider.ensure_foundation, ref)
    assert outage.value.status == 503
    assert not isinstance(outage.value, PermanentError)
    assert type(outage.value).__name__ not in NON_RETRYABLE_ERROR_TYPES

    # a share of requests fails: each failed attempt is retried (as Temporal would) and converges
    emulator.set_faults(error_rate=0.3, error_codes=[500, 503])
    failures: list[BaseException] = []

    def retried(fn: Callable[[Any], T], arg: Any) -> T:
        for _ in range(200):
            try:
                return run(env, fn, arg)
            except Exception as exc:
                failures.append(exc)
        raise AssertionError(f"no attempt of {fn.__name__} succeeded: {failures[-3:]}")

    retried(provider.ensure_foundation, ref)
    emulator.clear_faults()
    write_certificates(core, spec)
    emulator.set_faults(error_rate=0.3, error_codes=[500, 503])
    retried(provider.ensure_endpoint, ref)
    for node in spec.node_names():
        retried(provider.ensure_node, node_ref(spec, node))
    # the wait rides out the errors by itself (no retry needed) and says so while it waits
    emulator.set_faults(error_rate=0.3, error_codes=[500, 503])
    ready = run(env, provider.wait_nodes_ready, wait_input(spec, timeout=30))
    assert all(n.ready for n in ready.nodes)
    emulator.clear_faults()

    assert failures, "a 30% error rate over dozens of requests produced no error"
    for failure in failures:
        assert isinstance(failure, ApiException) and failure.status in (500, 503), repr(failure)
    assert set(labelled(api, spec)) == expected_objects(spec)
    before = versions(api, spec)
    for result in (
        run(env, provider.ensure_foundation, ref),
        run(env, provider.ensure_endpoint, ref),
        *(run(env, provider.ensure_node, node_ref(spec, node)) for node in spec.node_names()),
    ):
        assert set(changes(result).values()) == {ResourceChange.UNCHANGED}
    assert versions(api, spec) == before


def test_an_immutable_difference_recreates_the_object(
    env: ActivityEnvironment, provider: KvmProvider, core: CoreV1Api, spec: ClusterSpec
) -> None:
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    run(env, provider.ensure_endpoint, ClusterRef(spec=spec))
    namespace = kvm_namespace(spec.id)
    # someone replaced the headless etcd Service by one with a cluster IP (immutable once set)
    core.delete_namespaced_service("etcd", namespace)
    core.create_namespaced_service(
        namespace,
        cast(
            Any,
            {
                "metadata": {"name": "etcd", "labels": manifests.cluster_labels(spec)},
                "spec": {"selector": {"x": "y"}, "ports": [{"port": 2379}]},
            },
        ),
    )
    assert raw(core.read_namespaced_service("etcd", namespace, _preload_content=False))["spec"]["clusterIP"] != "None"
    assert changes(run(env, provider.ensure_endpoint, ClusterRef(spec=spec)))["service/etcd"] is ResourceChange.UPDATED
    service = raw(core.read_namespaced_service("etcd", namespace, _preload_content=False))
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == manifests.master_selector(spec)
    assert set(changes(run(env, provider.ensure_endpoint, ClusterRef(spec=spec))).values()) == {
        ResourceChange.UNCHANGED
    }


def test_a_concurrent_write_is_not_overwritten_but_re_read(
    env: ActivityEnvironment,
    provider: KvmProvider,
    apps: AppsV1Api,
    spec: ClusterSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    run(env, provider.ensure_node, node_ref(spec, "worker-0"))
    namespace = kvm_namespace(spec.id)
    apps.patch_namespaced_deployment_scale("worker-0", namespace, {"spec": {"replicas": 0}})
    stale = deployment(apps, spec, "worker-0")  # what the activity reads ...
    apps.patch_namespaced_deployment("worker-0", namespace, {"metadata": {"labels": {"example.com/x": "1"}}})
    real_read = provider._read
    reads: list[str] = []

    def read_stale_once(kind: Any, ns: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return stale if name == "worker-0" and reads.count("worker-0") == 1 else real_read(kind, ns, name)

    monkeypatch.setattr(provider, "_read", read_stale_once)
    # ... before someone else's write lands: its patch is refused (409), it reads again and converges
    assert changes(run(env, provider.ensure_node, node_ref(spec, "worker-0")))["deployment/worker-0"] is (
        ResourceChange.UPDATED
    )
    assert reads.count("worker-0") == 2
    live = deployment(apps, spec, "worker-0")
    assert live["spec"]["replicas"] == 1
    assert live["metadata"]["labels"]["example.com/x"] == "1"


def test_a_stuck_namespace_deletion_says_what_it_waits_for(
    env: ActivityEnvironment, api: ApiClient, core: CoreV1Api, heartbeats: Heartbeats, spec: ClusterSpec
) -> None:
    impatient = KvmProvider(api, poll_interval=0.05, namespace_delete_timeout=0.5)
    run(env, impatient.ensure_foundation, ClusterRef(spec=spec))
    namespace = kvm_namespace(spec.id)
    core.patch_namespace(namespace, {"metadata": {"finalizers": ["example.com/backup"]}})
    with pytest.raises(NotReady, match=re.escape("finalizers ['example.com/backup']")):
        run(env, impatient.ensure_foundation_absent, ClusterRef(spec=spec))
    assert heartbeats and heartbeats[-1]["namespace"] == namespace
    assert "example.com/backup" in heartbeats[-1]["waiting_for"]
    assert not isinstance(NotReady("x"), PermanentError)  # retried: the deletion goes on meanwhile
    # once the finalizer's owner lets go, the next attempt finishes
    core.patch_namespace(namespace, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert set(changes(run(env, impatient.ensure_foundation_absent, ClusterRef(spec=spec))).values()) <= {
        ResourceChange.DELETED,
        ResourceChange.ABSENT,
    }
    assert run(env, impatient.list_resources, ClusterRef(spec=spec)).resources == []


def test_a_cancelled_wait_stops_at_once(env: ActivityEnvironment, provider: KvmProvider, spec: ClusterSpec) -> None:
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    timer = threading.Timer(0.3, env.cancel)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(CancelledError):
            run(env, provider.wait_nodes_ready, wait_input(spec, ["worker-5"], timeout=60))
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5


def test_an_aws_cluster_is_refused_before_anything_is_created(env: ActivityEnvironment, provider: KvmProvider) -> None:
    spec = example("aws-cluster.yaml", id=unique_id("aws"))
    with pytest.raises(InvalidInput, match="provider is 'aws'"):
        run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    assert run(env, provider.list_resources, ClusterRef(spec=spec)).resources == []
