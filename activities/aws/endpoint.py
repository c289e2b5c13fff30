"""How the tenant API is reached: network load balancer, target group, listener and DNS records.

``api.<id>.<base>`` and ``*.ingress.<id>.<base>`` are aliases of the load balancer;
``master-<i>.etcd.<id>.<base>`` name the masters for etcd (written by ``ensure_node``). Records
are written with UPSERT, and only when they differ: a duplicate CREATE fails, UPSERT does not.
"""

from __future__ import annotations

import time
from typing import Any, Final, cast

from temporalio import activity

from activities.aws import network, resources
from activities.aws.context import NOT_FOUND, AwsContext, Obj, call, do, outcome, worse
from activities.aws.resources import Kind, Part
from models.errors import Conflict, MissingPrerequisite, NotReady
from models.naming import CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from models.provider import ResourceChange, ResourceOutcome

ELB_TAG_BATCH: Final = 20


def _rev_labels(name: str) -> tuple[str, ...]:
    return tuple(reversed(resources.fqdn(name).rstrip(".").split(".")))


def _elb_tags(c: AwsContext, arns: list[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(arns), ELB_TAG_BATCH):
        batch = arns[start : start + ELB_TAG_BATCH]
        for description in do("read load balancer tags", c.elb.describe_tags, ResourceArns=batch)["TagDescriptions"]:
            found[str(description["ResourceArn"])] = resources.tag_dict(list(description.get("Tags") or []))
    return found


def load_balancers(c: AwsContext) -> list[Obj]:
    """The cluster's API load balancers, by name; more than one only where moto made a second of
    the same name for a concurrent attempt (AWS returns the existing one instead)."""
    name = resources.elb_name(c.id)
    # All of them, filtered here: moto's lookup by name shows only the first of two of one name.
    pages = c.elb.get_paginator("describe_load_balancers").paginate()
    everyone = [lb for page in do("list load balancers", lambda: list(pages)) for lb in page["LoadBalancers"]]
    items = sorted(
        (lb for lb in everyone if lb["LoadBalancerName"] == name),
        key=lambda lb: (str(lb.get("CreatedTime", "")), str(lb["LoadBalancerArn"])),  # the oldest is kept
    )
    tags = _elb_tags(c, [str(lb["LoadBalancerArn"]) for lb in items])
    for lb in items:
        if (why := resources.foreign(tags.get(lb["LoadBalancerArn"], {}), c.spec)) is not None:
            raise Conflict(f"load balancer {name} exists but is not tenantctl's for cluster {c.id} ({why})")
    return [cast(Obj, lb) for lb in items]


def load_balancer(c: AwsContext) -> Obj | None:
    found = load_balancers(c)
    return found[0] if found else None


def delete_load_balancers(c: AwsContext, lbs: list[Obj]) -> None:
    """Delete them (their listeners go with them) and wait until they are gone."""
    arns = {str(lb["LoadBalancerArn"]) for lb in lbs}
    for arn in sorted(arns):
        call(f"delete load balancer {arn}", c.elb.delete_load_balancer, ok=NOT_FOUND, LoadBalancerArn=arn)

    def pending() -> str | None:
        left = sorted(arns & {str(lb["LoadBalancerArn"]) for lb in load_balancers(c)})
        return ", ".join(left) or None

    c.wait(f"load balancer {resources.elb_name(c.id)} to be deleted", pending, c.delete_timeout)


def target_group(c: AwsContext) -> Obj | None:
    name = resources.elb_name(c.id)
    found = call(f"read target group {name}", c.elb.describe_target_groups, ok=NOT_FOUND, Names=[name])
    if not found or not found["TargetGroups"]:
        return None
    group = cast(Obj, found["TargetGroups"][0])
    if (
        why := resources.foreign(_elb_tags(c, [group["TargetGroupArn"]]).get(group["TargetGroupArn"], {}), c.spec)
    ) is not None:
        raise Conflict(f"target group {name} exists but is not tenantctl's for cluster {c.id} ({why})")
    return group


def ensure_target_group(c: AwsContext, network: network.Network, outcomes: list[ResourceOutcome]) -> str:
    """Masters' API servers on 6443, health-checked over TCP: the API refuses anonymous
    requests (``--anonymous-auth=false``), so an HTTPS check of /readyz would only see 401."""
    name = resources.elb_name(c.id)
    health = {
        "HealthCheckProtocol": "TCP",
        "HealthCheckPort": "traffic-port",
        "HealthCheckIntervalSeconds": 10,
        "HealthyThresholdCount": 2,
        "UnhealthyThresholdCount": 2,
    }
    group = target_group(c)
    if group is None:
        created = call(
            f"create target group {name}",
            c.elb.create_target_group,
            ok={"DuplicateTargetGroupName"},
            Name=name,
            Protocol="TCP",
            Port=resources.APISERVER_PORT,
            VpcId=network.vpc_id,
            TargetType="instance",
            Tags=resources.tag_list(resources.tags(c.spec, Part.API, name)),
            **health,
        )
        group = cast(Obj, created["TargetGroups"][0]) if created else target_group(c)
        if group is None:
            raise NotReady(f"target group {name} was reported to exist but cannot be read yet")
        change = ResourceChange.CREATED
    else:
        if group["VpcId"] != network.vpc_id or group["Port"] != resources.APISERVER_PORT or group["Protocol"] != "TCP":
            raise Conflict(
                f"target group {name} forwards {group['Protocol']}:{group['Port']} in {group['VpcId']}, "
                f"not TCP:{resources.APISERVER_PORT} in {network.vpc_id}; delete it to have it made again"
            )
        change = _converge_elb_tags(c, group["TargetGroupArn"], resources.tags(c.spec, Part.API, name))
        if any(group.get(key) != value for key, value in health.items()):
            do(
                f"reset health checks of {name}",
                c.elb.modify_target_group,
                TargetGroupArn=group["TargetGroupArn"],
                **health,
            )
            change = worse(change, ResourceChange.UPDATED)
    arn = str(group["TargetGroupArn"])
    # Upgrades replace masters one by one: 30 s lets open API connections end without making
    # every replacement wait out the 300 s default.
    attributes = {"deregistration_delay.timeout_seconds": "30"}
    if _converge_elb_attributes(c, arn, attributes, target_group=True):
        change = worse(change, ResourceChange.UPDATED)
    outcomes.append(outcome(Kind.TARGET_GROUP, name, change))
    return arn


def ensure_load_balancer(c: AwsContext, network: network.Network, outcomes: list[ResourceOutcome]) -> Obj:
    name = resources.elb_name(c.id)
    subnets = sorted(network.public.values())
    groups = [network.groups[Part.LB_GROUP]]
    found = load_balancers(c)
    if len(found) > 1:
        activity.logger.warning("load balancer %s exists %d times: deleting the extra ones", name, len(found))
        delete_load_balancers(c, found[1:])
    lb = found[0] if found else None
    if lb is None:
        created = call(
            f"create load balancer {name}",
            c.elb.create_load_balancer,
            ok={"DuplicateLoadBalancerName"},
            Name=name,
            Subnets=subnets,
            SecurityGroups=groups,
            Scheme="internet-facing",
            Type="network",
            IpAddressType="ipv4",
            Tags=resources.tag_list(resources.tags(c.spec, Part.API, name)),
        )
        lb = cast(Obj, created["LoadBalancers"][0]) if created else load_balancer(c)
        if lb is None:
            raise NotReady(f"load balancer {name} was reported to exist but cannot be read yet")
        change = ResourceChange.CREATED
    else:
        if lb.get("Type") != "network" or lb.get("Scheme") != "internet-facing":
            raise Conflict(
                f"load balancer {name} is an {lb.get('Scheme')} {lb.get('Type')} load balancer, not an "
                "internet-facing network one; delete it to have it made again"
            )
        change = _converge_elb_tags(c, lb["LoadBalancerArn"], resources.tags(c.spec, Part.API, name))
        live_subnets = sorted(str(z["SubnetId"]) for z in lb.get("AvailabilityZones") or [])
        if live_subnets != subnets:
            do(
                f"place {name} in {subnets}",
                c.elb.set_subnets,
                LoadBalancerArn=lb["LoadBalancerArn"],
                Subnets=subnets,
            )
            change = worse(change, ResourceChange.UPDATED)
        if sorted(lb.get("SecurityGroups") or []) != groups:
            do(
                f"set the security group of {name}",
                c.elb.set_security_groups,
                LoadBalancerArn=lb["LoadBalancerArn"],
                SecurityGroups=groups,
            )
            change = worse(change, ResourceChange.UPDATED)
    # Cross-zone: every zone's load balancer node reaches every master, whatever the zone count.
    if _converge_elb_attributes(c, lb["LoadBalancerArn"], {"load_balancing.cross_zone.enabled": "true"}):
        change = worse(change, ResourceChange.UPDATED)
    outcomes.append(outcome(Kind.LOAD_BALANCER, name, change))
    return lb


def ensure_listener(c: AwsContext, lb: Obj, target_group: str, outcomes: list[ResourceOutcome]) -> None:
    name = f"{resources.elb_name(c.id)}:{resources.API_PORT}"
    action = [{"Type": "forward", "TargetGroupArn": target_group}]
    listeners = do(f"read listeners of {name}", c.elb.describe_listeners, LoadBalancerArn=lb["LoadBalancerArn"])
    live = next((ln for ln in listeners["Listeners"] if ln.get("Port") == resources.API_PORT), None)
    if live is None:
        do(
            f"create listener {name}",
            c.elb.create_listener,
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="TCP",
            Port=resources.API_PORT,
            DefaultActions=action,
            Tags=resources.tag_list(resources.tags(c.spec, Part.API, name)),
        )
        change = ResourceChange.CREATED
    elif (
        live.get("Protocol") != "TCP"
        or [
            {"Type": a.get("Type"), "TargetGroupArn": a.get("TargetGroupArn")} for a in live.get("DefaultActions") or []
        ]
        != action
    ):
        do(
            f"reset listener {name}",
            c.elb.modify_listener,
            ListenerArn=live["ListenerArn"],
            Protocol="TCP",
            DefaultActions=action,
        )
        change = ResourceChange.UPDATED
    else:
        change = ResourceChange.UNCHANGED
    outcomes.append(outcome(Kind.LISTENER, name, change))


def _converge_elb_tags(c: AwsContext, arn: str, desired: dict[str, str]) -> ResourceChange:
    missing = resources.missing_tags(_elb_tags(c, [arn]).get(arn, {}), desired)
    if not missing:
        return ResourceChange.UNCHANGED
    do(f"tag {arn}", c.elb.add_tags, ResourceArns=[arn], Tags=resources.tag_list(missing))
    return ResourceChange.UPDATED


def _converge_elb_attributes(c: AwsContext, arn: str, desired: dict[str, str], target_group: bool = False) -> bool:
    if target_group:
        live = do(f"read attributes of {arn}", c.elb.describe_target_group_attributes, TargetGroupArn=arn)["Attributes"]
    else:
        live = do(f"read attributes of {arn}", c.elb.describe_load_balancer_attributes, LoadBalancerArn=arn)[
            "Attributes"
        ]
    have = {str(a.get("Key")): str(a.get("Value")) for a in live}
    changed = [{"Key": key, "Value": value} for key, value in desired.items() if have.get(key) != value]
    if not changed:
        return False
    if target_group:
        do(f"set attributes of {arn}", c.elb.modify_target_group_attributes, TargetGroupArn=arn, Attributes=changed)
    else:
        do(
            f"set attributes of {arn}",
            c.elb.modify_load_balancer_attributes,
            LoadBalancerArn=arn,
            Attributes=changed,
        )
    return True


def hosted_zone(c: AwsContext) -> str | None:
    """The public hosted zone of the base domain; of several, the lowest id (deterministic)."""
    domain = resources.fqdn(c.spec.base_domain)
    found: list[str] = []
    options: dict[str, Any] = {"DNSName": domain}
    while True:
        page = do(f"find hosted zone {domain}", c.route53.list_hosted_zones_by_name, **options)
        zones = page["HostedZones"]
        found += [
            str(z["Id"]).rsplit("/", 1)[-1]
            for z in zones
            if resources.fqdn(z["Name"]) == domain and not z.get("Config", {}).get("PrivateZone")
        ]
        past = any(resources.fqdn(z["Name"]) != domain for z in zones)
        if past or not page.get("IsTruncated"):
            break
        options = {"DNSName": page["NextDNSName"], "HostedZoneId": page["NextHostedZoneId"]}
    if len(found) > 1:
        activity.logger.warning("%d public hosted zones named %s: using %s", len(found), domain, sorted(found)[0])
    return sorted(found)[0] if found else None


def require_zone(c: AwsContext) -> str:
    zone_id = hosted_zone(c)
    if zone_id is None:
        raise MissingPrerequisite(
            f"hosted zone {c.spec.base_domain} is missing: not made yet, removed outside tenantctl, or the AWS "
            "endpoint lost its state (a restarted moto); ensuring the endpoint (again) makes it"
        )
    return zone_id


def ensure_hosted_zone(c: AwsContext, outcomes: list[ResourceOutcome]) -> str:
    """The base domain's public zone, made when missing.

    Made, not required: a new platform (and the local stack, whose moto starts empty) has no
    zone yet, and without one the API name cannot exist. It is shared by every cluster of
    the base domain, so it carries no cluster tag and no teardown deletes it; someone must
    delegate it (its NS records) from the parent domain once, which the log says.
    """
    domain = c.spec.base_domain
    zone_id = hosted_zone(c)
    if zone_id is not None:
        outcomes.append(outcome(Kind.HOSTED_ZONE, domain, ResourceChange.UNCHANGED))
        return zone_id
    created = do(
        f"create hosted zone {domain}",
        c.route53.create_hosted_zone,
        Name=domain,
        CallerReference=f"tenantctl-{domain}-{time.time_ns()}",
        HostedZoneConfig={"Comment": "base domain of tenantctl clusters", "PrivateZone": False},
    )
    zone_id = str(created["HostedZone"]["Id"]).rsplit("/", 1)[-1]
    do(
        f"tag hosted zone {domain}",
        c.route53.change_tags_for_resource,
        ResourceType="hostedzone",
        ResourceId=zone_id,
        AddTags=resources.tag_list({MANAGED_BY_LABEL: MANAGED_BY, "tenantctl.io/base-domain": domain}),
    )
    servers = created.get("DelegationSet", {}).get("NameServers", [])
    activity.logger.warning(
        "created hosted zone %s (%s): delegate it from its parent domain (NS %s)",
        domain,
        zone_id,
        ", ".join(servers),
    )
    outcomes.append(outcome(Kind.HOSTED_ZONE, domain, ResourceChange.CREATED))
    # Another attempt may have made one at the same moment (moto ignores CallerReference):
    # everyone uses the lowest id, so the names all end up in one zone.
    return hosted_zone(c) or zone_id


def cluster_records(c: AwsContext, zone_id: str, only: str | None = None) -> list[Obj]:
    """Records at or below the cluster's domain (``only``: that one name).

    Route53 lists records in reverse-label order from ``StartRecordName``, so a cluster's
    records are one stretch: the listing stops at the first name past it.
    """
    domain = resources.fqdn(only or c.spec.cluster_domain)
    stop = _rev_labels(domain)
    found: list[Obj] = []
    options: dict[str, Any] = {"HostedZoneId": zone_id, "StartRecordName": domain}
    while True:
        page = do(f"list records of {domain}", c.route53.list_resource_record_sets, **options)
        for record in page["ResourceRecordSets"]:
            name = resources.fqdn(record["Name"])
            if name == domain or (only is None and resources.in_cluster_domain(c.spec, name)):
                found.append({**record, "Name": name})
            elif _rev_labels(name)[: len(stop)] > stop:
                return found
        if not page.get("IsTruncated"):
            return found
        options = {
            "HostedZoneId": zone_id,
            "StartRecordName": page["NextRecordName"],
            "StartRecordType": page["NextRecordType"],
        }


def upsert_records(c: AwsContext, zone_id: str, desired: list[Obj]) -> list[ResourceOutcome]:
    """UPSERT only what differs (UPSERT is idempotent; a duplicate CREATE would fail)."""
    outcomes, changes = [], []
    for record in desired:
        name = resources.fqdn(record["Name"])
        live = next((x for x in cluster_records(c, zone_id, only=name) if x["Type"] == record["Type"]), None)
        if live is not None and _same_record(live, record):
            outcomes.append(outcome(Kind.RECORD, name, ResourceChange.UNCHANGED))
            continue
        changes.append({"Action": "UPSERT", "ResourceRecordSet": {**record, "Name": name}})
        outcomes.append(outcome(Kind.RECORD, name, ResourceChange.CREATED if live is None else ResourceChange.UPDATED))
    if changes:
        do(
            f"write {len(changes)} records of {c.spec.cluster_domain}",
            c.route53.change_resource_record_sets,
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": f"tenantctl {c.id}", "Changes": changes},
        )
    return outcomes


def delete_records(c: AwsContext, zone_id: str, records: list[Obj]) -> list[ResourceOutcome]:
    """DELETE each record exactly as it was read (Route53 deletes only an exact match)."""
    outcomes = []
    for record in records:
        if record["Type"] in ("NS", "SOA") and resources.fqdn(record["Name"]) == resources.fqdn(c.spec.base_domain):
            continue  # the zone's own records, never a cluster's
        deleted = call(
            f"delete record {record['Name']} {record['Type']}",
            c.route53.change_resource_record_sets,
            ok={"InvalidChangeBatch", "InvalidInput"},  # gone meanwhile, or changed meanwhile: re-read
            HostedZoneId=zone_id,
            ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": record}]},
        )
        if deleted is None:
            again = [x for x in cluster_records(c, zone_id, only=record["Name"]) if x["Type"] == record["Type"]]
            if again:
                raise NotReady(f"record {record['Name']} {record['Type']} changed while being deleted; retrying")
        outcomes.append(
            outcome(Kind.RECORD, record["Name"], ResourceChange.DELETED if deleted else ResourceChange.ABSENT)
        )
    return outcomes


def tagged_elb_resources(c: AwsContext) -> list[tuple[Kind, str]]:
    """Load balancers and target groups of the region tagged for the cluster (listeners go
    with their load balancer)."""
    found: list[tuple[Kind, str]] = []
    lbs = [
        lb
        for page in do("list load balancers", lambda: list(c.elb.get_paginator("describe_load_balancers").paginate()))
        for lb in page["LoadBalancers"]
    ]
    groups = [
        tg
        for page in do("list target groups", lambda: list(c.elb.get_paginator("describe_target_groups").paginate()))
        for tg in page["TargetGroups"]
    ]
    arns = [str(lb["LoadBalancerArn"]) for lb in lbs] + [str(tg["TargetGroupArn"]) for tg in groups]
    tagged = _elb_tags(c, arns)
    for lb in lbs:
        if tagged.get(lb["LoadBalancerArn"], {}).get(CLUSTER_LABEL) == c.id:
            found.append((Kind.LOAD_BALANCER, str(lb["LoadBalancerName"])))
    for tg in groups:
        if tagged.get(tg["TargetGroupArn"], {}).get(CLUSTER_LABEL) == c.id:
            found.append((Kind.TARGET_GROUP, str(tg["TargetGroupName"])))
    return found


def _same_record(live: Obj, desired: Obj) -> bool:
    if "AliasTarget" in desired:
        have, want = live.get("AliasTarget") or {}, desired["AliasTarget"]
        return (
            bool(
                resources.fqdn(str(have.get("DNSName", "")))
                == resources.fqdn(str(want["DNSName"])).removeprefix("dualstack.")
                or resources.fqdn(str(have.get("DNSName", ""))).removeprefix("dualstack.")
                == resources.fqdn(str(want["DNSName"]))
            )
            and have.get("HostedZoneId") == want["HostedZoneId"]
        )
    values = sorted(v["Value"] for v in live.get("ResourceRecords") or [])
    return values == sorted(v["Value"] for v in desired["ResourceRecords"]) and live.get("TTL") == desired.get("TTL")
