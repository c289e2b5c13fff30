"""The cluster's network in EC2: VPC, subnets, gateways, routes and security groups.

``ensure_*`` look every resource up by its tags (or, for security groups, by their name, unique
per VPC) before creating it, and create it with its tags; ``delete_*`` remove everything tagged
for the cluster, waiting while AWS still holds on (NAT gateways take a minute to go, a deleted
load balancer's network interfaces linger in its subnets and groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Final, cast

from temporalio import activity

from activities.aws import resources
from activities.aws.context import NOT_FOUND, AwsContext, Obj, call, changed, do, filters, name_of, outcome, worse
from activities.aws.resources import Kind, Part
from models.errors import Conflict, InvalidInput, MissingPrerequisite, NotReady
from models.naming import CLUSTER_LABEL, ROLE_LABEL
from models.provider import ResourceChange, ResourceOutcome

SECURITY_GROUPS: Final = (Part.MASTERS_GROUP, Part.WORKERS_GROUP, Part.LB_GROUP)


@dataclass(frozen=True)
class Network:
    """The foundation a node or the endpoint is placed into (looked up, never created, by them)."""

    vpc_id: str
    public: dict[str, str]  # zone -> subnet id
    private: dict[str, str]
    groups: dict[Part, str]


def ensure_vpc(c: AwsContext, outcomes: list[ResourceOutcome]) -> str:
    aws = resources.aws_settings(c.spec)
    desired = resources.ec2_tags(c.spec, Part.VPC, c.id)
    vpc = c.one(Kind.VPC, c.id, c.describe("describe_vpcs", "Vpcs", filters(c.spec, Part.VPC)), "VpcId")
    if vpc is None:
        vpc = cast(
            Obj,
            do(
                f"create VPC {c.id}",
                c.ec2.create_vpc,
                CidrBlock=aws.vpc_cidr,
                TagSpecifications=[{"ResourceType": "vpc", "Tags": resources.tag_list(desired)}],
            )["Vpc"],
        )
        change = ResourceChange.CREATED
    else:
        if vpc["CidrBlock"] != aws.vpc_cidr:
            raise InvalidInput(
                f"aws.vpc_cidr: VPC {vpc['VpcId']} of cluster {c.id} has {vpc['CidrBlock']}, the spec says "
                f"{aws.vpc_cidr}; a VPC's network cannot change"
            )
        change = changed(c.converge_tags(vpc["VpcId"], vpc.get("Tags"), desired))
    vpc_id = str(vpc["VpcId"])
    # DNS support and hostnames: instances resolve each other and the VPC endpoints' names.
    for attribute, response_key in (
        ("enableDnsSupport", "EnableDnsSupport"),
        ("enableDnsHostnames", "EnableDnsHostnames"),
    ):
        live: Obj = cast(
            Obj, do(f"read {attribute} of {vpc_id}", c.ec2.describe_vpc_attribute, VpcId=vpc_id, Attribute=attribute)
        )
        if not live.get(response_key, {}).get("Value"):
            do(
                f"enable {attribute} on {vpc_id}",
                c.ec2.modify_vpc_attribute,
                VpcId=vpc_id,
                **{response_key: {"Value": True}},
            )
            change = worse(change, ResourceChange.UPDATED)
    outcomes.append(outcome(Kind.VPC, c.id, change))
    return vpc_id


def ensure_internet_gateway(c: AwsContext, vpc_id: str, outcomes: list[ResourceOutcome]) -> str:
    desired = resources.ec2_tags(c.spec, Part.INTERNET_GATEWAY, c.id)
    found = c.describe("describe_internet_gateways", "InternetGateways", filters(c.spec, Part.INTERNET_GATEWAY))
    igw = c.one(Kind.INTERNET_GATEWAY, c.id, found, "InternetGatewayId")
    if igw is None:
        igw = cast(
            Obj,
            do(
                f"create internet gateway {c.id}",
                c.ec2.create_internet_gateway,
                TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": resources.tag_list(desired)}],
            )["InternetGateway"],
        )
        change = ResourceChange.CREATED
    else:
        tagged = c.converge_tags(igw["InternetGatewayId"], igw.get("Tags"), desired)
        change = changed(tagged)
    igw_id = str(igw["InternetGatewayId"])
    attached = {a["VpcId"] for a in igw.get("Attachments") or [] if a.get("State") in ("attached", "available")}
    if vpc_id not in attached:
        if attached:
            raise Conflict(
                f"internet gateway {igw_id} of cluster {c.id} is attached to {sorted(attached)}, not {vpc_id}"
            )
        call(
            f"attach internet gateway {igw_id} to {vpc_id}",
            c.ec2.attach_internet_gateway,
            ok={"Resource.AlreadyAssociated"},
            InternetGatewayId=igw_id,
            VpcId=vpc_id,
        )
        change = worse(change, ResourceChange.UPDATED)
    outcomes.append(outcome(Kind.INTERNET_GATEWAY, c.id, change))
    return igw_id


def ensure_subnets(
    c: AwsContext, vpc_id: str, outcomes: list[ResourceOutcome]
) -> tuple[dict[str, str], dict[str, str]]:
    public: dict[str, str] = {}
    private: dict[str, str] = {}
    for plan in resources.subnet_plan(c.spec):
        for part, cidr, ids in (
            (Part.PUBLIC_SUBNET, plan.public, public),
            (Part.PRIVATE_SUBNET, plan.private, private),
        ):
            name = resources.subnet_name(c.spec, part, plan.zone)
            desired = resources.subnet_tags(c.spec, part, plan.zone)
            where = [*filters(c.spec, part, **{resources.ZONE_TAG: plan.zone}), {"Name": "vpc-id", "Values": [vpc_id]}]
            subnet = c.one(Kind.SUBNET, name, c.describe("describe_subnets", "Subnets", where), "SubnetId")
            if subnet is None:
                subnet = cast(
                    Obj,
                    do(
                        f"create subnet {name} ({cidr})",
                        c.ec2.create_subnet,
                        VpcId=vpc_id,
                        CidrBlock=cidr,
                        AvailabilityZone=plan.zone,
                        TagSpecifications=[{"ResourceType": "subnet", "Tags": resources.tag_list(desired)}],
                    )["Subnet"],
                )
                change = ResourceChange.CREATED
            else:
                if subnet["CidrBlock"] != cidr:
                    raise InvalidInput(
                        f"subnet {name} ({subnet['SubnetId']}) has {subnet['CidrBlock']}, expected {cidr}: "
                        "the VPC's subnet layout cannot change"
                    )
                tagged = c.converge_tags(subnet["SubnetId"], subnet.get("Tags"), desired)
                change = changed(tagged)
            ids[plan.zone] = str(subnet["SubnetId"])
            outcomes.append(outcome(Kind.SUBNET, name, change))
    return public, private


def ensure_route_table(
    c: AwsContext,
    vpc_id: str,
    part: Part,
    zone: str | None,
    target: dict[str, str],
    subnets: dict[str, str],
    outcomes: list[ResourceOutcome],
) -> None:
    """A route table whose default route goes to ``target``, associated with ``subnets``."""
    name = f"{c.id}-public" if zone is None else f"{c.id}-private-{zone}"
    extra = {} if zone is None else {resources.ZONE_TAG: zone}
    desired = resources.ec2_tags(c.spec, part, name, **extra)
    where = [*filters(c.spec, part, **extra), {"Name": "vpc-id", "Values": [vpc_id]}]
    table = c.one(Kind.ROUTE_TABLE, name, c.describe("describe_route_tables", "RouteTables", where), "RouteTableId")
    if table is None:
        table = cast(
            Obj,
            do(
                f"create route table {name}",
                c.ec2.create_route_table,
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "route-table", "Tags": resources.tag_list(desired)}],
            )["RouteTable"],
        )
        change = ResourceChange.CREATED
    else:
        tagged = c.converge_tags(table["RouteTableId"], table.get("Tags"), desired)
        change = changed(tagged)
    table_id = str(table["RouteTableId"])
    default = next((rt for rt in table.get("Routes") or [] if rt.get("DestinationCidrBlock") == "0.0.0.0/0"), None)
    ((target_key, target_id),) = target.items()
    if default is None:
        call(
            f"route 0.0.0.0/0 of {name} to {target_id}",
            c.ec2.create_route,
            ok={"RouteAlreadyExists"},
            RouteTableId=table_id,
            DestinationCidrBlock="0.0.0.0/0",
            **{target_key: target_id},
        )
        change = worse(change, ResourceChange.UPDATED)
    elif default.get(target_key) != target_id or default.get("State") == "blackhole":
        do(
            f"route 0.0.0.0/0 of {name} to {target_id}",
            c.ec2.replace_route,
            RouteTableId=table_id,
            DestinationCidrBlock="0.0.0.0/0",
            **{target_key: target_id},
        )
        change = worse(change, ResourceChange.UPDATED)
    for subnet_id in subnets.values():
        if _associate(c, table_id, subnet_id):
            change = worse(change, ResourceChange.UPDATED)
    outcomes.append(outcome(Kind.ROUTE_TABLE, name, change))


def _associate(c: AwsContext, table_id: str, subnet_id: str) -> bool:
    """Associate a subnet with a route table (moving it from another table); False if it was."""
    where = [{"Name": "association.subnet-id", "Values": [subnet_id]}]
    for table in c.describe("describe_route_tables", "RouteTables", where):
        for association in table.get("Associations") or []:
            if association.get("SubnetId") != subnet_id:
                continue
            if table["RouteTableId"] == table_id:
                return False
            do(
                f"move subnet {subnet_id} to route table {table_id}",
                c.ec2.replace_route_table_association,
                AssociationId=association["RouteTableAssociationId"],
                RouteTableId=table_id,
            )
            return True
    do(
        f"associate subnet {subnet_id} with {table_id}",
        c.ec2.associate_route_table,
        RouteTableId=table_id,
        SubnetId=subnet_id,
    )
    return True


def _nat_gateways(c: AwsContext, zone: str | None = None) -> list[Obj]:
    extra = {} if zone is None else {resources.ZONE_TAG: zone}
    where = [*filters(c.spec, Part.NAT_GATEWAY, **extra), {"Name": "state", "Values": ["pending", "available"]}]
    return c.describe("describe_nat_gateways", "NatGateways", where, param="Filter")


def ensure_nat_gateway(c: AwsContext, zone: str, subnet_id: str, outcomes: list[ResourceOutcome]) -> str:
    """A NAT gateway per zone with its own address: private nodes reach registries, S3 and
    Secrets Manager, and one zone's outage never cuts another zone's egress."""
    name = f"{c.id}-nat-{zone}"
    address_tags = resources.ec2_tags(c.spec, Part.NAT_ADDRESS, name, **{resources.ZONE_TAG: zone})
    addresses = c.describe(
        "describe_addresses", "Addresses", filters(c.spec, Part.NAT_ADDRESS, **{resources.ZONE_TAG: zone})
    )
    address = c.one(Kind.ELASTIC_IP, name, addresses, "AllocationId")
    if address is None:
        address = cast(
            Obj,
            do(
                f"allocate address {name}",
                c.ec2.allocate_address,
                Domain="vpc",
                TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": resources.tag_list(address_tags)}],
            ),
        )
        outcomes.append(outcome(Kind.ELASTIC_IP, name, ResourceChange.CREATED))
    else:
        tagged = c.converge_tags(address["AllocationId"], address.get("Tags"), address_tags)
        outcomes.append(outcome(Kind.ELASTIC_IP, name, changed(tagged)))
    desired = resources.ec2_tags(c.spec, Part.NAT_GATEWAY, name, **{resources.ZONE_TAG: zone})
    nat = c.one(Kind.NAT_GATEWAY, name, _nat_gateways(c, zone), "NatGatewayId")
    if nat is None:
        nat = cast(
            Obj,
            do(
                f"create NAT gateway {name}",
                c.ec2.create_nat_gateway,
                SubnetId=subnet_id,
                AllocationId=address["AllocationId"],
                ConnectivityType="public",
                TagSpecifications=[{"ResourceType": "natgateway", "Tags": resources.tag_list(desired)}],
            )["NatGateway"],
        )
        change = ResourceChange.CREATED
    else:
        tagged = c.converge_tags(nat["NatGatewayId"], nat.get("Tags"), desired)
        change = changed(tagged)
    nat_id = str(nat["NatGatewayId"])
    if nat.get("State") != "available":
        # A route to a NAT gateway that is still pending would send traffic nowhere for minutes.
        c.wait(
            f"NAT gateway {name} ({nat_id}) to become available",
            lambda: _nat_pending(c, nat_id),
            c.instance_timeout,
        )
    outcomes.append(outcome(Kind.NAT_GATEWAY, name, change))
    return nat_id


def _nat_pending(c: AwsContext, nat_id: str) -> str | None:
    found = do(f"read NAT gateway {nat_id}", c.ec2.describe_nat_gateways, NatGatewayIds=[nat_id])["NatGateways"]
    state = found[0].get("State", "gone") if found else "gone"
    if state == "available":
        return None
    if state in ("failed", "deleted", "deleting", "gone"):
        reason = found[0].get("FailureMessage", "") if found else ""
        raise NotReady(f"NAT gateway {nat_id} is {state} {reason}; a new one is created on retry")
    return f"state {state}"


def ensure_security_groups(c: AwsContext, vpc_id: str, outcomes: list[ResourceOutcome]) -> dict[Part, str]:
    """The three groups first (rules refer to each other), then each group's ingress rules."""
    ids: dict[Part, str] = {}
    changes: dict[Part, ResourceChange] = {}
    for part in SECURITY_GROUPS:
        name = resources.security_group_name(c.spec, part)
        desired = resources.ec2_tags(c.spec, part, name)
        group = _security_group(c, vpc_id, name)
        if group is None:
            created = call(
                f"create security group {name}",
                c.ec2.create_security_group,
                ok={"InvalidGroup.Duplicate"},
                GroupName=name,
                Description=f"tenantctl {c.id}: {part.value.replace('-', ' ')}",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": resources.tag_list(desired)}],
            )
            if created is not None:
                ids[part], changes[part] = str(created["GroupId"]), ResourceChange.CREATED
                continue
            group = _security_group(c, vpc_id, name)  # made meanwhile (names are unique per VPC)
            if group is None:
                raise NotReady(f"security group {name} was reported to exist but cannot be read yet")
        if (why := resources.foreign(resources.tag_dict(group.get("Tags")), c.spec)) is not None:
            raise Conflict(f"security group {name} in {vpc_id} is not tenantctl's for cluster {c.id} ({why})")
        tagged = c.converge_tags(group["GroupId"], group.get("Tags"), desired)
        ids[part], changes[part] = (
            str(group["GroupId"]),
            changed(tagged),
        )
    for part in SECURITY_GROUPS:
        if _converge_rules(c, part, ids):
            changes[part] = worse(changes[part], ResourceChange.UPDATED)
        outcomes.append(outcome(Kind.SECURITY_GROUP, resources.security_group_name(c.spec, part), changes[part]))
    return ids


