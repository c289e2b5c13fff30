"""The provider contract, held to both providers: KVM against the host API emulator, AWS against moto.

What every provider promises the runbooks (``activities.providers.contract``), checked the same way
for each: every operation run twice changes nothing the second time, a teardown of a cluster that
was never created succeeds, an object deleted behind the provider's back is restored by its ensure,
and waits honour their deadline, also across attempts. What only one provider has (KVM field
drift, AWS duplicates and crash-convergence, ...) stays in ``test_host_cluster.py`` and
``test_aws_provider.py``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import serialization
from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import resources
from activities.aws.provider import AwsProvider
from activities.kvm import manifests
from activities.kvm.provider import KvmProvider
from activities.providers.contract import InfrastructureProvider
from activities.providers.key_pairs import KeyPair
from config.settings import Settings
from devstack.aws_seed import seed_amis
from devstack.kube_emulator import Emulator
from models.drift import DriftKind, ObserveInput
from models.errors import NodesNotReady
from models.naming import CLUSTER_LABEL, kvm_namespace
from models.pki import certificate_requests
from models.provider import ClusterRef, EnsureResult, ResourceChange
from models.spec import ClusterSpec
from tests.activities.provider_helpers import changes, node_ref, run, wait_input
from tests.aws_inventory import instance_ids
from tests.certificates import self_signed
from tests.specs import example, small_kvm, unique_id
from worker.clients import AwsClients, aws_clients

REGION = "eu-central-1"
NEXT_VERSION = "1.33.1"
"""A version every provider can run (moto has an AMI for it), for the restart/upgrade checks."""


@dataclass
class Subject:
    """One provider under the contract, with what a test needs to reach behind its back."""

    provider: InfrastructureProvider
    new_spec: Callable[[], ClusterSpec]
    delete_node_behind_its_back: Callable[[ClusterSpec, str], None]
    delete_cloud_config_behind_its_back: Callable[[ClusterSpec, str], None]
    node_exists: Callable[[ClusterSpec, str], bool]
    add_extra_labelled_object: Callable[[ClusterSpec], str]
    """Make an object with the cluster's label/tag that the spec does not explain; returns its name as reported."""


# --- the two providers ----------------------------------------------------------------------------
def kvm_subject(emulator: Emulator) -> Iterator[Subject]:
    config = Configuration(host=emulator.url)
    config.retries = False
    with ApiClient(config) as api:
        core, apps = CoreV1Api(api), AppsV1Api(api)
        provider = KvmProvider(api, poll_interval=0.05, namespace_delete_timeout=10)

        def delete_node(spec: ClusterSpec, node: str) -> None:
            apps.delete_namespaced_deployment(node, kvm_namespace(spec.id))

        def delete_config(spec: ClusterSpec, role: str) -> None:
            core.delete_namespaced_config_map(
                manifests.cloud_config_name(role, spec.kubernetes_version), kvm_namespace(spec.id)
            )

        def node_exists(spec: ClusterSpec, node: str) -> bool:
            listed = apps.list_namespaced_deployment(kvm_namespace(spec.id), _preload_content=False)
            return node in {d["metadata"]["name"] for d in _json(listed)["items"]}

        def add_extra(spec: ClusterSpec) -> str:
            core.create_namespaced_config_map(
                kvm_namespace(spec.id),
                {"metadata": {"name": "stray", "labels": {CLUSTER_LABEL: spec.id}}, "data": {"a": "b"}},
            )
            return "configmap/stray"

        yield Subject(provider, small_kvm, delete_node, delete_config, node_exists, add_extra)


