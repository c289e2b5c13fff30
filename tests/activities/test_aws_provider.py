"""The AWS provider's activities against a real moto server (server mode, over HTTP with boto3).

What every provider promises (every operation twice changes nothing, teardown of a cluster never
made, a deleted object restored, waits honouring their deadline across attempts) is held to both
providers in ``test_provider_contract.py``; these are the checks only the AWS provider has.

Each test makes its own cluster (a unique id), so tests share the session's moto safely; the
hosted zone of the base domain is shared, as it is in production. Resources are checked by
enumerating every service directly (EC2, ELBv2, Route53, IAM, S3, Secrets Manager, and the
resource groups tagging API), not only through the provider's own ``list_resources``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import resources
from activities.aws.key_pairs import SecretsManagerSink
from activities.aws.provider import AwsProvider
from activities.common.errors import classify
from activities.providers.contract import HostObjectMetadata
from activities.providers.key_pairs import KeyPair
from config.settings import Settings
from devstack.aws_seed import seed_amis
from models.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MissingPrerequisite,
    NodesNotReady,
    NotReady,
    QuotaExceeded,
)
from models.naming import CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NODE_LABEL, ROLE_LABEL, VERSION_LABEL
from models.pki import certificate_requests
from models.provider import ClusterRef, EnsureResult, NodesResult, ResourceChange
from models.spec import ClusterSpec
from tests.activities.provider_helpers import changes, node_ref, run, wait_input
from tests.aws_inventory import counts, everything, expected_counts, instance_ids, tags_of, without
from tests.servers import binary, free_port, process, wait_http
from tests.specs import example, unique_id
from worker.clients import AwsClients, aws_clients

T = TypeVar("T")
REGION = "eu-central-1"
VERSION, NEXT_VERSION, UNSEEDED_VERSION = "1.32.4", "1.33.1", "1.34.2"


# --- fixtures ------------------------------------------------------------------------------------
def clients_for(url: str, key: str = "testing", secret: str = "testing") -> AwsClients:
    """Clients exactly as the worker builds them (``worker.clients.aws_clients``)."""
    return aws_clients(
        Settings(
            aws_endpoint_url=url,
            aws_region=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=SecretStr(secret),
        )
    )


@pytest.fixture(scope="module")
def aws(moto_url: str) -> AwsClients:
    clients = clients_for(moto_url)
    # moto starts empty: the node images the provider finds by name (what devstack seeds too).
    seed_amis(clients.client("ec2"), "tenantctl-node", [VERSION, NEXT_VERSION])
    return clients


@pytest.fixture
def provider(aws: AwsClients) -> AwsProvider:
    return AwsProvider(aws, poll_interval=0.02, instance_timeout=10, delete_timeout=10)


@pytest.fixture
def sink(aws: AwsClients) -> SecretsManagerSink:
    return SecretsManagerSink(aws.client("secretsmanager"))


class Heartbeats(list[Any]):
    pass


@pytest.fixture
def heartbeats() -> Heartbeats:
    return Heartbeats()


@pytest.fixture
def env(heartbeats: Heartbeats) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    # as the runbooks call them (workflows/activity_stubs.py): waits stay inside this
    environment.info = dataclasses.replace(environment.info, start_to_close_timeout=timedelta(minutes=10))
    environment.on_heartbeat = lambda *details: heartbeats.append(details[0] if details else None)
    return environment


def small_aws(**changes: Any) -> ClusterSpec:
    """1 master and 2 workers over two zones, a fresh id."""
    base: dict[str, Any] = {
        "id": unique_id("aws"),
        "aws": {"region": REGION, "availability_zones": [f"{REGION}a", f"{REGION}b"], "vpc_cidr": "10.0.0.0/16"},
        "masters": {"count": 1},
        "workers": {"count": 2, "instance_type": "m5.large"},
    }
    base.update(changes)
    return example("aws-cluster.yaml", **base)


@pytest.fixture
def spec() -> ClusterSpec:
    return small_aws()


# --- helpers -------------------------------------------------------------------------------------
def create(env: ActivityEnvironment, provider: AwsProvider, spec: ClusterSpec) -> list[EnsureResult]:
    """The provider's part of the create runbook (workflows/provision.py), in its order."""
    results = [
        run(env, provider.ensure_foundation, ClusterRef(spec=spec)),
        run(env, provider.ensure_endpoint, ClusterRef(spec=spec)),
    ]
    results += [run(env, provider.ensure_node, node_ref(spec, node)) for node in spec.node_names()]
    run(env, provider.wait_nodes_ready, wait_input(spec, version=spec.kubernetes_version))
    return results


