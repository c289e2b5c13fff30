"""The AWS provider: a tenant cluster as EC2 instances in its own VPC (activities ``aws.*``).

The same contract as the KVM provider (``models.provider``), so the same workflows drive both:
``ensure_*`` reads what exists, creates what is missing and converges what drifted; ``*_absent``
deletes in reverse dependency order and treats "not found" as done. Names and tags come from
``activities.aws.resources``.

Idempotency comes from lookups, never from request tokens: every resource is looked up by its
tags (or its deterministic name) before anything is created, and created *with* its tags, so a
retried or resumed activity finds what an earlier attempt made. EC2 ``ClientToken`` is not relied
on: moto ignores it and AWS honours it only for a while (botocore still sends one per call, which
keeps its own transport retries of ``RunInstances`` from launching twice).

Nodes are one instance per node name, launched from a per-role launch template whose versions are
one per Kubernetes version (and configuration). Workers are not an auto scaling group: the
provider contract addresses nodes by name (``ensure_node``, ``restart_node``, the upgrade's
replace-one-then-the-next), an ASG names nothing and replaces instances on its own schedule, and
two controllers of one set of instances fight. The launch template still gives AWS the whole
picture of a node (an ASG could adopt it later).

Errors: AWS calls run under ``activities.common.errors.classify`` (access denied -> Forbidden, invalid
parameters -> InvalidInput, limits -> QuotaExceeded); throttling and 5xx stay retryable (botocore
retries them first, then the activity's retry policy).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from botocore.exceptions import BotoCoreError, ClientError
from temporalio import activity

from activities.aws import access, endpoint, network, resources
from activities.aws.context import (
    NOT_FOUND,
    AwsContext,
    Obj,
    call,
    code,
    do,
    filters,
    message,
    name_of,
    outcome,
    tagged_as,
    worse,
)
from activities.aws.key_pairs import SecretsManagerSink
from activities.aws.resources import Kind, Part
from activities.common.errors import classify
from activities.common.waits import wait_for_nodes
from activities.providers.contract import AdminCredentials, SimulatedNodes, admin_credentials_from
from models.drift import Backend, DriftItem, DriftKind, DriftReport, ObserveInput
from models.errors import Conflict, InvalidInput, MissingPrerequisite, NotReady, PermanentError
from models.naming import NODE_LABEL, ROLE_LABEL, VERSION_LABEL, aws_secret_name, node_order, node_role
from models.provider import (
    ClusterRef,
    EnsureResult,
    NodeObservation,
    NodeRef,
    NodesResult,
    ResourceChange,
    ResourceList,
    ResourceOutcome,
    WaitNodesInput,
)
from models.spec import ClusterSpec, Provider
from models.versions import normalize_version

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from worker.clients import AwsClients

POLL_INTERVAL_SECONDS: Final = 2.0
"""Waits look at once, then back off from 0.1 s to this interval (``activities.common.waits``)."""
INSTANCE_WAIT_SECONDS: Final = 480.0
"""One attempt waits this long for instances to stop or start (below the 10-minute start-to-close)."""
DELETE_WAIT_SECONDS: Final = 600.0
"""One attempt of a removal waits this long for AWS to let go (NAT gateways, ENIs of a deleted
load balancer), then fails retryably naming what is left (below the 15-minute start-to-close)."""


class AwsProvider:
    """Activities ``aws.*``: one tenant cluster's VPC, endpoint and node instances in AWS.

    Its operations are the provider contract's (``activities.providers.contract``), registered
    under ``aws.<operation>``; its key pairs live in Secrets Manager (``SecretsManagerSink``, in the
    worker's region), where the tenant API's admin key pair is read from too. ``simulated_nodes``
    (local stack only: moto runs no kubelet) hears of every node ensured or removed.
    """

    provider: Final = Provider.AWS

    def __init__(
        self,
        clients: AwsClients,
        *,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        simulated_nodes: SimulatedNodes | None = None,
        instance_timeout: float = INSTANCE_WAIT_SECONDS,
        delete_timeout: float = DELETE_WAIT_SECONDS,
    ) -> None:
        self.clients = clients
        self.poll_interval = poll_interval
        self.simulated_nodes = simulated_nodes
        self.instance_timeout = instance_timeout
        self.delete_timeout = delete_timeout
        self._lock = threading.Lock()
        self._accounts: dict[str, str] = {}
        self.key_pairs = SecretsManagerSink(self._secrets_client())

    def tenant_admin_credentials(self, spec: ClusterSpec) -> AdminCredentials:
        """The admin key pair from its Secrets Manager entry ``tenantctl/<id>/admin``."""
        return admin_credentials_from(self.key_pairs, spec)

    # --- clients ---------------------------------------------------------------------------------
    def _client(self, service: str, region: str) -> Any:
        return self.clients.client(service, region)

    def _context(self, spec: ClusterSpec) -> AwsContext:
        region = resources.aws_settings(spec).region  # refuses a KVM spec before anything is touched
        return AwsContext(
            spec=spec,
            region=region,
            account=self._account(region),
            partition=str(self.clients.session.get_partition_for_region(region)),
            secrets_region=self._secrets_region,
            ec2=cast("EC2Client", self._client("ec2", region)),
            elb=cast("ElasticLoadBalancingv2Client", self._client("elbv2", region)),
            s3=cast("S3Client", self._client("s3", region)),
            iam=cast("IAMClient", self._client("iam", region)),
            route53=cast("Route53Client", self._client("route53", region)),
            poll_interval=self.poll_interval,
            instance_timeout=self.instance_timeout,
            delete_timeout=self.delete_timeout,
        )

    def _account(self, region: str) -> str:
        account = self._accounts.get(region)
        if account is None:
            sts = self._client("sts", region)
            account = str(do("read the AWS account id", sts.get_caller_identity)["Account"])
            self._accounts[region] = account
        return account

    @property
    def _secrets_region(self) -> str:
        """Where the certificate sink writes: the worker's region (the sink knows no spec)."""
        return str(self.clients.session.region_name)

    def _secrets_client(self) -> SecretsManagerClient:
        return cast("SecretsManagerClient", self._client("secretsmanager", self._secrets_region))

    # --- activities: foundation ------------------------------------------------------------------
    def ensure_foundation(self, input: ClusterRef) -> EnsureResult:
        """VPC, subnets, internet and NAT gateways, routes, security groups, IAM and the bucket."""
        c = self._context(input.spec)
        outcomes: list[ResourceOutcome] = []
        vpc_id = network.ensure_vpc(c, outcomes)
        igw_id = network.ensure_internet_gateway(c, vpc_id, outcomes)
        public, private = network.ensure_subnets(c, vpc_id, outcomes)
        network.ensure_route_table(c, vpc_id, Part.PUBLIC_ROUTES, None, {"GatewayId": igw_id}, public, outcomes)
        for zone, subnet_id in public.items():
            nat_id = network.ensure_nat_gateway(c, zone, subnet_id, outcomes)
            network.ensure_route_table(
                c, vpc_id, Part.PRIVATE_ROUTES, zone, {"NatGatewayId": nat_id}, {zone: private[zone]}, outcomes
            )
        network.ensure_security_groups(c, vpc_id, outcomes)
        bucket = access.ensure_bucket(c, outcomes)
        for role in resources.ROLES:
            access.ensure_node_identity(c, role, bucket, outcomes)
        return EnsureResult(outcomes=outcomes)

    def ensure_foundation_absent(self, input: ClusterRef) -> EnsureResult:
        """Everything ``ensure_foundation`` made, in reverse dependency order, waiting where AWS
        must let go first: instances before their groups, NAT gateways before their addresses and
        the internet gateway, the load balancer's network interfaces before subnets and groups."""
        c = self._context(input.spec)
        outcomes: list[ResourceOutcome] = []
        # Nodes are removed one by one before this; whatever is left (a node nobody knew of)
        # still holds the security groups and subnets, so it goes first.
        leftovers = self._instances(c, node=None)
        if leftovers:
            self._terminate(c, leftovers, "the cluster's remaining instances")
            outcomes += [outcome(Kind.INSTANCE, self._instance_label(i), ResourceChange.DELETED) for i in leftovers]
        outcomes += self._delete_launch_templates(c)
        outcomes += network.delete_nat_gateways(c)
        outcomes += network.release_addresses(c)
        outcomes += network.delete_internet_gateways(c)
        outcomes += network.delete_route_tables(c)
        outcomes += network.delete_subnets(c)
        outcomes += network.delete_security_groups(c)
        outcomes += network.delete_vpcs(c)
        for role in resources.ROLES:
            outcomes += access.delete_node_identity(c, role)
        outcomes += access.delete_bucket(c)
        return EnsureResult(outcomes=outcomes)

    # --- activities: endpoint --------------------------------------------------------------------
    def ensure_endpoint(self, input: ClusterRef) -> EnsureResult:
        """Network load balancer (443 -> masters:6443) and the DNS names of the API and ingress."""
        c = self._context(input.spec)
        cluster_network = network.find_network(c)
        outcomes: list[ResourceOutcome] = []
        target_group = endpoint.ensure_target_group(c, cluster_network, outcomes)
        lb = endpoint.ensure_load_balancer(c, cluster_network, outcomes)
        endpoint.ensure_listener(c, lb, target_group, outcomes)
        zone_id = endpoint.ensure_hosted_zone(c, outcomes)
        alias = {"HostedZoneId": lb["CanonicalHostedZoneId"], "DNSName": lb["DNSName"], "EvaluateTargetHealth": False}
        desired = [
            {"Name": resources.api_record(c.spec), "Type": "A", "AliasTarget": alias},
            {"Name": resources.ingress_record(c.spec), "Type": "A", "AliasTarget": alias},
        ]
        outcomes += endpoint.upsert_records(c, zone_id, desired)
        return EnsureResult(outcomes=outcomes)

    def ensure_endpoint_absent(self, input: ClusterRef) -> EnsureResult:
        """Every DNS record of the cluster's domain, the load balancer (its listener goes with it),
        then the target group once the load balancer no longer uses it."""
        c = self._context(input.spec)
        outcomes: list[ResourceOutcome] = []
        zone_id = endpoint.hosted_zone(c)
        if zone_id is None:
            outcomes.append(outcome(Kind.RECORD, resources.api_record(c.spec), ResourceChange.ABSENT))
        else:
            outcomes += endpoint.delete_records(c, zone_id, endpoint.cluster_records(c, zone_id))
        name = resources.elb_name(c.id)
        lbs = endpoint.load_balancers(c)
        if lbs:
            endpoint.delete_load_balancers(c, lbs)
        outcomes.append(outcome(Kind.LOAD_BALANCER, name, ResourceChange.DELETED if lbs else ResourceChange.ABSENT))
        group = endpoint.target_group(c)
        if group is None:
            outcomes.append(outcome(Kind.TARGET_GROUP, name, ResourceChange.ABSENT))
        else:
            arn = group["TargetGroupArn"]
            c.delete_when_free(
                f"target group {name}",
                lambda: call(
                    f"delete target group {name}", c.elb.delete_target_group, ok=NOT_FOUND, TargetGroupArn=arn
                ),
            )
            outcomes.append(outcome(Kind.TARGET_GROUP, name, ResourceChange.DELETED))
        return EnsureResult(outcomes=outcomes)

    # --- activities: nodes -----------------------------------------------------------------------
    def ensure_node(self, input: NodeRef) -> EnsureResult:
        """The role's cloud-config and launch template version, then the node's instance.

        An instance at another Kubernetes version is replaced: deregistered, terminated and waited
        out before its successor starts (two etcd members or kubelets of one name must never run
        side by side). A new restart token reboots it instead (see ``restart_node``).
        """
        spec, node = input.spec, input.node
        role, version = node_role(node), normalize_version(input.kubernetes_version)
        c = self._context(spec)
        image = self._image(c, version)
        cluster_network = network.find_network(c)
        bucket = access.existing_bucket(c)
        outcomes = [access.ensure_cloud_config(c, bucket, role, version)]
        template_id, template_version, template_change = self._ensure_launch_template(
            c, role, version, image, cluster_network, bucket
        )
        outcomes.append(outcome(Kind.LAUNCH_TEMPLATE, resources.launch_template_name(spec, role), template_change))
        target_group = endpoint.target_group(c) if role == "master" else None
        if role == "master" and target_group is None:
            raise MissingPrerequisite(
                f"target group {resources.elb_name(spec.id)} of master {node} is missing: not made yet, removed "
                "outside tenantctl, or the AWS endpoint lost its state (a restarted moto); ensuring the endpoint "
                "(again) makes it"
            )

        live = self._instances(c, node)
        keep, extra = self._pick(live, version)
        change = ResourceChange.UNCHANGED
        if extra:
            # Only concurrent attempts (moto ignores ClientToken) leave two: keep one, end the rest.
            activity.logger.warning(
                "node %s of %s had %d instances: terminating the extra ones", node, spec.id, len(live)
            )
            self._deregister(c, target_group, extra)
            self._terminate(c, extra, f"extra instances of node {node}")
            change = ResourceChange.UPDATED
        if keep is not None and resources.tag_dict(keep.get("Tags")).get(VERSION_LABEL) != version:
            old = resources.tag_dict(keep.get("Tags")).get(VERSION_LABEL, "unknown")
            activity.logger.info(
                "node %s of %s: replacing its instance (Kubernetes %s -> %s)", node, spec.id, old, version
            )
            self._deregister(c, target_group, [keep])
            self._terminate(c, [keep], f"the Kubernetes {old} instance of node {node}")
            keep = None
            change = ResourceChange.UPDATED
        if keep is None:
            keep = self._run_instance(c, input, template_id, template_version, cluster_network)
            change = ResourceChange.CREATED if not live else ResourceChange.UPDATED
        else:
            change = worse(change, self._converge_instance(c, keep, input))
        outcomes.append(outcome(Kind.INSTANCE, node, change))
        if target_group is not None:
            outcomes.append(self._register(c, target_group, keep, node))
            outcomes += endpoint.upsert_records(
                c,
                endpoint.require_zone(c),
                [
                    {
                        "Name": resources.etcd_record(spec, node),
                        "Type": "A",
                        "TTL": resources.RECORD_TTL,
                        "ResourceRecords": [{"Value": keep["PrivateIpAddress"]}],
                    }
                ],
            )
        if self.simulated_nodes is not None:
            self.simulated_nodes.node_ensured(spec, node, version)
        return EnsureResult(outcomes=outcomes)

    def ensure_node_absent(self, input: NodeRef) -> EnsureResult:
        """Deregister and terminate the node's instance and wait until it is gone; then its etcd
        name, and its cloud-config once no other live node of that role and version uses it."""
        spec, node = input.spec, input.node
        role = node_role(node)
        c = self._context(spec)
        live = self._instances(c, node, states=(*resources.LIVE_INSTANCE_STATES, "shutting-down"))
        versions = {normalize_version(input.kubernetes_version)}
        versions |= {v for i in live if (v := resources.tag_dict(i.get("Tags")).get(VERSION_LABEL))}
        outcomes: list[ResourceOutcome] = []
        if live:
            self._deregister(c, endpoint.target_group(c), live)
            self._terminate(c, live, f"instance of node {node}")
            outcomes.append(outcome(Kind.INSTANCE, node, ResourceChange.DELETED))
        else:
            outcomes.append(outcome(Kind.INSTANCE, node, ResourceChange.ABSENT))
        if role == "master":
            zone_id = endpoint.hosted_zone(c)
            records = (
                [] if zone_id is None else endpoint.cluster_records(c, zone_id, only=resources.etcd_record(spec, node))
            )
            if zone_id is not None and records:
                outcomes += endpoint.delete_records(c, zone_id, records)
            else:
                outcomes.append(outcome(Kind.RECORD, resources.etcd_record(spec, node), ResourceChange.ABSENT))
        others = [
            i
            for i in self._instances(c, node=None)
            if resources.tag_dict(i.get("Tags")).get(NODE_LABEL) != node
            and resources.tag_dict(i.get("Tags")).get(ROLE_LABEL) == role
        ]
        in_use = {resources.tag_dict(i.get("Tags")).get(VERSION_LABEL) for i in others}
        bucket = c.bucket
        for version in sorted(versions):
            key = resources.cloud_config_key(role, version)
            if version in in_use:
                outcomes.append(outcome(Kind.OBJECT, key, ResourceChange.UNCHANGED))
            else:
                outcomes.append(access.delete_object(c, bucket, key))
        if self.simulated_nodes is not None:
            self.simulated_nodes.node_removed(spec, node)
        return EnsureResult(outcomes=outcomes)

    def restart_node(self, input: NodeRef) -> EnsureResult:
        """Reboot the node once per restart token; the token is kept in a tag, so the same token
        again is a no-op. Reboot first, tag second: a crash in between reboots once more, never
        not at all."""
        if not input.restart_token:
            raise InvalidInput(f"restart of node {input.node}: restart_token is empty, nothing would roll")
        node_role(input.node)
        c = self._context(input.spec)
        keep, _ = self._pick(self._instances(c, input.node), normalize_version(input.kubernetes_version))
        if keep is None:
            activity.logger.warning("restart of node %s of %s: no such instance", input.node, input.spec.id)
            return EnsureResult(outcomes=[outcome(Kind.INSTANCE, input.node, ResourceChange.ABSENT)])
        change = self._apply_restart_token(c, keep, input.node, input.restart_token)
        return EnsureResult(outcomes=[outcome(Kind.INSTANCE, input.node, change)])

    def wait_nodes_ready(self, input: WaitNodesInput) -> NodesResult:
        """Poll until every node's instance runs with status checks ok (and masters are healthy
        behind the load balancer), heartbeating the nodes still pending.

        The start time travels in the heartbeat details, so an attempt retried after a worker
        loss keeps the original deadline rather than starting the clock again.
        """
        c = self._context(input.spec)

        def unavailable(exc: Exception) -> str:
            if not isinstance(exc, ClientError | BotoCoreError):
                raise exc
            mapped = classify(exc, "observe the nodes") if isinstance(exc, ClientError) else exc
            if isinstance(mapped, PermanentError):
                raise mapped from exc
            return f"AWS unavailable: {type(exc).__name__}: {exc}"[:200]

        return wait_for_nodes(
            input, lambda: self._observe(c, input.nodes, input.kubernetes_version), unavailable, self.poll_interval
        )

    def list_nodes(self, input: ClusterRef) -> NodesResult:
        c = self._context(input.spec)
        names = sorted(
            {resources.tag_dict(i.get("Tags")).get(NODE_LABEL, "") for i in self._instances(c, node=None)} - {""},
            key=node_order,
        )
        return NodesResult(nodes=self._observe(c, names, None))

    def list_resources(self, input: ClusterRef) -> ResourceList:
        """Everything tagged or named for the cluster in EC2, ELBv2, Route53, IAM, S3 and Secrets
        Manager, as ``service:kind/name`` (plus the AWS id where the name is a tag)."""
        c = self._context(input.spec)
        found: list[str] = []
        tagged: list[tuple[Kind, str, str, str]] = [
            (Kind.VPC, "describe_vpcs", "Vpcs", "VpcId"),
            (Kind.SUBNET, "describe_subnets", "Subnets", "SubnetId"),
            (Kind.INTERNET_GATEWAY, "describe_internet_gateways", "InternetGateways", "InternetGatewayId"),
            (Kind.ROUTE_TABLE, "describe_route_tables", "RouteTables", "RouteTableId"),
            (Kind.SECURITY_GROUP, "describe_security_groups", "SecurityGroups", "GroupId"),
            (Kind.ELASTIC_IP, "describe_addresses", "Addresses", "AllocationId"),
            (Kind.LAUNCH_TEMPLATE, "describe_launch_templates", "LaunchTemplates", "LaunchTemplateId"),
        ]
        for kind, operation, key, id_key in tagged:
            for item in c.describe(operation, key, filters(c.spec)):
                found.append(self._label(kind, item, id_key))
        for item in network._nat_gateways(c):
            found.append(self._label(Kind.NAT_GATEWAY, item, "NatGatewayId"))
        for item in self._instances(c, node=None, states=(*resources.LIVE_INSTANCE_STATES, "shutting-down")):
            found.append(self._label(Kind.INSTANCE, item, "InstanceId"))
        found += [f"{kind.value}/{name}" for kind, name in endpoint.tagged_elb_resources(c)]
        zone_id = endpoint.hosted_zone(c)
        if zone_id is not None:
            found += [
                f"{Kind.RECORD.value}/{rec['Name']} {rec['Type']}" for rec in endpoint.cluster_records(c, zone_id)
            ]
        for role in resources.ROLES:
            name = resources.iam_name(c.id, role)
            if call(f"read IAM role {name}", c.iam.get_role, ok=NOT_FOUND, RoleName=name) is not None:
                found.append(f"{Kind.ROLE.value}/{name}")
            if (
                call(
                    f"read instance profile {name}", c.iam.get_instance_profile, ok=NOT_FOUND, InstanceProfileName=name
                )
                is not None
            ):
                found.append(f"{Kind.INSTANCE_PROFILE.value}/{name}")
        bucket = c.bucket
        if access.bucket_exists(c, bucket):
            found.append(f"{Kind.BUCKET.value}/{bucket}")
        found += [f"{Kind.SECRET.value}/{name}" for name in self._secrets(c)]
        return ResourceList(resources=sorted(found))

    def observe(self, input: ObserveInput) -> DriftReport:
        """Drift check: the cluster's tagged resources compared with what the spec implies.

        Found by tag in a handful of list calls and diffed here: the VPC, a public and a private
        subnet per zone, the three security groups and each one's ingress rules, the API load
        balancer, and one running instance per node at its version; a tagged instance of a node the
        spec does not explain is extra. Key pairs (Secrets Manager) are the PKI observe's.
        """
        c = self._context(input.spec)
        items: list[DriftItem] = []

        def missing(what: str, detail: str = "") -> None:
            items.append(DriftItem(kind=DriftKind.MISSING, object=what, detail=detail))

        vpc = c.one(Kind.VPC, c.id, c.describe("describe_vpcs", "Vpcs", filters(c.spec, Part.VPC)), "VpcId")
        if vpc is None:
            missing(f"{Kind.VPC.value}/{c.id}")
        else:
            vpc_id = str(vpc["VpcId"])
            subnets = c.describe(
                "describe_subnets", "Subnets", [*filters(c.spec), {"Name": "vpc-id", "Values": [vpc_id]}]
            )
            have = {
                (
                    resources.tag_dict(s.get("Tags")).get(ROLE_LABEL),
                    resources.tag_dict(s.get("Tags")).get(resources.ZONE_TAG),
                )
                for s in subnets
            }
            for zone in resources.aws_settings(c.spec).availability_zones:
                for part in (Part.PUBLIC_SUBNET, Part.PRIVATE_SUBNET):
                    if (part.value, zone) not in have:
                        missing(f"{Kind.SUBNET.value}/{part.value} {zone}")
            groups: dict[Part, str] = {}
            for part in network.SECURITY_GROUPS:
                name = resources.security_group_name(c.spec, part)
                group = network._security_group(c, vpc_id, name)
                if group is None:
                    missing(f"{Kind.SECURITY_GROUP.value}/{name}")
                else:
                    groups[part] = str(group["GroupId"])
            if len(groups) == len(network.SECURITY_GROUPS):
                for part in network.SECURITY_GROUPS:
                    name = resources.security_group_name(c.spec, part)
                    absent, foreign = network.rule_drift(c, part, groups)
                    if absent:
                        detail = ", ".join(
                            f"{r.protocol} {r.from_port}-{r.to_port} from {r.source}" for r in sorted(absent)
                        )
                        items.append(
                            DriftItem(
                                kind=DriftKind.CHANGED,
                                object=f"{Kind.SECURITY_GROUP.value}/{name}",
                                detail=f"missing rules: {detail}",
                            )
                        )
                    if foreign:
                        items.append(
                            DriftItem(
                                kind=DriftKind.CHANGED,
                                object=f"{Kind.SECURITY_GROUP.value}/{name}",
                                detail=f"rules nothing explains: {', '.join(foreign)}",
                            )
                        )
        if not any(kind is Kind.LOAD_BALANCER for kind, _ in endpoint.tagged_elb_resources(c)):
            missing(f"{Kind.LOAD_BALANCER.value}/{c.id}", "the API load balancer")
        by_node: dict[str, list[Obj]] = {}
        for instance in self._instances(c, node=None, states=("pending", "running", "stopping", "stopped")):
            by_node.setdefault(resources.tag_dict(instance.get("Tags")).get(NODE_LABEL, ""), []).append(instance)
        for node, wanted in sorted(input.nodes.items(), key=lambda item: node_order(item[0])):
            live = by_node.pop(node, [])
            where = f"{Kind.INSTANCE.value}/{node}"
            if not live:
                missing(where)
                continue
            version = normalize_version(wanted)
            keep, rest = self._pick(live, version)
            assert keep is not None
            state = keep["State"]["Name"]
            running = resources.tag_dict(keep.get("Tags")).get(VERSION_LABEL, "")
            if state not in ("pending", "running"):
                items.append(
                    DriftItem(kind=DriftKind.CHANGED, object=where, detail=f"instance {keep['InstanceId']} is {state}")
                )
            elif running != version:
                items.append(
                    DriftItem(
                        kind=DriftKind.CHANGED, object=where, detail=f"runs {running or 'unknown'}, not {version}"
                    )
                )
            items += [
                DriftItem(
                    kind=DriftKind.EXTRA,
                    object=f"{Kind.INSTANCE.value}/{node} ({i['InstanceId']})",
                    detail="a second instance",
                )
                for i in rest
            ]
        for node, extra in sorted(by_node.items()):
            items += [
                DriftItem(kind=DriftKind.EXTRA, object=f"{Kind.INSTANCE.value}/{node or '?'} ({i['InstanceId']})")
                for i in extra
            ]
        return DriftReport(backend=Backend.PROVIDER, items=items)

    # --- foundation: network ---------------------------------------------------------------------
    # --- foundation: bucket and IAM --------------------------------------------------------------

    # --- endpoint --------------------------------------------------------------------------------

    # --- DNS -------------------------------------------------------------------------------------

    # --- nodes -----------------------------------------------------------------------------------
    def _image(self, c: AwsContext, version: str) -> Obj:
        name = resources.ami_name(c.spec, version)
        images = do(
            f"find AMI {name}",
            c.ec2.describe_images,
            Owners=["self"],
            Filters=[{"Name": "name", "Values": [name]}, {"Name": "state", "Values": ["available"]}],
        )["Images"]
        if not images:
            raise MissingPrerequisite(
                f"AMI {name} (owner self, region {c.region}) does not exist: build or register it, or fix "
                f"aws.ami_name_prefix / kubernetes_version"
            )
        return cast(Obj, sorted(images, key=lambda i: (str(i.get("CreationDate", "")), str(i["ImageId"])))[-1])

    def _ensure_launch_template(
        self, c: AwsContext, role: str, version: str, image: Obj, cluster_network: network.Network, bucket: str
    ) -> tuple[str, int, ResourceChange]:
        """The role's launch template and the version of it for this Kubernetes version.

        A version is found again by its description, which names the Kubernetes version and a
        digest of its whole content, so a retry never adds a second one and a changed instance
        type or AMI makes a new one.
        """
        name = resources.launch_template_name(c.spec, role)
        data = resources.launch_template_data(
            c.spec,
            role,
            version,
            image_id=str(image["ImageId"]),
            root_device=str(image.get("RootDeviceName") or "/dev/xvda"),
            profile=resources.iam_name(c.id, role),
            group_id=cluster_network.groups[resources.role_group(role)],
            bucket=bucket,
        )
        description = resources.template_description(version, data)
        templates = call(
            f"read launch template {name}", c.ec2.describe_launch_templates, ok=NOT_FOUND, LaunchTemplateNames=[name]
        )
        if not templates or not templates["LaunchTemplates"]:
            created = call(
                f"create launch template {name}",
                c.ec2.create_launch_template,
                ok={"InvalidLaunchTemplateName.AlreadyExistsException"},
                LaunchTemplateName=name,
                VersionDescription=description,
                LaunchTemplateData=data,
                TagSpecifications=[
                    {
                        "ResourceType": "launch-template",
                        "Tags": resources.tag_list(resources.ec2_tags(c.spec, Part.LAUNCH_TEMPLATE, name)),
                    }
                ],
            )
            if created is not None:
                return str(created["LaunchTemplate"]["LaunchTemplateId"]), 1, ResourceChange.CREATED
            templates = do(f"read launch template {name}", c.ec2.describe_launch_templates, LaunchTemplateNames=[name])
        template = templates["LaunchTemplates"][0]
        if (why := resources.foreign(resources.tag_dict(list(template.get("Tags") or [])), c.spec)) is not None:
            raise Conflict(f"launch template {name} exists but is not tenantctl's for cluster {c.id} ({why})")
        template_id = str(template["LaunchTemplateId"])
        pages = c.ec2.get_paginator("describe_launch_template_versions").paginate(LaunchTemplateId=template_id)
        versions = [
            v for page in do(f"read versions of {name}", lambda: list(pages)) for v in page["LaunchTemplateVersions"]
        ]
        matching = sorted(int(v["VersionNumber"]) for v in versions if v.get("VersionDescription") == description)
        if matching:
            return template_id, matching[0], ResourceChange.UNCHANGED
        created_version = do(
            f"add a version to launch template {name}",
            c.ec2.create_launch_template_version,
            LaunchTemplateId=template_id,
            VersionDescription=description,
            LaunchTemplateData=data,
        )
        return template_id, int(created_version["LaunchTemplateVersion"]["VersionNumber"]), ResourceChange.UPDATED

    def _instances(
        self, c: AwsContext, node: str | None, states: Sequence[str] = resources.LIVE_INSTANCE_STATES
    ) -> list[Obj]:
        """The cluster's instances (of one node, or of every node) in these states."""
        where = [*filters(c.spec), {"Name": "instance-state-name", "Values": list(states)}]
        if node is not None:
            where.append({"Name": f"tag:{NODE_LABEL}", "Values": [node]})
        else:
            where.append({"Name": "tag-key", "Values": [NODE_LABEL]})
        reservations = c.describe("describe_instances", "Reservations", where)
        return [
            instance
            for reservation in reservations
            for instance in reservation.get("Instances") or []
            if tagged_as(instance, where) and instance["State"]["Name"] in states
        ]

    @staticmethod
    def _pick(live: list[Obj], version: str) -> tuple[Obj | None, list[Obj]]:
        """Of a node's instances, the one to keep (right version, running, oldest) and the rest."""
        if not live:
            return None, []

        def rank(instance: Obj) -> tuple[int, int, str, str]:
            instance_tags = resources.tag_dict(instance.get("Tags"))
            return (
                0 if instance_tags.get(VERSION_LABEL) == version else 1,
                0 if instance["State"]["Name"] == "running" else 1,
                str(instance.get("LaunchTime", "")),
                str(instance["InstanceId"]),
            )

        ordered = sorted(live, key=rank)
        return ordered[0], ordered[1:]

    def _run_instance(
        self, c: AwsContext, input: NodeRef, template_id: str, template_version: int, cluster_network: network.Network
    ) -> Obj:
        spec, node = input.spec, input.node
        role = node_role(node)
        zone = resources.node_zone(spec, node)
        node_tags = resources.node_tags(spec, node, input.kubernetes_version)
        if input.restart_token:
            node_tags[resources.RESTART_TOKEN_TAG] = input.restart_token
        volume_tags = resources.ec2_tags(
            spec, role, f"{resources.instance_name(spec, node)}-root", **{NODE_LABEL: node}
        )
        try:
            launched = c.ec2.run_instances(
                LaunchTemplate={"LaunchTemplateId": template_id, "Version": str(template_version)},
                MinCount=1,
                MaxCount=1,
                SubnetId=cluster_network.private[zone],
                # Also in the template; given again because moto ignores the template's, and
                # explicit parameters are what AWS would use anyway.
                IamInstanceProfile={"Name": resources.iam_name(spec.id, role)},
                MetadataOptions=resources.metadata_options(),
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": resources.tag_list(node_tags)},
                    {"ResourceType": "volume", "Tags": resources.tag_list(volume_tags)},
                ],
            )
        except ClientError as exc:
            if code(exc) == "InvalidParameterValue" and "iamInstanceProfile" in message(exc):
                # IAM is eventually consistent: a profile made seconds ago is not usable yet.
                raise NotReady(
                    f"instance profile {resources.iam_name(spec.id, role)} is not usable yet: {message(exc)}"
                ) from exc
            mapped = classify(exc, f"launch instance {resources.instance_name(spec, node)} in {zone}")
            raise mapped from exc
        instance = cast(Obj, launched["Instances"][0])
        activity.logger.info("launched %s for node %s of %s in %s", instance["InstanceId"], node, spec.id, zone)
        return instance

    def _converge_instance(self, c: AwsContext, instance: Obj, input: NodeRef) -> ResourceChange:
        """Tags back to what they should be, a stopped node started, a new restart token applied."""
        change = ResourceChange.UNCHANGED
        instance_id = str(instance["InstanceId"])
        desired = resources.node_tags(input.spec, input.node, input.kubernetes_version)
        if c.converge_tags(instance_id, instance.get("Tags"), desired):
            change = ResourceChange.UPDATED
        state = instance["State"]["Name"]
        if state in ("stopped", "stopping"):
            if state == "stopping":
                self._wait_state(c, [instance_id], {"stopped"}, f"instance of node {input.node} to stop")
            do(f"start instance {instance_id}", c.ec2.start_instances, InstanceIds=[instance_id])
            change = ResourceChange.UPDATED
        if input.restart_token:
            change = worse(change, self._apply_restart_token(c, instance, input.node, input.restart_token))
        return change

    def _apply_restart_token(self, c: AwsContext, instance: Obj, node: str, token: str) -> ResourceChange:
        instance_id = str(instance["InstanceId"])
        if resources.tag_dict(instance.get("Tags")).get(resources.RESTART_TOKEN_TAG) == token:
            return ResourceChange.UNCHANGED
        if instance["State"]["Name"] in ("stopped", "stopping"):
            # A stopped node loads its key pairs when it starts (ensure_node starts it).
            do(f"start instance {instance_id}", c.ec2.start_instances, InstanceIds=[instance_id])
        else:
            do(f"reboot instance {instance_id}", c.ec2.reboot_instances, InstanceIds=[instance_id])
        do(
            f"tag instance {instance_id}",
            c.ec2.create_tags,
            Resources=[instance_id],
            Tags=resources.tag_list({resources.RESTART_TOKEN_TAG: token}),
        )
        activity.logger.info("node %s (%s) rebooted for restart token %s", node, instance_id, token)
        return ResourceChange.UPDATED

    def _register(self, c: AwsContext, target_group: Obj, instance: Obj, node: str) -> ResourceOutcome:
        arn, instance_id = str(target_group["TargetGroupArn"]), str(instance["InstanceId"])
        health = do(f"read targets of {arn}", c.elb.describe_target_health, TargetGroupArn=arn)
        registered = {str(t["Target"]["Id"]) for t in health["TargetHealthDescriptions"]}
        if instance_id in registered:
            return outcome(Kind.TARGET, node, ResourceChange.UNCHANGED)
        do(
            f"register {node} in {arn}",
            c.elb.register_targets,
            TargetGroupArn=arn,
            Targets=[{"Id": instance_id, "Port": resources.APISERVER_PORT}],
        )
        return outcome(Kind.TARGET, node, ResourceChange.CREATED)

    def _deregister(self, c: AwsContext, target_group: Obj | None, instances: list[Obj]) -> None:
        if target_group is None or not instances:
            return
        call(
            f"deregister {len(instances)} instances from {target_group['TargetGroupName']}",
            c.elb.deregister_targets,
            ok={"InvalidTarget", *NOT_FOUND},
            TargetGroupArn=target_group["TargetGroupArn"],
            Targets=[{"Id": str(i["InstanceId"]), "Port": resources.APISERVER_PORT} for i in instances],
        )

    def _terminate(self, c: AwsContext, instances: list[Obj], what: str) -> None:
        ids = [str(i["InstanceId"]) for i in instances]
        call(f"terminate {what}", c.ec2.terminate_instances, ok=NOT_FOUND, InstanceIds=ids)
        self._wait_state(c, ids, {"terminated"}, f"{what} ({', '.join(ids)}) to terminate")

    def _wait_state(self, c: AwsContext, ids: list[str], states: set[str], what: str) -> None:
        def pending() -> str | None:
            # A filter, not InstanceIds: an id AWS no longer lists (long terminated) is no error.
            reservations = c.describe("describe_instances", "Reservations", [{"Name": "instance-id", "Values": ids}])
            left = sorted(
                f"{i['InstanceId']} {i['State']['Name']}"
                for reservation in reservations
                for i in reservation.get("Instances") or []
                if i["State"]["Name"] not in states
            )
            return ", ".join(left) or None

        c.wait(what, pending, c.instance_timeout)

    def _observe(self, c: AwsContext, nodes: list[str], version: str | None) -> list[NodeObservation]:
        live: dict[str, Obj] = {}
        for instance in self._instances(c, node=None):
            node = resources.tag_dict(instance.get("Tags")).get(NODE_LABEL, "")
            if node in nodes:
                current = live.get(node)
                keep, _ = self._pick([i for i in (current, instance) if i is not None], version or "")
                live[node] = keep or instance
        statuses: dict[str, Obj] = {}
        ids = [str(i["InstanceId"]) for i in live.values()]
        for start in range(0, len(ids), 100):
            page = do(
                "read instance status",
                c.ec2.describe_instance_status,
                InstanceIds=ids[start : start + 100],
                IncludeAllInstances=True,
            )
            statuses.update({str(s["InstanceId"]): cast(Obj, s) for s in page["InstanceStatuses"]})
        health: dict[str, Obj] = {}
        if any(n.startswith("master-") for n in nodes):
            group = endpoint.target_group(c)
            if group is not None:
                described = do(
                    "read the API targets' health", c.elb.describe_target_health, TargetGroupArn=group["TargetGroupArn"]
                )
                health = {
                    str(t["Target"]["Id"]): cast(Obj, t["TargetHealth"]) for t in described["TargetHealthDescriptions"]
                }
        observed = []
        for node in nodes:
            found = live.get(node)
            running = resources.tag_dict(found.get("Tags")).get(VERSION_LABEL, "") if found else ""
            ready, detail = _readiness(node, found, statuses, health, version)
            observed.append(
                NodeObservation(name=node, role=node_role(node), kubernetes_version=running, ready=ready, detail=detail)
            )
        return observed

    # --- removal ---------------------------------------------------------------------------------
    def _delete_launch_templates(self, c: AwsContext) -> list[ResourceOutcome]:
        outcomes = []
        templates = {
            str(t["LaunchTemplateName"]): str(t["LaunchTemplateId"])
            for t in c.describe("describe_launch_templates", "LaunchTemplates", filters(c.spec))
        }
        for role in resources.ROLES:
            name = resources.launch_template_name(c.spec, role)
            template_id = templates.pop(name, None)
            if template_id is None:
                outcomes.append(outcome(Kind.LAUNCH_TEMPLATE, name, ResourceChange.ABSENT))
                continue
            call(
                f"delete launch template {name}",
                c.ec2.delete_launch_template,
                ok=NOT_FOUND,
                LaunchTemplateId=template_id,
            )
            outcomes.append(outcome(Kind.LAUNCH_TEMPLATE, name, ResourceChange.DELETED))
        for name, template_id in sorted(templates.items()):  # tagged for the cluster, under another name
            call(
                f"delete launch template {name}",
                c.ec2.delete_launch_template,
                ok=NOT_FOUND,
                LaunchTemplateId=template_id,
            )
            outcomes.append(outcome(Kind.LAUNCH_TEMPLATE, name, ResourceChange.DELETED))
        return outcomes

    # --- listing ---------------------------------------------------------------------------------

    def _secrets(self, c: AwsContext) -> list[str]:
        """Secrets Manager entries of the cluster (name prefix ``tenantctl/<id>/``), in the region
        the certificate sink writes to."""
        prefix = aws_secret_name(c.id, "")
        client = self._secrets_client()
        pages = client.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}])
        return sorted(
            str(s["Name"])
            for page in do(f"list secrets {prefix}*", lambda: list(pages))
            for s in page["SecretList"]
            if str(s["Name"]).startswith(prefix)
        )

    @staticmethod
    def _name_of(item: Obj, id_key: str) -> str:
        return resources.tag_dict(item.get("Tags")).get(resources.NAME_TAG) or str(item[id_key])

    def _label(self, kind: Kind, item: Obj, id_key: str) -> str:
        name, resource_id = name_of(item, id_key), str(item[id_key])
        return f"{kind.value}/{name}" if name == resource_id else f"{kind.value}/{name} ({resource_id})"

    def _instance_label(self, instance: Obj) -> str:
        return resources.tag_dict(instance.get("Tags")).get(NODE_LABEL) or str(instance["InstanceId"])


