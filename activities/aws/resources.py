"""Desired AWS resources of a tenant cluster, as pure functions of its spec (no AWS calls).

The AWS provider (``activities.aws.provider``) looks every resource up by these names and tags
before it creates anything, so a retried, resumed or repeated activity finds what an earlier
attempt made. Per cluster ``<id>`` (base domain ``<base>``)::

    EC2  VPC <id>; per zone: subnets <id>-public-<zone>, <id>-private-<zone>, EIP + NAT gateway
         <id>-nat-<zone>, route table <id>-private-<zone>; internet gateway <id>; route table
         <id>-public; security groups <id>-masters, <id>-workers, <id>-api-lb; launch templates
         <id>-master, <id>-worker (one version per Kubernetes version); instances <id>-<node>
    IAM  role + instance profile tenantctl-<id>-master / -worker (path /tenantctl/)
    S3   bucket tenantctl-<id>-<hash of account and region>, cloud-config/<role>-<version>.yaml
    ELB  network load balancer and target group <id>-api (443 -> masters:6443)
    R53  api.<id>.<base>, *.ingress.<id>.<base> (aliases of the NLB), master-<i>.etcd.<id>.<base>
    SM   tenantctl/<id>/<certificate> (written by the PKI activities' Secrets Manager sink)

Every EC2, ELB and IAM resource is created *with* its tags (TagSpecifications / Tags), so no
resource ever exists untagged, not even after a worker dies between two calls.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import yaml

from activities.nodes import bootstrap
from models.errors import InvalidInput
from models.naming import (
    CLUSTER_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NODE_LABEL,
    ROLE_LABEL,
    VERSION_LABEL,
    node_index,
    node_role,
)
from models.naming import aws_secret_name as secret_name
from models.spec import AwsSettings, ClusterSpec, Provider
from models.versions import normalize_version

NAME_TAG: Final = "Name"
OWNER_TAG: Final = "tenantctl.io/owner"
ZONE_TAG: Final = "tenantctl.io/zone"
RESTART_TOKEN_TAG: Final = "tenantctl.io/restart-token"
"""Instance tag: the last restart token applied, so the same token never reboots twice."""
CERTIFICATE_TAG: Final = "tenantctl.io/certificate"

ROLES: Final = ("master", "worker")
IAM_PATH: Final = "/tenantctl/"
NODE_POLICY: Final = "tenantctl-node"
"""Name of the inline policy of each node role."""
CLOUD_CONFIG_PREFIX: Final = "cloud-config/"
ELB_NAME_MAX: Final = 32
BUCKET_HASH_LENGTH: Final = 8
ROOT_VOLUME_GIB: Final = 50
RECORD_TTL: Final = 60
TRUST_BUNDLE: Final = "ca-bundle"
"""Secrets Manager name suffix of the published trust bundle (tenantctl/<id>/ca-bundle)."""

API_PORT: Final = bootstrap.API_PORT
APISERVER_PORT: Final = bootstrap.APISERVER_PORT
ETCD_CLIENT_PORT: Final = bootstrap.ETCD_CLIENT_PORT
ETCD_PEER_PORT: Final = bootstrap.ETCD_PEER_PORT
KUBELET_PORT: Final = bootstrap.KUBELET_PORT
VXLAN_PORT: Final = 8472
NODE_PORTS: Final = (30000, 32767)

LIVE_INSTANCE_STATES: Final = ("pending", "running", "stopping", "stopped")
"""States of an instance that still is (or can again be) the node; shutting-down is on its way out."""


class Kind(StrEnum):
    """``service:kind`` of every resource, as ensure results and list_resources name them."""

    VPC = "ec2:vpc"
    SUBNET = "ec2:subnet"
    INTERNET_GATEWAY = "ec2:internet-gateway"
    ROUTE_TABLE = "ec2:route-table"
    ELASTIC_IP = "ec2:elastic-ip"
    NAT_GATEWAY = "ec2:nat-gateway"
    SECURITY_GROUP = "ec2:security-group"
    LAUNCH_TEMPLATE = "ec2:launch-template"
    INSTANCE = "ec2:instance"
    LOAD_BALANCER = "elbv2:load-balancer"
    TARGET_GROUP = "elbv2:target-group"
    LISTENER = "elbv2:listener"
    TARGET = "elbv2:target"
    HOSTED_ZONE = "route53:hosted-zone"
    RECORD = "route53:record"
    ROLE = "iam:role"
    INSTANCE_PROFILE = "iam:instance-profile"
    BUCKET = "s3:bucket"
    OBJECT = "s3:object"
    SECRET = "secretsmanager:secret"


class Part(StrEnum):
    """Value of the role tag (``tenantctl.io/role``) of every resource that is not a node."""

    VPC = "vpc"
    PUBLIC_SUBNET = "public-subnet"
    PRIVATE_SUBNET = "private-subnet"
    INTERNET_GATEWAY = "internet-gateway"
    PUBLIC_ROUTES = "public-route-table"
    PRIVATE_ROUTES = "private-route-table"
    NAT_ADDRESS = "nat-address"
    NAT_GATEWAY = "nat-gateway"
    MASTERS_GROUP = "masters-security-group"
    WORKERS_GROUP = "workers-security-group"
    LB_GROUP = "api-lb-security-group"
    LAUNCH_TEMPLATE = "launch-template"
    API = "api"
    IAM = "node-identity"
    CLOUD_CONFIG = "cloud-config"


# --- the spec's AWS section, names -----------------------------------------------------------------
def aws_settings(spec: ClusterSpec) -> AwsSettings:
    if spec.provider is not Provider.AWS or spec.aws is None:
        raise InvalidInput(f"cluster {spec.id}: provider is '{spec.provider}', the AWS provider cannot manage it")
    return spec.aws


def node_zone(spec: ClusterSpec, node: str) -> str:
    """Nodes of each role are spread over the zones: ``<role>-i`` goes to zone ``i mod n``."""
    zones = aws_settings(spec).availability_zones
    return zones[node_index(node) % len(zones)]


def instance_name(spec: ClusterSpec, node: str) -> str:
    return f"{spec.id}-{node}"


def security_group_name(spec: ClusterSpec, part: Part) -> str:
    suffix = {Part.MASTERS_GROUP: "masters", Part.WORKERS_GROUP: "workers", Part.LB_GROUP: "api-lb"}[part]
    return f"{spec.id}-{suffix}"


def role_group(role: str) -> Part:
    return Part.MASTERS_GROUP if role == "master" else Part.WORKERS_GROUP


def iam_name(cluster_id: str, role: str) -> str:
    """Role and instance profile of a node role: ``tenantctl-<id>-master`` (at most 57 characters)."""
    return f"tenantctl-{cluster_id}-{role}"


def launch_template_name(spec: ClusterSpec, role: str) -> str:
    return f"{spec.id}-{role}"


def elb_name(cluster_id: str, suffix: str = "api") -> str:
    """A load balancer or target group name: at most 32 characters, so a long id is shortened
    deterministically (its head plus a hash of the whole id, never two ids on one name)."""
    name = f"{cluster_id}-{suffix}"
    if len(name) <= ELB_NAME_MAX:
        return name
    digest = hashlib.sha256(cluster_id.encode()).hexdigest()[:8]
    head = cluster_id[: ELB_NAME_MAX - len(suffix) - len(digest) - 2].rstrip("-")
    return f"{head}-{digest}-{suffix}"


def bucket_name(cluster_id: str, account: str, region: str) -> str:
    """Bucket names are global across all of AWS: the id plus a short hash of where it lives, so
    the same id in another account or region never collides, and the same one always agrees."""
    digest = hashlib.sha256(f"{account}/{region}".encode()).hexdigest()[:BUCKET_HASH_LENGTH]
    return f"tenantctl-{cluster_id}-{digest}"


def cloud_config_key(role: str, version: str) -> str:
    return f"{CLOUD_CONFIG_PREFIX}{role}-{normalize_version(version)}.yaml"


def fqdn(name: str) -> str:
    """Route53's spelling of a record name: lower case, trailing dot, ``*`` not escaped."""
    return name.lower().replace("\\052", "*").rstrip(".") + "."