def teardown(
    env: ActivityEnvironment, provider: AwsProvider, sink: SecretsManagerSink, spec: ClusterSpec
) -> list[EnsureResult]:
    """The provider's (and the sink's) part of the teardown runbook (workflows/teardown.py)."""
    observed: NodesResult = run(env, provider.list_nodes, ClusterRef(spec=spec))
    versions = {n.name: n.kubernetes_version for n in observed.nodes}
    results = [
        run(env, provider.ensure_node_absent, node_ref(spec, node, versions.get(node) or spec.kubernetes_version))
        for node in sorted(set(spec.node_names()) | set(versions))
    ]
    results.append(run(env, provider.ensure_endpoint_absent, ClusterRef(spec=spec)))
    sink.delete_all(spec.id)
    sink.delete_trust_bundle(spec.id)
    results.append(run(env, provider.ensure_foundation_absent, ClusterRef(spec=spec)))
    return results


def write_key_pairs(sink: SecretsManagerSink, spec: ClusterSpec) -> None:
    """What the PKI activities do between foundation and endpoint (contents are not looked at)."""
    for request in certificate_requests(spec):
        pair = KeyPair(
            certificate="-----BEGIN CERTIFICATE-----",
            private_key="k",
            ca_chain="ca",
            serial="01",
            not_after=datetime.now(UTC),
            issuer_id="issuer",
        )
        sink.write(spec.id, request, pair)