def aws_subject(moto_url: str) -> Iterator[Subject]:
    clients = _aws_clients(moto_url)
    seed_amis(clients.client("ec2"), "tenantctl-node", ["1.32.4", NEXT_VERSION])
    provider = AwsProvider(clients, poll_interval=0.02, instance_timeout=10, delete_timeout=10)

    def new_spec() -> ClusterSpec:
        return example(
            "aws-cluster.yaml",
            id=unique_id("contract"),
            aws={"region": REGION, "availability_zones": [f"{REGION}a", f"{REGION}b"], "vpc_cidr": "10.0.0.0/16"},
            masters={"count": 1},
            workers={"count": 2, "instance_type": "m5.large"},
        )

    def delete_node(spec: ClusterSpec, node: str) -> None:
        clients.client("ec2").terminate_instances(InstanceIds=[instance_ids(clients, spec)[node]])

    def delete_config(spec: ClusterSpec, role: str) -> None:
        bucket = next(
            b["Name"]
            for b in clients.client("s3").list_buckets()["Buckets"]
            if b["Name"].startswith(f"tenantctl-{spec.id}-")
        )
        clients.client("s3").delete_object(Bucket=bucket, Key=resources.cloud_config_key(role, spec.kubernetes_version))

    def node_exists(spec: ClusterSpec, node: str) -> bool:
        return node in instance_ids(clients, spec)

    def add_extra(spec: ClusterSpec) -> str:
        ec2 = clients.client("ec2", REGION)
        model = ec2.describe_instances(InstanceIds=[instance_ids(clients, spec)["worker-0"]])
        instance = model["Reservations"][0]["Instances"][0]
        tags = resources.node_tags(spec, "worker-9", spec.kubernetes_version)
        made = ec2.run_instances(
            ImageId=instance["ImageId"],
            MinCount=1,
            MaxCount=1,
            SubnetId=instance["SubnetId"],
            TagSpecifications=[{"ResourceType": "instance", "Tags": resources.tag_list(tags)}],
        )
        return f"ec2:instance/worker-9 ({made['Instances'][0]['InstanceId']})"

    yield Subject(provider, new_spec, delete_node, delete_config, node_exists, add_extra)