def api_record(spec: ClusterSpec) -> str:
    return fqdn(spec.api_domain)


def ingress_record(spec: ClusterSpec) -> str:
    return fqdn(f"*.ingress.{spec.cluster_domain}")


def etcd_record(spec: ClusterSpec, node: str) -> str:
    """Where etcd peers find a master (the names its certificates carry, see ``activities.nodes.bootstrap``)."""
    return fqdn(f"{node}.{bootstrap.etcd_domain(spec)}")


def in_cluster_domain(spec: ClusterSpec, record_name: str) -> bool:
    return fqdn(record_name).endswith("." + fqdn(spec.cluster_domain))


# --- tags --------------------------------------------------------------------------------------------
def kubernetes_cluster_tag(cluster_id: str) -> str:
    """The tag the Kubernetes AWS cloud provider finds a cluster's subnets and groups by."""
    return f"kubernetes.io/cluster/{cluster_id}"


def tags(spec: ClusterSpec, part: str, name: str | None = None, **extra: str) -> dict[str, str]:
    """Tags of one resource: cluster, role, owner and manager, plus a ``Name`` if it has one."""
    result = {
        CLUSTER_LABEL: spec.id,
        ROLE_LABEL: part,
        OWNER_TAG: spec.owner,
        MANAGED_BY_LABEL: MANAGED_BY,
    }
    if name is not None:
        result[NAME_TAG] = name
    result.update(extra)
    return result