# --- tests ---------------------------------------------------------------------------------------
def test_create_sequence_makes_every_resource_once_with_its_tags(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, sink: SecretsManagerSink
) -> None:
    spec = example("aws-cluster.yaml", id=unique_id("aws"))  # the shipped example: 3 zones, 3 + 3 nodes
    foundation, endpoint, *nodes = create(env, provider, spec)
    write_key_pairs(sink, spec)

    assert {k: v for k, v in changes(foundation).items() if v is not ResourceChange.CREATED} == {}
    assert {k.split("/")[0] for k in changes(foundation)} == {
        "ec2:vpc",
        "ec2:internet-gateway",
        "ec2:subnet",
        "ec2:route-table",
        "ec2:elastic-ip",
        "ec2:nat-gateway",
        "ec2:security-group",
        "s3:bucket",
        "iam:role",
        "iam:instance-profile",
    }
    assert changes(endpoint)[f"elbv2:load-balancer/{spec.id}-api"] is ResourceChange.CREATED
    assert changes(endpoint)[f"route53:record/api.{spec.id}.k8s.example.com."] is ResourceChange.CREATED
    assert changes(nodes[0])["ec2:instance/master-0"] is ResourceChange.CREATED

    found = everything(aws, spec)
    assert without(found, "secret", "tagging-api") == expected_counts(spec)
    # every EC2 resource carries the cluster, a role, owner, manager and a name
    for kind in ("vpc", "subnet", "internet-gateway", "route-table", "security-group", "elastic-ip", "nat-gateway"):
        for item in found[kind]:
            item_tags = tags_of(item)
            assert item_tags[CLUSTER_LABEL] == spec.id and item_tags[MANAGED_BY_LABEL] == MANAGED_BY, (kind, item_tags)
            assert item_tags[ROLE_LABEL] and item_tags["Name"].startswith(spec.id), (kind, item_tags)
            assert (
                item_tags[resources.OWNER_TAG] == spec.owner
                and item_tags[f"kubernetes.io/cluster/{spec.id}"] == "owned"
            )

    ec2 = aws.client("ec2")
    vpc = found["vpc"][0]
    assert vpc["CidrBlock"] == "10.0.0.0/16"
    subnets = {tags_of(s)["Name"]: s for s in found["subnet"]}
    assert {name: (s["CidrBlock"], s["AvailabilityZone"]) for name, s in subnets.items()} == {
        f"{spec.id}-public-eu-central-1a": ("10.0.0.0/24", "eu-central-1a"),
        f"{spec.id}-public-eu-central-1b": ("10.0.1.0/24", "eu-central-1b"),
        f"{spec.id}-public-eu-central-1c": ("10.0.2.0/24", "eu-central-1c"),
        f"{spec.id}-private-eu-central-1a": ("10.0.128.0/24", "eu-central-1a"),
        f"{spec.id}-private-eu-central-1b": ("10.0.129.0/24", "eu-central-1b"),
        f"{spec.id}-private-eu-central-1c": ("10.0.130.0/24", "eu-central-1c"),
    }
    assert found["internet-gateway"][0]["Attachments"][0]["VpcId"] == vpc["VpcId"]
    tables = {tags_of(t)["Name"]: t for t in found["route-table"]}
    public = tables[f"{spec.id}-public"]
    assert {a["SubnetId"] for a in public["Associations"]} == {
        s["SubnetId"] for n, s in subnets.items() if "-public-" in n
    }
    assert {rt.get("GatewayId") for rt in public["Routes"] if rt["DestinationCidrBlock"] == "0.0.0.0/0"} == {
        found["internet-gateway"][0]["InternetGatewayId"]
    }
    nats = {tags_of(n)[resources.ZONE_TAG]: n for n in found["nat-gateway"]}
    for zone in ("eu-central-1a", "eu-central-1b", "eu-central-1c"):
        private = tables[f"{spec.id}-private-{zone}"]
        assert [a["SubnetId"] for a in private["Associations"]] == [subnets[f"{spec.id}-private-{zone}"]["SubnetId"]]
        default = [rt for rt in private["Routes"] if rt["DestinationCidrBlock"] == "0.0.0.0/0"]
        assert [rt["NatGatewayId"] for rt in default] == [nats[zone]["NatGatewayId"]]
        assert nats[zone]["SubnetId"] == subnets[f"{spec.id}-public-{zone}"]["SubnetId"]

    groups = {g["GroupName"]: g for g in found["security-group"]}
    masters, workers, lb_group = (groups[f"{spec.id}-{n}"]["GroupId"] for n in ("masters", "workers", "api-lb"))

    def ingress(group_id: str) -> set[tuple[str, int, int, str]]:
        rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
        return {
            (
                x["IpProtocol"],
                x["FromPort"],
                x["ToPort"],
                (x.get("ReferencedGroupInfo") or {}).get("GroupId") or x.get("CidrIpv4", ""),
            )
            for x in rules["SecurityGroupRules"]
            if not x["IsEgress"]
        }

    assert ingress(lb_group) == {("tcp", 443, 443, "0.0.0.0/0")}
    assert ingress(masters) == {
        ("tcp", 6443, 6443, lb_group),
        ("tcp", 6443, 6443, masters),
        ("tcp", 6443, 6443, workers),
        ("tcp", 2379, 2380, masters),
        ("tcp", 10250, 10250, masters),
        ("udp", 8472, 8472, masters),
        ("udp", 8472, 8472, workers),
    }
    assert ("tcp", 10250, 10250, masters) in ingress(workers) and ("tcp", 6443, 6443, lb_group) not in ingress(workers)

    # instances: masters spread over the zones, in private subnets, from the version's AMI
    image = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [f"tenantctl-node-{VERSION}"]}])
    by_node = {tags_of(i)[NODE_LABEL]: i for i in found["instance"]}
    assert sorted(by_node) == sorted(spec.node_names())
    for node, instance in by_node.items():
        role, index = node.split("-")
        zone = f"eu-central-1{'abc'[int(index) % 3]}"
        assert instance["Placement"]["AvailabilityZone"] == zone
        assert instance["SubnetId"] == subnets[f"{spec.id}-private-{zone}"]["SubnetId"]
        assert instance["ImageId"] == image["Images"][0]["ImageId"]
        assert instance["InstanceType"] == ("m5.large" if role == "master" else "m5.xlarge")
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [masters if role == "master" else workers]
        assert instance["IamInstanceProfile"]["Arn"].endswith(f"/tenantctl-{spec.id}-{role}")
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert (
            tags_of(instance).items()
            >= {
                CLUSTER_LABEL: spec.id,
                NODE_LABEL: node,
                ROLE_LABEL: role,
                VERSION_LABEL: VERSION,
                "Name": f"{spec.id}-{node}",
            }.items()
        )

    # the endpoint: NLB on the public subnets, 443 -> masters:6443, cross-zone, healthy masters
    elb = aws.client("elbv2")
    lb = found["load-balancer"][0]
    assert (lb["Type"], lb["Scheme"]) == ("network", "internet-facing")
    assert {z["SubnetId"] for z in lb["AvailabilityZones"]} == {
        s["SubnetId"] for n, s in subnets.items() if "-public-" in n
    }
    attributes = elb.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]
    assert {"Key": "load_balancing.cross_zone.enabled", "Value": "true"} in attributes
    group = found["target-group"][0]
    assert (group["Protocol"], group["Port"], group["HealthCheckProtocol"]) == ("TCP", 6443, "TCP")
    (listener,) = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (443, "TCP")
    assert listener["DefaultActions"][0]["TargetGroupArn"] == group["TargetGroupArn"]
    health = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
    assert {(t["Target"]["Id"], t["TargetHealth"]["State"]) for t in health} == {
        (by_node[f"master-{i}"]["InstanceId"], "healthy") for i in range(3)
    }
    records = {(rec["Name"], rec["Type"]): rec for rec in found["record"]}
    assert records[(f"api.{spec.id}.k8s.example.com.", "A")]["AliasTarget"]["DNSName"] == lb["DNSName"]
    assert records[(f"*.ingress.{spec.id}.k8s.example.com.", "A")]["AliasTarget"]["DNSName"] == lb["DNSName"]
    for i in range(3):
        etcd = records[(f"master-{i}.etcd.{spec.id}.k8s.example.com.", "A")]
        assert etcd["ResourceRecords"] == [{"Value": by_node[f"master-{i}"]["PrivateIpAddress"]}]

    # identity: each role reads only its own key pairs and cloud-configs
    iam = aws.client("iam")
    for role in ("master", "worker"):
        name = f"tenantctl-{spec.id}-{role}"
        assert tags_of(iam.get_role(RoleName=name)["Role"])[CLUSTER_LABEL] == spec.id
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        assert [x["RoleName"] for x in profile["Roles"]] == [name]
        document = iam.get_role_policy(RoleName=name, PolicyName=resources.NODE_POLICY)["PolicyDocument"]
        text = json.dumps(document)
        assert f"secret:tenantctl/{spec.id}/node-{role}-*-??????" in text
        assert (f"tenantctl/{spec.id}/apiserver-" in text) is (role == "master")
        assert f"cloud-config/{role}-*" in text
    # the bucket: private, encrypted, tagged, one cloud-config per role
    s3 = aws.client("s3")
    bucket = found["bucket"][0]["Name"]
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert tags_of({"Tags": s3.get_bucket_tagging(Bucket=bucket)["TagSet"]})[CLUSTER_LABEL] == spec.id
    objects = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert objects == [f"cloud-config/master-{VERSION}.yaml", f"cloud-config/worker-{VERSION}.yaml"]
    config = s3.get_object(Bucket=bucket, Key=objects[0])["Body"].read().decode()
    assert f"tenantctl/{spec.id}/etcd-peer-${{NODE_NAME}}" in config and "9p" not in config

    # the listing the teardown verifies against sees every one of them (and the key pairs)
    listed = run(env, provider.list_resources, ClusterRef(spec=spec)).resources
    kinds = Counter(item.split("/")[0] for item in listed)
    assert kinds == {
        "ec2:vpc": 1,
        "ec2:subnet": 6,
        "ec2:internet-gateway": 1,
        "ec2:route-table": 4,
        "ec2:security-group": 3,
        "ec2:elastic-ip": 3,
        "ec2:nat-gateway": 3,
        "ec2:launch-template": 2,
        "ec2:instance": 6,
        "elbv2:load-balancer": 1,
        "elbv2:target-group": 1,
        "route53:record": 5,
        "iam:role": 2,
        "iam:instance-profile": 2,
        "s3:bucket": 1,
        "secretsmanager:secret": len(certificate_requests(spec)),
    }
    nodes_seen = run(env, provider.list_nodes, ClusterRef(spec=spec)).nodes
    assert [(n.name, n.role, n.kubernetes_version, n.ready) for n in nodes_seen] == [
        (f"{role}-{i}", role, VERSION, True) for role in ("master", "worker") for i in range(3)
    ]


