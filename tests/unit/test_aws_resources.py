"""The AWS provider's desired state (names, tags, subnets, rules, policies, cloud-config), without AWS."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from activities.aws import resources
from activities.nodes import bootstrap
from models.errors import InvalidInput
from models.naming import CLUSTER_LABEL, NODE_LABEL, ROLE_LABEL, VERSION_LABEL
from models.spec import ClusterSpec
from tests.specs import example


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return example("aws-cluster.yaml")


def test_subnets_are_carved_by_zone_position(spec: ClusterSpec) -> None:
    assert resources.subnet_plan(spec) == [
        resources.ZoneSubnets("eu-central-1a", "10.0.0.0/24", "10.0.128.0/24"),
        resources.ZoneSubnets("eu-central-1b", "10.0.1.0/24", "10.0.129.0/24"),
        resources.ZoneSubnets("eu-central-1c", "10.0.2.0/24", "10.0.130.0/24"),
    ]
    aws = resources.aws_settings(spec).model_dump()
    # the smallest VPC the spec allows for three zones still fits, without overlaps
    small = example("aws-cluster.yaml", aws={**aws, "vpc_cidr": "10.0.0.0/21"})
    plan = resources.subnet_plan(small)
    blocks = [b for z in plan for b in (z.public, z.private)]
    assert len(set(blocks)) == 6 and all(b.startswith("10.0.") and b.endswith("/24") for b in blocks)
    # adding a zone never moves the subnets of the existing ones
    two = example("aws-cluster.yaml", aws={**aws, "availability_zones": ["eu-central-1a", "eu-central-1b"]})
    assert resources.subnet_plan(two) == resources.subnet_plan(spec)[:2]


def test_nodes_spread_over_zones(spec: ClusterSpec) -> None:
    assert [resources.node_zone(spec, f"master-{i}") for i in range(3)] == [
        "eu-central-1a",
        "eu-central-1b",
        "eu-central-1c",
    ]
    assert resources.node_zone(spec, "worker-4") == "eu-central-1b"
    with pytest.raises(InvalidInput):
        resources.node_zone(spec, "bastion-0")


def test_global_names_fit_aws_limits_and_never_collide() -> None:
    long_id = "a" * 40
    assert resources.elb_name("acme-prod") == "acme-prod-api"
    assert len(resources.elb_name(long_id)) <= 32 and resources.elb_name(long_id) == resources.elb_name(long_id)
    assert resources.elb_name(long_id) != resources.elb_name(long_id[:-1] + "b")
    bucket = resources.bucket_name(long_id, "123456789012", "eu-central-1")
    assert len(bucket) <= 63 and bucket.startswith(f"tenantctl-{long_id}-")
    assert bucket != resources.bucket_name(long_id, "123456789012", "eu-west-1")
    assert bucket != resources.bucket_name(long_id, "210987654321", "eu-central-1")
    assert len(resources.iam_name(long_id, "worker")) <= 64


def test_tags_say_cluster_role_owner_and_manager(spec: ClusterSpec) -> None:
    tags = resources.node_tags(spec, "worker-2", "v1.32.4")
    assert (
        tags.items()
        >= {
            CLUSTER_LABEL: spec.id,
            ROLE_LABEL: "worker",
            NODE_LABEL: "worker-2",
            VERSION_LABEL: "1.32.4",
            "Name": f"{spec.id}-worker-2",
            resources.OWNER_TAG: spec.owner,
            f"kubernetes.io/cluster/{spec.id}": "owned",
        }.items()
    )
    assert resources.missing_tags({**tags, "someone": "else"}, tags) == {}
    assert resources.missing_tags({**tags, ROLE_LABEL: "master"}, tags) == {ROLE_LABEL: "worker"}
    assert resources.foreign({CLUSTER_LABEL: "other"}, spec) == f"tagged {CLUSTER_LABEL}=other"
    assert resources.foreign({}, spec) == f"not tagged {CLUSTER_LABEL}={spec.id}"


def test_security_groups_let_in_only_what_kubernetes_needs(spec: ClusterSpec) -> None:
    lb = resources.ingress_rules(spec, resources.Part.LB_GROUP)
    assert [rule.key for rule in lb] == [("tcp", 443, 443, "cidr:0.0.0.0/0")]
    masters = {rule.key for rule in resources.ingress_rules(spec, resources.Part.MASTERS_GROUP)}
    assert ("tcp", 6443, 6443, "group:api-lb-security-group") in masters
    assert ("tcp", 2379, 2380, "group:masters-security-group") in masters
    assert not any(key[3].startswith("cidr:0.0.0.0") for key in masters)  # masters never face the internet
    workers = {rule.key for rule in resources.ingress_rules(spec, resources.Part.WORKERS_GROUP)}
    assert ("tcp", 10250, 10250, "group:masters-security-group") in workers
    assert not any(key[1] <= 2379 <= key[2] for key in workers)
    ids = {
        part: f"sg-{part.value}"
        for part in (resources.Part.MASTERS_GROUP, resources.Part.WORKERS_GROUP, resources.Part.LB_GROUP)
    }
    permission = resources.ip_permission(resources.ingress_rules(spec, resources.Part.MASTERS_GROUP)[0], ids)
    assert permission["UserIdGroupPairs"][0]["GroupId"] == "sg-api-lb-security-group"


def policy(spec: ClusterSpec, role: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(resources.node_policy(spec, role, "bucket", "aws", "123456789012"))
    return document


def test_workers_read_only_kubelet_key_pairs(spec: ClusterSpec) -> None:
    prefix = f"arn:aws:secretsmanager:*:123456789012:secret:tenantctl/{spec.id}/"
    worker = policy(spec, "worker")["Statement"]
    assert worker[0]["Resource"] == [prefix + "node-worker-*-??????", prefix + "ca-bundle-??????"]
    assert worker[1]["Resource"] == "arn:aws:s3:::bucket/cloud-config/worker-*"
    master = policy(spec, "master")["Statement"][0]["Resource"]
    for name in ("apiserver", "etcd-peer-master-*", "etcd-server-master-*", "service-account", "node-master-*"):
        assert prefix + name + "-??????" in master
    assert not any("admin" in resource for resource in master)  # the admin pair is for people only


def test_the_cloud_config_is_the_node_bootstrap_with_key_pairs_fetched_from_secrets_manager(spec: ClusterSpec) -> None:
    text = resources.cloud_config(spec, "master", "1.32.4", "eu-central-1")
    assert text.startswith("#cloud-config\n")
    aws = yaml.safe_load(text)
    shared = yaml.safe_load(bootstrap.cloud_config_document(spec, "master", "1.32.4").render("shared part"))
    assert "mounts" not in aws  # no virtio-9p share of Secrets: that is the KVM VMs' way
    paths = {f["path"] for f in aws["write_files"]}
    assert {f["path"] for f in shared["write_files"]} < paths
    manifest = yaml.safe_load(next(f for f in aws["write_files"] if f["path"].endswith("certificates.yaml"))["content"])
    assert manifest["region"] == "eu-central-1"
    assert {
        "secret": f"tenantctl/{spec.id}/etcd-peer-${{NODE_NAME}}",
        "directory": "/etc/kubernetes/ssl/etcd-peer",
    } in (manifest["certificates"])
    assert aws["runcmd"][1] == ["systemctl", "enable", "--now", "tenantctl-certificates.service"]
    worker = yaml.safe_load(
        next(
            f
            for f in yaml.safe_load(resources.cloud_config(spec, "worker", "1.32.4", "eu-central-1"))["write_files"]
            if f["path"].endswith("certificates.yaml")
        )["content"]
    )
    assert [c["directory"] for c in worker["certificates"]] == ["/etc/kubernetes/ssl/node"]


def test_launch_template_versions_are_named_by_their_content(spec: ClusterSpec) -> None:
    def data(image: str) -> dict[str, Any]:
        return resources.launch_template_data(
            spec, "worker", "1.32.4", image_id=image, root_device="/dev/xvda", profile="p", group_id="sg", bucket="b"
        )

    assert resources.template_description("1.32.4", data("ami-1")) == resources.template_description(
        "v1.32.4", data("ami-1")
    )
    assert resources.template_description("1.32.4", data("ami-1")) != resources.template_description(
        "1.32.4", data("ami-2")
    )
    launched = data("ami-1")
    assert launched["InstanceType"] == "m5.xlarge" and launched["MetadataOptions"]["HttpTokens"] == "required"
    script = base64.b64decode(launched["UserData"]).decode()
    assert "s3://b/cloud-config/worker-1.32.4.yaml" in script and len(script) < 16 * 1024
    assert "PRIVATE" not in script