def ec2_tags(spec: ClusterSpec, part: str, name: str, **extra: str) -> dict[str, str]:
    return tags(spec, part, name, **{kubernetes_cluster_tag(spec.id): "owned", **extra})


def node_tags(spec: ClusterSpec, node: str, version: str) -> dict[str, str]:
    return ec2_tags(
        spec,
        node_role(node),
        instance_name(spec, node),
        **{NODE_LABEL: node, VERSION_LABEL: normalize_version(version)},
    )


def tag_list(values: dict[str, str]) -> list[Any]:
    """Tags as the AWS APIs take them (each service has its own, structurally equal, type)."""
    return [{"Key": key, "Value": value} for key, value in values.items()]


def tag_dict(values: list[Any] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in values or []}


def missing_tags(live: dict[str, str], desired: dict[str, str]) -> dict[str, str]:
    """Desired tags the live resource lacks or holds another value of (others' tags are kept)."""
    return {key: value for key, value in desired.items() if live.get(key) != value}


def foreign(live: dict[str, str], spec: ClusterSpec) -> str | None:
    """Why a resource found by name is not this cluster's, or None when it is."""
    cluster = live.get(CLUSTER_LABEL)
    if cluster != spec.id:
        return f"tagged {CLUSTER_LABEL}={cluster}" if cluster else f"not tagged {CLUSTER_LABEL}={spec.id}"
    return None


# --- network -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZoneSubnets:
    zone: str
    public: str
    private: str


def subnet_plan(spec: ClusterSpec) -> list[ZoneSubnets]:
    """One public and one private /24 per zone, carved from the VPC by zone position.

    Public subnets come from the VPC's first half and private ones from its second, zone ``i``
    taking the ``i``-th /24 of each half, so adding a zone later never moves an existing subnet
    (the spec validator guarantees the VPC holds two /24 per zone).
    """
    aws = aws_settings(spec)
    subnets = list(ipaddress.ip_network(aws.vpc_cidr).subnets(new_prefix=24))
    half = len(subnets) // 2
    return [
        ZoneSubnets(zone=zone, public=str(subnets[i]), private=str(subnets[half + i]))
        for i, zone in enumerate(aws.availability_zones)
    ]


def subnet_name(spec: ClusterSpec, part: Part, zone: str) -> str:
    return f"{spec.id}-{'public' if part is Part.PUBLIC_SUBNET else 'private'}-{zone}"


def subnet_tags(spec: ClusterSpec, part: Part, zone: str) -> dict[str, str]:
    # The cloud provider puts internet-facing load balancers of Services into subnets tagged
    # role/elb, internal ones into role/internal-elb.
    elb_role = "kubernetes.io/role/elb" if part is Part.PUBLIC_SUBNET else "kubernetes.io/role/internal-elb"
    return ec2_tags(spec, part, subnet_name(spec, part, zone), **{ZONE_TAG: zone, elb_role: "1"})


@dataclass(frozen=True, order=True)
class Rule:
    """One ingress rule: protocol and ports from a CIDR or from another security group (by part)."""

    protocol: str
    from_port: int
    to_port: int
    source: str  # "cidr:<block>" or "group:<Part>"
    description: str = ""

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.protocol, self.from_port, self.to_port, self.source)


def _from_groups(protocol: str, ports: tuple[int, int], groups: tuple[Part, ...], why: str) -> list[Rule]:
    return [Rule(protocol, ports[0], ports[1], f"group:{g.value}", why) for g in groups]