def _security_group(c: AwsContext, vpc_id: str, name: str) -> Obj | None:
    where = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
    found = c.describe("describe_security_groups", "SecurityGroups", where)
    return found[0] if found else None


def _converge_rules(c: AwsContext, part: Part, ids: dict[Part, str]) -> bool:
    """Ingress rules exactly as desired: missing ones added, others' ones revoked (drift)."""
    group_id = ids[part]
    missing, extra = rule_drift(c, part, ids)
    name = resources.security_group_name(c.spec, part)
    if missing:
        call(
            f"allow {len(missing)} rules into {name}",
            c.ec2.authorize_security_group_ingress,
            ok={"InvalidPermission.Duplicate"},
            GroupId=group_id,
            IpPermissions=[resources.ip_permission(rule, ids) for rule in sorted(missing)],
        )
    if extra:
        activity.logger.warning("security group %s: revoking %d rules tenantctl did not make", name, len(extra))
        call(
            f"revoke {len(extra)} foreign rules of {name}",
            c.ec2.revoke_security_group_ingress,
            ok={"InvalidPermission.NotFound"},
            GroupId=group_id,
            SecurityGroupRuleIds=extra,
        )
    return bool(missing or extra)


def rule_drift(c: AwsContext, part: Part, ids: dict[Part, str]) -> tuple[list[resources.Rule], list[str]]:
    """The desired ingress rules of ``part``'s group that are missing, and the ids of live ones
    nothing desired explains (for ``_converge_rules`` and the drift check alike)."""
    group_id = ids[part]
    parts_by_id = {group: p for p, group in ids.items()}
    live = [
        rule
        for rule in c.describe(
            "describe_security_group_rules", "SecurityGroupRules", [{"Name": "group-id", "Values": [group_id]}]
        )
        if not rule.get("IsEgress")
    ]

    def key(rule: Obj) -> tuple[str, int, int, str]:
        referenced = (rule.get("ReferencedGroupInfo") or {}).get("GroupId")
        if referenced:
            source = f"group:{parts_by_id[referenced].value}" if referenced in parts_by_id else f"group-id:{referenced}"
        else:
            source = f"cidr:{rule.get('CidrIpv4') or rule.get('CidrIpv6') or rule.get('PrefixListId')}"
        return (str(rule.get("IpProtocol")), int(rule.get("FromPort", -1)), int(rule.get("ToPort", -1)), source)

    desired = {rule.key: rule for rule in resources.ingress_rules(c.spec, part)}
    have = {key(rule): rule for rule in live}
    missing = [rule for k, rule in desired.items() if k not in have]
    extra = [str(rule["SecurityGroupRuleId"]) for k, rule in have.items() if k not in desired]
    return missing, extra