class WorkerKilled(BaseException):
    """Raised by ``CrashingClients`` right after a write reached AWS, as a SIGKILL would strike."""


WRITES = re.compile(
    r"^(create|allocate|run|put|attach|associate|authorize|register|modify|change|add|tag|set|replace|start|reboot)_"
)


class CrashingClients(AwsClients):
    """The worker's clients, except that the ``crash_after``-th write dies after reaching AWS.

    Fault injection around the real clients (moto still does all the work): an activity that
    dies after its write but before it records the result is the case idempotency must survive.
    """

    def __init__(self, real: AwsClients, crash_after: int) -> None:
        super().__init__(session=real.session, endpoint_url=real.endpoint_url)
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_left", [crash_after])

    def client(self, service: str, region: str | None = None) -> Any:
        return _Crashing(self._real.client(service, region), self._left)  # type: ignore[attr-defined]


class _Crashing:
    def __init__(self, client: Any, left: list[int]) -> None:
        self._client, self._left = client, left

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not WRITES.match(name):
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            self._left[0] -= 1
            if self._left[0] == 0:
                raise WorkerKilled(name)
            return result

        return write


def test_a_create_killed_after_each_of_its_writes_converges_to_one_of_each(
    env: ActivityEnvironment, aws: AwsClients, spec: ClusterSpec
) -> None:
    """The create runbook, its worker killed right after every single write that reached AWS
    (each run gets one write further than the last), then run to the end once more."""
    kills = 0
    while True:
        crashing = AwsProvider(CrashingClients(aws, crash_after=1), poll_interval=0.02, instance_timeout=10)
        try:
            create(env, crashing, spec)
            break
        except WorkerKilled:
            kills += 1
        assert kills < 200, "the create never finished"
    assert kills >= 40  # every write of the create: VPC, subnets, gateways, ..., instances, records
    provider = AwsProvider(aws, poll_interval=0.02)
    for result in create(env, provider, spec):
        assert set(changes(result).values()) == {ResourceChange.UNCHANGED}, changes(result)
    assert without(everything(aws, spec), "tagging-api") == expected_counts(spec)