def ingress_rules(spec: ClusterSpec, part: Part) -> list[Rule]:
    """What each security group lets in; egress stays AWS's default (everything out).

    Nodes must reach image registries, S3, Secrets Manager and their users' services, so egress
    is open (through the NAT gateways). Ingress is only what Kubernetes needs:
    API 6443 (from the load balancer, which also health-checks it, from nodes and masters),
    etcd 2379-2380 among masters, kubelets 10250 from masters (logs, exec, metrics), VXLAN 8472
    (the pod network overlay) and NodePorts among nodes. The load balancer takes 443 from anywhere:
    the API authenticates every client by its certificate.
    """
    masters, workers, lb = Part.MASTERS_GROUP, Part.WORKERS_GROUP, Part.LB_GROUP
    vpc = aws_settings(spec).vpc_cidr
    if part is Part.LB_GROUP:
        return [Rule("tcp", API_PORT, API_PORT, "cidr:0.0.0.0/0", "tenant API from anywhere (client certificates)")]
    if part is Part.MASTERS_GROUP:
        return [
            *_from_groups("tcp", (APISERVER_PORT, APISERVER_PORT), (lb,), "API via the load balancer, health checks"),
            *_from_groups("tcp", (APISERVER_PORT, APISERVER_PORT), (masters, workers), "API from nodes"),
            *_from_groups("tcp", (ETCD_CLIENT_PORT, ETCD_PEER_PORT), (masters,), "etcd client and peer"),
            *_from_groups("tcp", (KUBELET_PORT, KUBELET_PORT), (masters,), "kubelet API from the API server"),
            *_from_groups("udp", (VXLAN_PORT, VXLAN_PORT), (masters, workers), "pod network (VXLAN)"),
        ]
    return [
        *_from_groups("tcp", (KUBELET_PORT, KUBELET_PORT), (masters,), "kubelet API from the API server"),
        *_from_groups("udp", (VXLAN_PORT, VXLAN_PORT), (masters, workers), "pod network (VXLAN)"),
        Rule("tcp", NODE_PORTS[0], NODE_PORTS[1], f"cidr:{vpc}", "NodePort services inside the VPC"),
    ]


def ip_permission(rule: Rule, group_ids: dict[Part, str]) -> dict[str, Any]:
    """The EC2 API form of a rule, with group parts resolved to group ids."""
    kind, _, value = rule.source.partition(":")
    permission: dict[str, Any] = {"IpProtocol": rule.protocol, "FromPort": rule.from_port, "ToPort": rule.to_port}
    if kind == "cidr":
        permission["IpRanges"] = [{"CidrIp": value, "Description": rule.description}]
    else:
        permission["UserIdGroupPairs"] = [{"GroupId": group_ids[Part(value)], "Description": rule.description}]
    return permission


# --- IAM ---------------------------------------------------------------------------------------------
def trust_policy() -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        },
        sort_keys=True,
    )


def readable_certificates(spec: ClusterSpec, role: str) -> list[str]:
    """Certificate name patterns the nodes of a role may read: a worker never reads the API
    server's, etcd's or the service-account signing key, only kubelet key pairs."""
    first = f"{role}-0"
    names = {bootstrap.certificate_dir(r.name, first) for r in bootstrap.node_certificates(spec, first)}
    patterns = sorted(f"{name}-{role}-*" if name in ("node", "etcd-server", "etcd-peer") else name for name in names)
    return [*patterns, TRUST_BUNDLE]


def node_policy(spec: ClusterSpec, role: str, bucket: str, partition: str, account: str) -> str:
    """Inline policy of a node role: read its own role's key pairs and cloud-configs, and its tags.

    Secrets Manager ARNs end in ``-`` plus six random characters, hence ``-??????``. The region is
    a wildcard: the secrets live in the worker's region, which need not be the cluster's.
    """
    secrets = [
        f"arn:{partition}:secretsmanager:*:{account}:secret:{secret_name(spec.id, pattern)}-??????"
        for pattern in readable_certificates(spec, role)
    ]
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "KeyPairs", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secrets},
            {
                "Sid": "CloudConfig",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:{partition}:s3:::{bucket}/{CLOUD_CONFIG_PREFIX}{role}-*",
            },
            # The bootstrap reads its node name from its own tags (instance metadata cannot serve
            # tag keys with '/'); read-only and harmless.
            {"Sid": "OwnTags", "Effect": "Allow", "Action": "ec2:DescribeTags", "Resource": "*"},
        ],
    }
    return json.dumps(document, sort_keys=True)


# --- cloud-config and user data -------------------------------------------------------------------------
def certificate_secrets(spec: ClusterSpec, role: str) -> list[dict[str, str]]:
    """Which secret goes into which directory under /etc/kubernetes/ssl, with ``${NODE_NAME}`` for
    the node's own key pairs: the same paths the KVM VMs find their mounted Secrets at."""
    found = []
    for request in bootstrap.node_certificates(spec, f"{role}-0"):
        directory = bootstrap.certificate_dir(request.name, f"{role}-0")
        name = request.name.replace(f"{role}-0", "${NODE_NAME}")
        found.append({"secret": secret_name(spec.id, name), "directory": f"{bootstrap.CERTS_DIR}/{directory}"})
    return sorted(found, key=lambda item: item["directory"])