def find_network(c: AwsContext) -> Network:
    """The cluster's VPC, subnets and groups, or InvalidInput when the foundation is missing."""
    vpc = c.one(Kind.VPC, c.id, c.describe("describe_vpcs", "Vpcs", filters(c.spec, Part.VPC)), "VpcId")
    if vpc is None:
        # Every caller runs after the foundation step ensured the VPC: gone now means lost, not early.
        raise MissingPrerequisite(
            f"VPC tagged {CLUSTER_LABEL}={c.spec.id} is missing: it existed and was removed outside tenantctl, "
            "or the AWS endpoint lost its state (a restarted moto); ensuring the foundation again recreates it"
        )
    vpc_id = str(vpc["VpcId"])
    public: dict[str, str] = {}
    private: dict[str, str] = {}
    for subnet in c.describe("describe_subnets", "Subnets", [*filters(c.spec), {"Name": "vpc-id", "Values": [vpc_id]}]):
        subnet_tags = resources.tag_dict(subnet.get("Tags"))
        zone, part = subnet_tags.get(resources.ZONE_TAG, ""), subnet_tags.get(ROLE_LABEL)
        target = public if part == Part.PUBLIC_SUBNET else private if part == Part.PRIVATE_SUBNET else None
        if target is not None and (zone not in target or subnet["SubnetId"] < target[zone]):
            target[zone] = str(subnet["SubnetId"])
    groups: dict[Part, str] = {}
    for part in SECURITY_GROUPS:
        group = _security_group(c, vpc_id, resources.security_group_name(c.spec, part))
        if group is not None:
            groups[part] = str(group["GroupId"])
    zones = resources.aws_settings(c.spec).availability_zones
    missing = [f"public subnet in {z}" for z in zones if z not in public]
    missing += [f"private subnet in {z}" for z in zones if z not in private]
    missing += [
        f"security group {resources.security_group_name(c.spec, p)}" for p in SECURITY_GROUPS if p not in groups
    ]
    if missing:
        raise MissingPrerequisite(
            f"cluster {c.id}: {', '.join(missing)} missing: removed outside tenantctl, or the AWS endpoint lost its "
            "state (a restarted moto); ensuring the foundation again recreates them"
        )
    return Network(vpc_id=vpc_id, public=public, private=private, groups=groups)