def test_duplicates_left_by_concurrent_attempts_are_resolved(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, spec: ClusterSpec
) -> None:
    """moto ignores ClientToken (and AWS honours it only for a while): two attempts running at once
    can both launch a node. The next ensure keeps one and terminates the other."""
    create(env, provider, spec)
    ec2 = aws.client("ec2")
    keep = instance_ids(aws, spec)["worker-1"]
    original = ec2.describe_instances(InstanceIds=[keep])["Reservations"][0]["Instances"][0]
    twin = ec2.run_instances(
        ImageId=original["ImageId"],
        MinCount=1,
        MaxCount=1,
        SubnetId=original["SubnetId"],
        TagSpecifications=[{"ResourceType": "instance", "Tags": original["Tags"]}],
    )["Instances"][0]["InstanceId"]
    assert changes(run(env, provider.ensure_node, node_ref(spec, "worker-1")))["ec2:instance/worker-1"] is (
        ResourceChange.UPDATED
    )
    # one of the two stays (the older; within one second, the lower id), the other is ended
    survivor = instance_ids(aws, spec)["worker-1"]
    assert survivor in (keep, twin)
    other = twin if survivor == keep else keep
    assert ec2.describe_instances(InstanceIds=[other])["Reservations"][0]["Instances"][0]["State"]["Name"] == (
        "terminated"
    )
    assert len(everything(aws, spec)["instance"]) == len(spec.node_names())
    # moto also makes a second load balancer of one name (AWS would return the first): one goes
    elb = aws.client("elbv2")
    first = everything(aws, spec)["load-balancer"][0]
    elb.create_load_balancer(
        Name=first["LoadBalancerName"],
        Subnets=[z["SubnetId"] for z in first["AvailabilityZones"]],
        Scheme="internet-facing",
        Type="network",
        Tags=[{"Key": CLUSTER_LABEL, "Value": spec.id}],
    )
    assert len(everything(aws, spec)["load-balancer"]) == 2
    run(env, provider.ensure_endpoint, ClusterRef(spec=spec))
    (kept,) = everything(aws, spec)["load-balancer"]
    records = {rec["Name"]: rec for rec in everything(aws, spec)["record"]}
    assert records[f"api.{spec.id}.k8s.example.com."]["AliasTarget"]["DNSName"] == kept["DNSName"]


def test_a_version_change_replaces_the_instance_and_a_token_reboots_it(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, spec: ClusterSpec
) -> None:
    create(env, provider, spec)
    ec2, elb = aws.client("ec2"), aws.client("elbv2")
    first = instance_ids(aws, spec)["master-0"]

    # a restart token reboots in place, once per token (the token is kept in a tag)
    rolled = run(env, provider.ensure_node, node_ref(spec, "master-0", token="serials-1"))
    assert changes(rolled)["ec2:instance/master-0"] is ResourceChange.UPDATED
    assert (
        changes(run(env, provider.ensure_node, node_ref(spec, "master-0", token="serials-1")))["ec2:instance/master-0"]
        is ResourceChange.UNCHANGED
    )
    restarted = run(env, provider.restart_node, node_ref(spec, "master-0", token="serials-2"))
    assert changes(restarted) == {"ec2:instance/master-0": ResourceChange.UPDATED}
    again = run(env, provider.restart_node, node_ref(spec, "master-0", token="serials-2"))
    assert changes(again) == {"ec2:instance/master-0": ResourceChange.UNCHANGED}
    instance = ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "running" and tags_of(instance)[resources.RESTART_TOKEN_TAG] == "serials-2"
    assert instance_ids(aws, spec)["master-0"] == first
    with pytest.raises(InvalidInput, match="restart_token is empty"):
        run(env, provider.restart_node, node_ref(spec, "master-0"))
    assert changes(run(env, provider.restart_node, node_ref(spec, "master-7", token="x"))) == {
        "ec2:instance/master-7": ResourceChange.ABSENT
    }

    # a new version replaces: the old instance is deregistered and terminated, the new one serves
    replaced = run(env, provider.ensure_node, node_ref(spec, "master-0", NEXT_VERSION))
    assert changes(replaced)["ec2:instance/master-0"] is ResourceChange.UPDATED
    assert changes(replaced)["ec2:launch-template/" + f"{spec.id}-master"] is ResourceChange.UPDATED
    assert changes(replaced)[f"s3:object/cloud-config/master-{NEXT_VERSION}.yaml"] is ResourceChange.CREATED
    second = instance_ids(aws, spec)["master-0"]
    assert second != first
    old = ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]
    assert old["State"]["Name"] == "terminated"
    new = ec2.describe_instances(InstanceIds=[second])["Reservations"][0]["Instances"][0]
    next_image = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": [f"tenantctl-node-{NEXT_VERSION}"]}]
    )["Images"][0]["ImageId"]
    assert new["ImageId"] == next_image and tags_of(new)[VERSION_LABEL] == NEXT_VERSION
    group = elb.describe_target_groups(Names=[resources.elb_name(spec.id)])["TargetGroups"][0]["TargetGroupArn"]
    targets = elb.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    assert [t["Target"]["Id"] for t in targets] == [second]
    versions = ec2.describe_launch_template_versions(LaunchTemplateName=f"{spec.id}-master")["LaunchTemplateVersions"]
    assert sorted(v["VersionDescription"].split()[1] for v in versions) == [VERSION, NEXT_VERSION]
    ready = run(env, provider.wait_nodes_ready, wait_input(spec, ["master-0"], version=NEXT_VERSION))
    assert ready.nodes[0].kubernetes_version == NEXT_VERSION
    # the old version's cloud-config goes with the last node that used it
    removed = run(env, provider.ensure_node_absent, node_ref(spec, "master-0", NEXT_VERSION))
    assert changes(removed)[f"s3:object/cloud-config/master-{NEXT_VERSION}.yaml"] is ResourceChange.DELETED


