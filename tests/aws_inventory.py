"""Every AWS resource of a cluster, found by enumerating each service directly (not through the
provider's own ``list_resources``): shared by the AWS activity tests and the end-to-end tests."""

from __future__ import annotations

import re
from typing import Any

from activities.aws import resources
from models.naming import CLUSTER_LABEL, NODE_LABEL
from models.spec import ClusterSpec
from worker.clients import AwsClients

LIVE = ["pending", "running", "stopping", "stopped", "shutting-down"]


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}


def everything(aws: AwsClients, spec: ClusterSpec) -> dict[str, list[dict[str, Any]]]:
    """Every resource of the cluster in every service, found directly (not by the provider)."""
    ec2, elb, r53, iam, s3, sm = (aws.client(s) for s in ("ec2", "elbv2", "route53", "iam", "s3", "secretsmanager"))
    tagged = [{"Name": f"tag:{CLUSTER_LABEL}", "Values": [spec.id]}]
    found: dict[str, list[dict[str, Any]]] = {
        "vpc": ec2.describe_vpcs(Filters=tagged)["Vpcs"],
        "subnet": ec2.describe_subnets(Filters=tagged)["Subnets"],
        "internet-gateway": ec2.describe_internet_gateways(Filters=tagged)["InternetGateways"],
        "route-table": ec2.describe_route_tables(Filters=tagged)["RouteTables"],
        "security-group": ec2.describe_security_groups(Filters=tagged)["SecurityGroups"],
        "elastic-ip": ec2.describe_addresses(Filters=tagged)["Addresses"],
        # moto ignores tag filters of DescribeNatGateways: the tags are checked here
        "nat-gateway": [
            n
            for n in ec2.describe_nat_gateways(Filter=tagged)["NatGateways"]
            if n["State"] in ("pending", "available") and tags_of(n).get(CLUSTER_LABEL) == spec.id
        ],
        "launch-template": ec2.describe_launch_templates(Filters=tagged)["LaunchTemplates"],
        "instance": [
            i
            for res in ec2.describe_instances(Filters=[*tagged, {"Name": "instance-state-name", "Values": LIVE}])[
                "Reservations"
            ]
            for i in res["Instances"]
        ],
        "volume": ec2.describe_volumes(Filters=tagged)["Volumes"],
    }
    lbs, groups = elb.describe_load_balancers()["LoadBalancers"], elb.describe_target_groups()["TargetGroups"]
    arns = [x["LoadBalancerArn"] for x in lbs] + [x["TargetGroupArn"] for x in groups]
    elb_tags = {
        d["ResourceArn"]: tags_of(d) for d in (elb.describe_tags(ResourceArns=arns)["TagDescriptions"] if arns else [])
    }
    found["load-balancer"] = [x for x in lbs if elb_tags.get(x["LoadBalancerArn"], {}).get(CLUSTER_LABEL) == spec.id]
    found["target-group"] = [x for x in groups if elb_tags.get(x["TargetGroupArn"], {}).get(CLUSTER_LABEL) == spec.id]
    found["load-balancer-named"] = [x for x in lbs if x["LoadBalancerName"] == resources.elb_name(spec.id)]
    suffix = f".{spec.cluster_domain}."
    found["record"] = [
        rec
        for zone in r53.list_hosted_zones()["HostedZones"]
        for rec in r53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"]
        if resources.fqdn(rec["Name"]).endswith(suffix) or resources.fqdn(rec["Name"]) == suffix[1:]
    ]
    prefix = f"tenantctl-{spec.id}-"
    found["iam-role"] = [
        x for x in iam.list_roles()["Roles"] if x["RoleName"] in (prefix + "master", prefix + "worker")
    ]
    found["instance-profile"] = [
        x
        for x in iam.list_instance_profiles()["InstanceProfiles"]
        if x["InstanceProfileName"] in (prefix + "master", prefix + "worker")
    ]
    found["bucket"] = [
        b for b in s3.list_buckets()["Buckets"] if re.fullmatch(re.escape(prefix) + "[0-9a-f]{8}", b["Name"])
    ]
    found["secret"] = [
        s
        for s in sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]
        if s["Name"].startswith(f"tenantctl/{spec.id}/") or tags_of(s).get(CLUSTER_LABEL) == spec.id
    ]
    terminated = {
        i["InstanceId"]
        for res in ec2.describe_instances(Filters=[*tagged, {"Name": "instance-state-name", "Values": ["terminated"]}])[
            "Reservations"
        ]
        for i in res["Instances"]
    }
    # like AWS, moto keeps terminated instances and deleted NAT gateways listed for a while
    terminated |= {n["NatGatewayId"] for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] == "deleted"}
    tagging = aws.client("resourcegroupstaggingapi")
    found["tagging-api"] = [
        m
        for m in tagging.get_resources(TagFilters=[{"Key": CLUSTER_LABEL, "Values": [spec.id]}])[
            "ResourceTagMappingList"
        ]
        if m["ResourceARN"].rsplit("/", 1)[-1] not in terminated
    ]
    return found


def counts(found: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {kind: len(items) for kind, items in found.items() if items}


def instance_ids(aws: AwsClients, spec: ClusterSpec) -> dict[str, str]:
    return {tags_of(i)[NODE_LABEL]: i["InstanceId"] for i in everything(aws, spec)["instance"]}


def expected_counts(spec: ClusterSpec) -> dict[str, int]:
    zones = len(resources.aws_settings(spec).availability_zones)
    nodes = len(spec.node_names())
    return {
        "vpc": 1,
        "subnet": 2 * zones,
        "internet-gateway": 1,
        "route-table": 1 + zones,
        "security-group": 3,
        "elastic-ip": zones,
        "nat-gateway": zones,
        "launch-template": 2,
        "instance": nodes,
        "volume": nodes,
        "load-balancer": 1,
        "load-balancer-named": 1,
        "target-group": 1,
        "record": 2 + spec.masters.count,
        "iam-role": 2,
        "instance-profile": 2,
        "bucket": 1,
    }


def without(found: dict[str, list[dict[str, Any]]], *kinds: str) -> dict[str, int]:
    return {kind: n for kind, n in counts(found).items() if kind not in kinds}