@pytest.fixture(params=["kvm", "aws"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "kvm":
        emulator = cast(Emulator, request.getfixturevalue("kube_emulator"))
        yield from kvm_subject(emulator)
        emulator.clear_faults()
    else:
        yield from aws_subject(request.getfixturevalue("moto_url"))


@pytest.fixture
def heartbeats() -> list[Any]:
    return []


@pytest.fixture
def env(heartbeats: list[Any]) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    # as the runbooks call them (workflows/activity_stubs.py): waits stay inside this
    environment.info = dataclasses.replace(environment.info, start_to_close_timeout=timedelta(minutes=10))
    environment.on_heartbeat = lambda *details: heartbeats.append(details[0] if details else None)
    return environment


# --- the runbooks' sequences ------------------------------------------------------------------------
def create(env: ActivityEnvironment, p: InfrastructureProvider, spec: ClusterSpec) -> list[EnsureResult]:
    """The provider's part of the create runbook (workflows/provision.py), in its order."""
    results = [run(env, p.ensure_foundation, ClusterRef(spec=spec)), run(env, p.ensure_endpoint, ClusterRef(spec=spec))]
    results += [run(env, p.ensure_node, node_ref(spec, node)) for node in spec.node_names()]
    run(env, p.wait_nodes_ready, wait_input(spec, version=spec.kubernetes_version))
    return results


def teardown(env: ActivityEnvironment, p: InfrastructureProvider, spec: ClusterSpec) -> list[EnsureResult]:
    """The provider's part of the teardown runbook (workflows/teardown.py), in its order."""
    versions = {n.name: n.kubernetes_version for n in run(env, p.list_nodes, ClusterRef(spec=spec)).nodes}
    results = [
        run(env, p.ensure_node_absent, node_ref(spec, node, versions.get(node) or spec.kubernetes_version))
        for node in sorted(set(spec.node_names()) | set(versions))
    ]
    results.append(run(env, p.ensure_endpoint_absent, ClusterRef(spec=spec)))
    results.append(run(env, p.ensure_foundation_absent, ClusterRef(spec=spec)))
    return results


def all_changes(results: list[EnsureResult]) -> set[ResourceChange]:
    return {o.change for result in results for o in result.outcomes}


# --- the contract -----------------------------------------------------------------------------------
def test_every_operation_twice_changes_nothing_the_second_time(env: ActivityEnvironment, subject: Subject) -> None:
    p, spec = subject.provider, subject.new_spec()
    create(env, p, spec)
    resources_before = run(env, p.list_resources, ClusterRef(spec=spec)).resources
    nodes_before = run(env, p.list_nodes, ClusterRef(spec=spec)).nodes

    for result in create(env, p, spec):
        assert set(changes(result).values()) == {ResourceChange.UNCHANGED}, changes(result)
    first = run(env, p.restart_node, node_ref(spec, "worker-0", token="serials-1"))
    again = run(env, p.restart_node, node_ref(spec, "worker-0", token="serials-1"))
    assert set(changes(first).values()) == {ResourceChange.UPDATED}
    assert set(changes(again).values()) == {ResourceChange.UNCHANGED}  # one token, one roll
    run(env, p.wait_nodes_ready, wait_input(spec))
    assert run(env, p.list_resources, ClusterRef(spec=spec)).resources == resources_before
    assert [(n.name, n.kubernetes_version) for n in run(env, p.list_nodes, ClusterRef(spec=spec)).nodes] == [
        (n.name, n.kubernetes_version) for n in nodes_before
    ]

    removed = teardown(env, p, spec)
    assert ResourceChange.DELETED in all_changes(removed)
    assert all_changes(teardown(env, p, spec)) <= {ResourceChange.ABSENT, ResourceChange.UNCHANGED}
    assert run(env, p.list_resources, ClusterRef(spec=spec)).resources == []


def test_teardown_of_a_cluster_that_never_existed_succeeds(env: ActivityEnvironment, subject: Subject) -> None:
    p, spec = subject.provider, subject.new_spec()
    assert run(env, p.list_nodes, ClusterRef(spec=spec)).nodes == []
    assert all_changes(teardown(env, p, spec)) == {ResourceChange.ABSENT}
    restarted = run(env, p.restart_node, node_ref(spec, "worker-0", token="serials-1"))
    assert set(changes(restarted).values()) == {ResourceChange.ABSENT}
    assert run(env, p.list_resources, ClusterRef(spec=spec)).resources == []


def test_drift_is_converged_an_object_deleted_behind_its_back_is_restored(
    env: ActivityEnvironment, subject: Subject
) -> None:
    p, spec = subject.provider, subject.new_spec()
    create(env, p, spec)
    subject.delete_node_behind_its_back(spec, "worker-1")
    subject.delete_cloud_config_behind_its_back(spec, "worker")
    _eventually(lambda: not subject.node_exists(spec, "worker-1"), "worker-1 to be gone")

    restored = changes(run(env, p.ensure_node, node_ref(spec, "worker-1")))
    assert ResourceChange.CREATED in restored.values(), restored
    assert subject.node_exists(spec, "worker-1")
    run(env, p.wait_nodes_ready, wait_input(spec))
    # converged means converged: the next ensure has nothing left to do
    for node in spec.node_names():
        assert set(changes(run(env, p.ensure_node, node_ref(spec, node))).values()) == {ResourceChange.UNCHANGED}
    teardown(env, p, spec)


def test_waits_honour_their_deadline_also_across_attempts(
    env: ActivityEnvironment, subject: Subject, heartbeats: list[Any]
) -> None:
    p, spec = subject.provider, subject.new_spec()
    run(env, p.ensure_foundation, ClusterRef(spec=spec))
    with pytest.raises(ApplicationError) as raised:  # worker-9 never exists: pending until the deadline
        run(env, p.wait_nodes_ready, wait_input(spec, ["worker-9"], timeout=0.5))
    error = raised.value
    assert error.non_retryable and error.type == NodesNotReady.__name__
    assert "1 of 1 nodes" in error.message and "worker-9: " in error.message
    assert error.details == (["worker-9"],)
    assert heartbeats and len({h["started_at"] for h in heartbeats}) == 1  # one start, heartbeated each round

    # a retried attempt (its worker died) keeps the first attempt's start: an hour ago, so a 60 s
    # budget is long spent, and it fails after one look instead of waiting 60 s more
    heartbeats.clear()
    earlier = time.time() - 3600
    env.info = dataclasses.replace(env.info, heartbeat_details=[{"started_at": earlier, "pending": []}])
    with pytest.raises(ApplicationError, match="worker-9: "):
        run(env, p.wait_nodes_ready, wait_input(spec, ["worker-9"], timeout=60))
    assert [h["started_at"] for h in heartbeats] == [earlier]
    env.info = dataclasses.replace(env.info, heartbeat_details=[])
    teardown(env, p, spec)


def observe_input(spec: ClusterSpec) -> ObserveInput:
    return ObserveInput(spec=spec, nodes={n: spec.kubernetes_version for n in spec.node_names()})


def test_observe_reports_nothing_in_sync_then_a_deleted_node_and_an_extra_object(
    env: ActivityEnvironment, subject: Subject
) -> None:
    p, spec = subject.provider, subject.new_spec()
    create(env, p, spec)
    assert run(env, p.observe, observe_input(spec)).items == []  # in sync: an empty report

    subject.delete_node_behind_its_back(spec, "worker-1")
    _eventually(lambda: not subject.node_exists(spec, "worker-1"), "worker-1 to be gone")
    extra = subject.add_extra_labelled_object(spec)
    report = run(env, p.observe, observe_input(spec))
    assert [i.object for i in report.items if i.kind is DriftKind.MISSING and "worker-1" in i.object], report
    assert report.of(DriftKind.EXTRA) == [extra], report
    assert not report.of(DriftKind.CHANGED), report

    # the create's own ensure repairs the node; the extra object stays (reported, never deleted)
    run(env, p.ensure_node, node_ref(spec, "worker-1"))
    after = run(env, p.observe, observe_input(spec))
    assert not after.of(DriftKind.MISSING) and after.of(DriftKind.EXTRA) == [extra], after
    teardown(env, p, spec)


def test_observe_reports_a_revoked_security_group_rule(env: ActivityEnvironment, moto_url: str) -> None:
    subject = next(aws_subject(moto_url))
    p, spec = subject.provider, subject.new_spec()
    create(env, p, spec)
    clients = _aws_clients(moto_url)
    ec2 = clients.client("ec2", REGION)
    name = resources.security_group_name(spec, resources.Part.WORKERS_GROUP)
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"][0]
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group["GroupId"]]}])
    ingress = [r for r in rules["SecurityGroupRules"] if not r["IsEgress"]]
    ec2.revoke_security_group_ingress(
        GroupId=group["GroupId"], SecurityGroupRuleIds=[ingress[0]["SecurityGroupRuleId"]]
    )

    report = run(env, p.observe, observe_input(spec))
    assert [(i.kind, i.object) for i in report.items] == [(DriftKind.CHANGED, f"ec2:security-group/{name}")], report
    assert "missing rules" in report.items[0].detail
    run(env, p.ensure_foundation, ClusterRef(spec=spec))  # the create's step puts the rule back
    assert run(env, p.observe, observe_input(spec)).items == []
    teardown(env, p, spec)