def test_an_upgrade_replaces_every_instance_one_by_one(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, spec: ClusterSpec
) -> None:
    """What the rolling upgrade asks of the provider: a surge worker, then each node replaced and
    waited for at the new version, then the surge worker removed."""
    create(env, provider, spec)
    before = instance_ids(aws, spec)
    surge = "worker-2"  # the spec has worker-0 and worker-1
    run(env, provider.ensure_node, node_ref(spec, surge, NEXT_VERSION))
    run(env, provider.wait_nodes_ready, wait_input(spec, [surge], version=NEXT_VERSION))
    for node in spec.node_names():
        run(env, provider.ensure_node, node_ref(spec, node, NEXT_VERSION))
        run(env, provider.wait_nodes_ready, wait_input(spec, [node], version=NEXT_VERSION))
    removed = run(env, provider.ensure_node_absent, node_ref(spec, surge, NEXT_VERSION))
    assert changes(removed)["ec2:instance/worker-2"] is ResourceChange.DELETED
    # the old version's cloud-configs are gone with their last nodes; the new ones stay in use
    assert changes(removed)[f"s3:object/cloud-config/worker-{NEXT_VERSION}.yaml"] is ResourceChange.UNCHANGED

    after = instance_ids(aws, spec)
    assert sorted(after) == sorted(spec.node_names())
    assert all(after[n] != before[n] for n in before)
    nodes = run(env, provider.list_nodes, ClusterRef(spec=spec)).nodes
    assert {(n.name, n.kubernetes_version, n.ready) for n in nodes} == {
        (n, NEXT_VERSION, True) for n in spec.node_names()
    }
    assert len(everything(aws, spec)["instance"]) == len(spec.node_names())


def test_wait_times_out_naming_stopped_and_missing_instances(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, heartbeats: Heartbeats, spec: ClusterSpec
) -> None:
    create(env, provider, spec)
    aws.client("ec2").stop_instances(InstanceIds=[instance_ids(aws, spec)["worker-0"]])
    started = time.monotonic()
    with pytest.raises(ApplicationError) as info:
        run(env, provider.wait_nodes_ready, wait_input(spec, ["master-0", "worker-0", "worker-9"], timeout=0.5))
    assert 0.5 <= time.monotonic() - started < 5
    error = info.value
    assert error.non_retryable and error.type == NodesNotReady.__name__
    assert "2 of 3 nodes" in error.message
    assert "worker-0: instance i-" in error.message and "is stopped" in error.message
    assert "worker-9: no instance of node worker-9" in error.message and "master-0" not in error.message
    assert error.details == (["worker-0", "worker-9"],)
    assert heartbeats and len({h["started_at"] for h in heartbeats}) == 1
    # a version nobody runs is as impossible
    with pytest.raises(ApplicationError, match=re.escape(f"master-0: runs Kubernetes {VERSION}, not 1.35.0")):
        run(env, provider.wait_nodes_ready, wait_input(spec, ["master-0"], timeout=0.2, version="1.35.0"))
    # ensure_node brings the stopped worker back
    assert changes(run(env, provider.ensure_node, node_ref(spec, "worker-0")))["ec2:instance/worker-0"] is (
        ResourceChange.UPDATED
    )
    run(env, provider.wait_nodes_ready, wait_input(spec, ["worker-0"]))


def test_drift_is_converged(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, spec: ClusterSpec
) -> None:
    create(env, provider, spec)
    ec2, elb = aws.client("ec2"), aws.client("elbv2")
    found = everything(aws, spec)
    groups = {g["GroupName"]: g["GroupId"] for g in found["security-group"]}
    workers = groups[f"{spec.id}-workers"]
    # someone opens SSH to the world, removes the kubelet rule, and the public default route,
    # and turns cross-zone balancing off
    ec2.authorize_security_group_ingress(
        GroupId=workers,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [workers]}])["SecurityGroupRules"]
    kubelet = [x["SecurityGroupRuleId"] for x in rules if x.get("FromPort") == 10250]
    ec2.revoke_security_group_ingress(GroupId=workers, SecurityGroupRuleIds=kubelet)
    public = next(t for t in found["route-table"] if tags_of(t)["Name"] == f"{spec.id}-public")
    ec2.delete_route(RouteTableId=public["RouteTableId"], DestinationCidrBlock="0.0.0.0/0")
    lb = found["load-balancer"][0]["LoadBalancerArn"]
    elb.modify_load_balancer_attributes(
        LoadBalancerArn=lb, Attributes=[{"Key": "load_balancing.cross_zone.enabled", "Value": "false"}]
    )
    foundation = changes(run(env, provider.ensure_foundation, ClusterRef(spec=spec)))
    assert foundation[f"ec2:security-group/{spec.id}-workers"] is ResourceChange.UPDATED
    assert foundation[f"ec2:route-table/{spec.id}-public"] is ResourceChange.UPDATED
    endpoint = changes(run(env, provider.ensure_endpoint, ClusterRef(spec=spec)))
    assert endpoint[f"elbv2:load-balancer/{spec.id}-api"] is ResourceChange.UPDATED
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [workers]}])["SecurityGroupRules"]
    ports = sorted(x["FromPort"] for x in rules if not x["IsEgress"])
    assert 22 not in ports and 10250 in ports
    for result in create(env, provider, spec):
        assert set(changes(result).values()) == {ResourceChange.UNCHANGED}, changes(result)