def delete_nat_gateways(c: AwsContext) -> list[ResourceOutcome]:
    gateways = _nat_gateways(c)
    for nat in gateways:
        call(
            f"delete NAT gateway {nat['NatGatewayId']}",
            c.ec2.delete_nat_gateway,
            ok=NOT_FOUND,
            NatGatewayId=nat["NatGatewayId"],
        )
    if gateways:
        ids = [str(n["NatGatewayId"]) for n in gateways]

        def pending() -> str | None:
            found = c.describe(
                "describe_nat_gateways", "NatGateways", [{"Name": "nat-gateway-id", "Values": ids}], "Filter"
            )
            left = [
                f"{n['NatGatewayId']} {n.get('State')}" for n in found if n.get("State") not in ("deleted", "failed")
            ]
            return ", ".join(left) or None

        # Their addresses and the internet gateway stay in use until they are really gone.
        c.wait("NAT gateways to be deleted", pending, c.delete_timeout)
    if not gateways:
        return [outcome(Kind.NAT_GATEWAY, f"{c.id}-nat-*", ResourceChange.ABSENT)]
    return [outcome(Kind.NAT_GATEWAY, name_of(n, "NatGatewayId"), ResourceChange.DELETED) for n in gateways]


def release_addresses(c: AwsContext) -> list[ResourceOutcome]:
    addresses = c.describe("describe_addresses", "Addresses", filters(c.spec))
    for address in addresses:
        allocation = str(address["AllocationId"])
        c.delete_when_free(
            f"address {allocation}",
            partial(
                call, f"release address {allocation}", c.ec2.release_address, ok=NOT_FOUND, AllocationId=allocation
            ),
        )
    if not addresses:
        return [outcome(Kind.ELASTIC_IP, f"{c.id}-nat-*", ResourceChange.ABSENT)]
    return [outcome(Kind.ELASTIC_IP, name_of(a, "AllocationId"), ResourceChange.DELETED) for a in addresses]