# --- pure helpers ------------------------------------------------------------------------------------
def _readiness(
    node: str, instance: Obj | None, statuses: dict[str, Obj], health: dict[str, Obj], version: str | None
) -> tuple[bool, str]:
    if instance is None:
        return False, f"no instance of node {node}"
    instance_id = str(instance["InstanceId"])
    running = resources.tag_dict(instance.get("Tags")).get(VERSION_LABEL, "")
    if version is not None and running != normalize_version(version):
        return False, f"runs Kubernetes {running or 'unknown'}, not {normalize_version(version)}"
    state = instance["State"]["Name"]
    if state != "running":
        return False, f"instance {instance_id} is {state}"
    status = statuses.get(instance_id, {})
    checks = {
        "instance": status.get("InstanceStatus", {}).get("Status", "unknown"),
        "system": status.get("SystemStatus", {}).get("Status", "unknown"),
    }
    if set(checks.values()) != {"ok"}:
        return False, f"instance {instance_id} status checks: " + ", ".join(f"{k} {v}" for k, v in checks.items())
    if node.startswith("master-"):
        target = health.get(instance_id)
        if target is None:
            return False, f"instance {instance_id} is not registered with the API load balancer"
        if target.get("State") != "healthy":
            reason = " ".join(str(target.get(k, "")) for k in ("Reason", "Description")).strip()
            return False, f"API target {instance_id} is {target.get('State')}" + (f": {reason}" if reason else "")
    return True, "running, status checks ok" + (
        ", healthy behind the API load balancer" if node.startswith("master-") else ""
    )