def cloud_config(spec: ClusterSpec, role: str, version: str, secrets_region: str) -> str:
    """The node bootstrap's cloud-config (``activities.nodes.bootstrap``) for the role and version,
    with the key pairs fetched from Secrets Manager.

    KVM VMs get their key pairs over a virtio-9p mount of the pod's Secrets. An EC2 instance
    fetches them itself at every boot (``tenantctl-certificates.service``, before the kubelet),
    with its instance profile, into the same directories, so everything else is the same and a
    reboot after a rotation loads the new key pairs.
    """
    version = normalize_version(version)
    document = bootstrap.cloud_config_document(spec, role, version)
    manifest = {
        "region": secrets_region,
        "trust_bundle": secret_name(spec.id, TRUST_BUNDLE),
        "certificates": certificate_secrets(spec, role),
    }
    document.files.append(
        {
            "path": "/etc/tenantctl/certificates.yaml",
            "permissions": "0644",
            "content": yaml.safe_dump(manifest, sort_keys=False),
        }
    )
    document.files.append(
        {
            "path": "/etc/systemd/system/tenantctl-certificates.service",
            "permissions": "0644",
            "content": "\n".join(
                [
                    "[Unit]",
                    "Description=Fetch this node's key pairs from AWS Secrets Manager",
                    "Wants=network-online.target",
                    "After=network-online.target",
                    "Before=kubelet.service",
                    "[Service]",
                    "Type=oneshot",
                    "ExecStart=/opt/tenantctl/bin/fetch-certificates /etc/tenantctl/certificates.yaml",
                    "[Install]",
                    "WantedBy=multi-user.target kubelet.service",
                    "",
                ]
            ),
        }
    )
    # The key pairs before anything that reads them: right after systemd learns of the new units.
    document.runcmd[1:1] = [["systemctl", "enable", "--now", "tenantctl-certificates.service"]]
    return document.render(f"tenantctl: {role} nodes of cluster {spec.id} on AWS, Kubernetes v{version}")


def user_data(spec: ClusterSpec, role: str, version: str, bucket: str) -> str:
    """What an instance boots with: where its cloud-config is. The node AMI's bootstrap agent
    fetches it with the instance profile (user data is visible to anyone who can describe the
    instance, and limited to 16 KiB, so the cloud-config itself never goes here)."""
    aws = aws_settings(spec)
    return (
        "#!/bin/sh\n"
        f"# tenantctl: {role} node of cluster {spec.id}, Kubernetes v{normalize_version(version)}\n"
        "exec /opt/tenantctl/bin/bootstrap"
        f" --region {aws.region}"
        f" --cloud-config s3://{bucket}/{cloud_config_key(role, version)}"
        f" --node-name-tag {NODE_LABEL}\n"
    )


def ami_name(spec: ClusterSpec, version: str) -> str:
    return f"{aws_settings(spec).ami_name_prefix}-{normalize_version(version)}"


def instance_type(spec: ClusterSpec, role: str) -> str:
    aws = aws_settings(spec)
    if role == "master":
        return spec.masters.instance_type or aws.master_instance_type
    if spec.workers.instance_type is None:
        raise InvalidInput("workers.instance_type is required for provider aws")
    return spec.workers.instance_type


def launch_template_data(
    spec: ClusterSpec,
    role: str,
    version: str,
    *,
    image_id: str,
    root_device: str,
    profile: str,
    group_id: str,
    bucket: str,
) -> dict[str, Any]:
    """One launch template version: the AMI of the version, the role's size, identity and group.

    IMDSv2 only, with a hop limit of 1: pods (one hop further) cannot reach the instance
    metadata, so they never get the node role's credentials, which read the role's key pairs.
    """
    return {
        "ImageId": image_id,
        "InstanceType": instance_type(spec, role),
        "IamInstanceProfile": {"Name": profile},
        "SecurityGroupIds": [group_id],
        "UserData": base64.b64encode(user_data(spec, role, version, bucket).encode()).decode(),
        "MetadataOptions": metadata_options(),
        "BlockDeviceMappings": [
            {
                "DeviceName": root_device,
                "Ebs": {
                    "VolumeSize": ROOT_VOLUME_GIB,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
    }


def metadata_options() -> Any:
    return {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1}


def template_description(version: str, data: dict[str, Any]) -> str:
    """Names a launch template version by what it holds, so a retry finds the version it made."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return f"kubernetes {normalize_version(version)} config {digest}"


def content_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