def test_teardown_twice_leaves_nothing_in_any_service(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, sink: SecretsManagerSink, spec: ClusterSpec
) -> None:
    create(env, provider, spec)
    write_key_pairs(sink, spec)
    sink.write_trust_bundle(spec.id, "-----BEGIN CERTIFICATE-----", ["a", "b"])
    assert counts(everything(aws, spec))["secret"] == len(certificate_requests(spec)) + 1

    first = teardown(env, provider, sink, spec)
    removed = [f"{o.kind}/{o.name}" for result in first for o in result.outcomes if o.change is ResourceChange.DELETED]
    assert {x.split("/")[0] for x in removed} >= {
        "ec2:instance",
        "elbv2:load-balancer",
        "elbv2:target-group",
        "route53:record",
        "ec2:nat-gateway",
        "ec2:vpc",
        "iam:role",
        "s3:bucket",
    }
    assert run(env, provider.list_resources, ClusterRef(spec=spec)).resources == []
    assert counts(everything(aws, spec)) == {}

    second = teardown(env, provider, sink, spec)
    for result in second:
        assert {o.change for o in result.outcomes} <= {ResourceChange.ABSENT, ResourceChange.UNCHANGED}, changes(result)
    assert counts(everything(aws, spec)) == {}
    # and the same cluster id can be created again right away
    create(env, provider, spec)
    assert counts(everything(aws, spec))["instance"] == len(spec.node_names())
    teardown(env, provider, sink, spec)
    assert counts(everything(aws, spec)) == {}


def test_permanent_errors_name_what_is_wrong(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, spec: ClusterSpec
) -> None:
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    # nodes and the endpoint need the foundation, which the runbooks ensure first: a VPC not there
    # was lost behind the cluster's back (a restarted moto), and the error says it is missing
    bare = small_aws()
    with pytest.raises(MissingPrerequisite, match=f"VPC tagged tenantctl.io/cluster={bare.id} is missing: it existed"):
        run(env, provider.ensure_endpoint, ClusterRef(spec=bare))
    with pytest.raises(MissingPrerequisite, match=f"target group {spec.id}-api of master master-0 is missing"):
        run(env, provider.ensure_node, node_ref(spec, "master-0"))
    # an AMI nobody built
    unseeded = spec.model_copy(update={"kubernetes_version": UNSEEDED_VERSION})
    with pytest.raises(MissingPrerequisite, match=re.escape(f"AMI tenantctl-node-{UNSEEDED_VERSION} (owner self")):
        run(env, provider.ensure_node, node_ref(unseeded, "worker-0", UNSEEDED_VERSION))
    assert everything(aws, spec)["instance"] == []
    # a node name no runbook makes
    with pytest.raises(InvalidInput, match="not a node name"):
        run(env, provider.ensure_node, node_ref(spec, "etcd-0"))
    # a KVM cluster is refused before anything is touched
    with pytest.raises(InvalidInput, match="provider is 'kvm'"):
        run(env, provider.ensure_foundation, ClusterRef(spec=example("kvm-cluster.yaml", id=unique_id("kvm"))))


def test_a_foreign_role_of_the_same_name_is_neither_taken_over_nor_deleted(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, sink: SecretsManagerSink, spec: ClusterSpec
) -> None:
    iam = aws.client("iam")
    name = f"tenantctl-{spec.id}-worker"
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=resources.trust_policy())  # someone else's, untagged
    with pytest.raises(Conflict, match=f"IAM role {name} exists but is not tenantctl's"):
        run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    with pytest.raises(Conflict, match="not deleting it"):
        teardown(env, provider, sink, spec)
    assert iam.get_role(RoleName=name)["Role"]["RoleName"] == name
    iam.delete_role(RoleName=name)
    teardown(env, provider, sink, spec)
    assert counts(everything(aws, spec)) == {}