# --- helpers ------------------------------------------------------------------------------------------
def _aws_clients(moto_url: str) -> AwsClients:
    return aws_clients(
        Settings(
            _env_file=None,
            vault_token="unused",
            aws_endpoint_url=moto_url,
            aws_region=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key=SecretStr("testing"),
        )
    )


def _json(response: object) -> dict[str, Any]:
    import json

    raw = cast(Any, response)
    try:
        return cast(dict[str, Any], json.loads(raw.data))
    finally:
        raw.release_conn()


def _eventually(probe: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def key_pair(common_name: str) -> KeyPair:
    key, certificate = self_signed(common_name)
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPair(
        certificate=pem,
        private_key=private.decode(),
        ca_chain=pem,
        serial=f"{certificate.serial_number:x}",
        not_after=certificate.not_valid_after_utc,
        issuer_id="self",
    )


def test_the_key_pair_store_reads_every_pair_at_once_as_it_reads_each(
    env: ActivityEnvironment, subject: Subject
) -> None:
    """``read_all`` (what a drift check reads) says what ``read`` says of each stored pair; a pair
    written again (a renewal, over an existing entry) is replaced, not refused."""
    spec, p = subject.new_spec(), subject.provider
    run(env, p.ensure_foundation, ClusterRef(spec=spec))
    sink = p.key_pairs
    requests = certificate_requests(spec)[:3]
    assert sink.read_all(spec.id) == {}
    for request in requests:
        sink.write(spec.id, request, key_pair(request.common_name))
    renewed = key_pair(requests[0].common_name)
    sink.write(spec.id, requests[0], renewed)
    everything = sink.read_all(spec.id)
    assert everything == {r.name: sink.read(spec.id, r.name) for r in requests}
    assert everything[requests[0].name].certificate == renewed.certificate
    assert all(stored.key_matches for stored in everything.values())
    assert sorted(sink.delete_all(spec.id)) == sorted(r.name for r in requests)
    assert sink.read_all(spec.id) == {}
    teardown(env, p, spec)


def test_a_kvm_drift_check_lists_the_tenants_namespace_and_teardown_verify_everywhere(
    env: ActivityEnvironment, kube_emulator: Emulator
) -> None:
    """The periodic check lists by label inside the tenant's namespace (a cluster-wide list is
    filtered over every tenant's objects, several times a second in a fleet); an object labelled
    with the cluster elsewhere is not the check's, but teardown's verify still finds it."""
    kvm = kvm_subject(kube_emulator)
    subject = next(kvm)
    p, spec = subject.provider, subject.new_spec()
    create(env, p, spec)
    with ApiClient(Configuration(host=kube_emulator.url)) as api:
        CoreV1Api(api).create_namespaced_config_map(
            "default", {"metadata": {"name": f"stray-{spec.id}", "labels": {CLUSTER_LABEL: spec.id}}}
        )
        assert run(env, p.observe, observe_input(spec)).items == []
        assert f"configmap/default/stray-{spec.id}" in run(env, p.list_resources, ClusterRef(spec=spec)).resources
        CoreV1Api(api).delete_namespaced_config_map(f"stray-{spec.id}", "default")
    teardown(env, p, spec)
    kvm.close()