def delete_internet_gateways(c: AwsContext) -> list[ResourceOutcome]:
    gateways = c.describe("describe_internet_gateways", "InternetGateways", filters(c.spec))
    for igw in gateways:
        igw_id = str(igw["InternetGatewayId"])
        for attachment in igw.get("Attachments") or []:
            vpc_id = attachment["VpcId"]
            c.delete_when_free(
                f"internet gateway {igw_id} attached to {vpc_id}",
                partial(
                    call,
                    f"detach {igw_id} from {vpc_id}",
                    c.ec2.detach_internet_gateway,
                    ok=NOT_FOUND,
                    InternetGatewayId=igw_id,
                    VpcId=vpc_id,
                ),
            )
        call(
            f"delete internet gateway {igw_id}",
            c.ec2.delete_internet_gateway,
            ok=NOT_FOUND,
            InternetGatewayId=igw_id,
        )
    if not gateways:
        return [outcome(Kind.INTERNET_GATEWAY, c.id, ResourceChange.ABSENT)]
    return [outcome(Kind.INTERNET_GATEWAY, name_of(g, "InternetGatewayId"), ResourceChange.DELETED) for g in gateways]


def delete_route_tables(c: AwsContext) -> list[ResourceOutcome]:
    tables = c.describe("describe_route_tables", "RouteTables", filters(c.spec))
    outcomes = []
    for table in tables:
        if any(a.get("Main") for a in table.get("Associations") or []):
            continue  # a VPC's main table goes with the VPC
        for association in table.get("Associations") or []:
            call(
                f"disassociate {association['RouteTableAssociationId']}",
                c.ec2.disassociate_route_table,
                ok=NOT_FOUND,
                AssociationId=association["RouteTableAssociationId"],
            )
        table_id = str(table["RouteTableId"])
        c.delete_when_free(
            f"route table {table_id}",
            partial(
                call, f"delete route table {table_id}", c.ec2.delete_route_table, ok=NOT_FOUND, RouteTableId=table_id
            ),
        )
        outcomes.append(outcome(Kind.ROUTE_TABLE, name_of(table, "RouteTableId"), ResourceChange.DELETED))
    return outcomes or [outcome(Kind.ROUTE_TABLE, f"{c.id}-*", ResourceChange.ABSENT)]