# --- errors from AWS itself ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_with_iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second moto server that enforces IAM (after three unauthenticated set-up calls)."""
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("moto-iam")
    with process(
        [binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        workdir / "moto.log",
        env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    ):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/moto-api/", timeout=60)
        yield url


def test_access_denied_is_forbidden_and_permanent(env: ActivityEnvironment, moto_with_iam: str) -> None:
    admin = boto3.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    iam = admin.client("iam", endpoint_url=moto_with_iam)
    iam.create_user(UserName="read-only")
    key = iam.create_access_key(UserName="read-only")["AccessKey"]
    iam.put_user_policy(
        UserName="read-only",
        PolicyName="describe",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["ec2:Describe*", "sts:GetCallerIdentity"], "Resource": "*"}
                ],
            }
        ),
    )
    limited = AwsProvider(clients_for(moto_with_iam, key["AccessKeyId"], key["SecretAccessKey"]), poll_interval=0.02)
    with pytest.raises(Forbidden, match=r"create VPC .*: AWS AccessDenied: .*ec2:CreateVpc"):
        run(env, limited.ensure_foundation, ClusterRef(spec=small_aws()))
    # credentials AWS does not know at all
    unknown = AwsProvider(clients_for(moto_with_iam, "AKIAUNKNOWN000000000", "nope"), poll_interval=0.02)
    with pytest.raises(Forbidden):
        run(env, unknown.list_nodes, ClusterRef(spec=small_aws()))


def test_throttling_stays_retryable_and_limits_are_quotas(aws: AwsClients) -> None:
    """moto neither throttles nor enforces limits: classify real ClientErrors of both shapes."""
    ec2 = aws.client("ec2")
    try:
        ec2.describe_vpcs(VpcIds=["vpc-00000000000000000"])
    except ClientError as exc:
        real = exc  # a real moto response, re-coded below
    else:  # pragma: no cover
        raise AssertionError("moto found a VPC that cannot exist")

    def coded(code: str) -> ClientError:
        response = {**real.response, "Error": {"Code": code, "Message": "m"}}
        return ClientError(response, real.operation_name)  # type: ignore[arg-type]

    for code in ("Throttling", "RequestLimitExceeded", "ThrottlingException", "InternalError", "ServiceUnavailable"):
        error = coded(code)
        assert classify(error, "x") is error, code  # left as it is: retried
    for code in ("VpcLimitExceeded", "AddressLimitExceeded", "TooManyLoadBalancers", "LimitExceeded"):
        assert isinstance(classify(coded(code), "x"), QuotaExceeded), code
    for code in ("InvalidParameterValue", "ValidationError", "InvalidInput"):
        assert isinstance(classify(coded(code), "x"), InvalidInput), code
    assert isinstance(classify(coded("UnauthorizedOperation"), "x"), Forbidden)
    assert classify(real, "x") is real  # not found: the provider decides what that means


def test_a_stuck_teardown_says_what_it_waits_for_within_the_attempt(
    env: ActivityEnvironment, provider: AwsProvider, aws: AwsClients, sink: SecretsManagerSink, spec: ClusterSpec
) -> None:
    """Someone made a subnet of their own in the cluster's VPC: the VPC cannot go. When the attempt's
    time is up (its start-to-close, less a margin), the wait gives up at once, naming the VPC and
    AWS's reason, instead of waiting out its own 10 s or being cut off by the timeout; the next
    attempt finishes."""
    run(env, provider.ensure_foundation, ClusterRef(spec=spec))
    ec2 = aws.client("ec2")
    vpc = everything(aws, spec)["vpc"][0]["VpcId"]
    stranger = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.64.0/24")["Subnet"]["SubnetId"]
    # an attempt that started a minute ago with a 30 s start-to-close: its time is up
    started = datetime.now(UTC) - timedelta(minutes=1)
    env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(seconds=30), started_time=started)
    with pytest.raises(NotReady, match=rf"waited 0s for VPC {vpc} to be deleted: still DependencyViolation"):
        run(env, provider.ensure_foundation_absent, ClusterRef(spec=spec))
    ec2.delete_subnet(SubnetId=stranger)
    env.info = dataclasses.replace(
        env.info, start_to_close_timeout=timedelta(minutes=15), started_time=datetime.now(UTC)
    )
    teardown(env, provider, sink, spec)
    assert counts(everything(aws, spec)) == {}


def test_the_local_stack_hook_hears_of_every_node(
    env: ActivityEnvironment, aws: AwsClients, sink: SecretsManagerSink, spec: ClusterSpec
) -> None:
    heard: list[tuple[str, str, str | None]] = []

    class Hook:
        def vm_metadata(self, spec: ClusterSpec, node: str, version: str) -> HostObjectMetadata:
            return HostObjectMetadata()

        def node_ensured(self, spec: ClusterSpec, node: str, version: str, vm: dict[str, Any] | None = None) -> None:
            heard.append((spec.id, node, version))

        def node_removed(self, spec: ClusterSpec, node: str) -> None:
            heard.append((spec.id, node, None))

    provider = AwsProvider(aws, poll_interval=0.02, simulated_nodes=Hook())
    create(env, provider, spec)
    run(env, provider.ensure_node, node_ref(spec, "worker-1", NEXT_VERSION))
    teardown(env, provider, sink, spec)
    assert heard[: len(spec.node_names())] == [(spec.id, node, VERSION) for node in spec.node_names()]
    assert (spec.id, "worker-1", NEXT_VERSION) in heard
    assert heard[-len(spec.node_names()) :] == [(spec.id, node, None) for node in sorted(spec.node_names())]