def delete_subnets(c: AwsContext) -> list[ResourceOutcome]:
    subnets = c.describe("describe_subnets", "Subnets", filters(c.spec))
    for subnet in subnets:
        subnet_id = str(subnet["SubnetId"])
        # A deleted load balancer's network interfaces stay in its subnets for a while.
        c.delete_when_free(
            f"subnet {subnet_id}",
            partial(call, f"delete subnet {subnet_id}", c.ec2.delete_subnet, ok=NOT_FOUND, SubnetId=subnet_id),
        )
    if not subnets:
        return [outcome(Kind.SUBNET, f"{c.id}-*", ResourceChange.ABSENT)]
    return [outcome(Kind.SUBNET, name_of(s, "SubnetId"), ResourceChange.DELETED) for s in subnets]


def delete_security_groups(c: AwsContext) -> list[ResourceOutcome]:
    """Rules that refer to other groups first (a referenced group cannot be deleted), then
    the groups, waiting while network interfaces (instances, the load balancer) still use them."""
    groups = [
        g
        for g in c.describe("describe_security_groups", "SecurityGroups", filters(c.spec))
        if g.get("GroupName") != "default"
    ]
    for group in groups:
        group_id = str(group["GroupId"])
        rules = c.describe(
            "describe_security_group_rules", "SecurityGroupRules", [{"Name": "group-id", "Values": [group_id]}]
        )
        referencing = [
            str(rule["SecurityGroupRuleId"])
            for rule in rules
            if rule.get("ReferencedGroupInfo") and not rule.get("IsEgress")
        ]
        if referencing:
            call(
                f"revoke group references of {group_id}",
                c.ec2.revoke_security_group_ingress,
                ok={"InvalidPermission.NotFound", *NOT_FOUND},
                GroupId=group_id,
                SecurityGroupRuleIds=referencing,
            )
    for group in groups:
        group_id = str(group["GroupId"])
        c.delete_when_free(
            f"security group {group.get('GroupName')} ({group_id})",
            partial(
                call, f"delete security group {group_id}", c.ec2.delete_security_group, ok=NOT_FOUND, GroupId=group_id
            ),
        )
    if not groups:
        return [outcome(Kind.SECURITY_GROUP, f"{c.id}-*", ResourceChange.ABSENT)]
    return [outcome(Kind.SECURITY_GROUP, str(g.get("GroupName")), ResourceChange.DELETED) for g in groups]


def delete_vpcs(c: AwsContext) -> list[ResourceOutcome]:
    vpcs = c.describe("describe_vpcs", "Vpcs", filters(c.spec))
    for vpc in vpcs:
        vpc_id = str(vpc["VpcId"])
        c.delete_when_free(
            f"VPC {vpc_id}",
            partial(call, f"delete VPC {vpc_id}", c.ec2.delete_vpc, ok=NOT_FOUND, VpcId=vpc_id),
        )
    if not vpcs:
        return [outcome(Kind.VPC, c.id, ResourceChange.ABSENT)]
    return [outcome(Kind.VPC, name_of(v, "VpcId"), ResourceChange.DELETED) for v in vpcs]
