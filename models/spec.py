"""The desired state of a tenant cluster, as written by a user in ``cluster.yaml``.

Every rule lives here so that the CLI refuses a bad spec before anything starts, and the workflows
can trust what they receive. Each error names the field (its dotted path) and the rule.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from models.base import Model
from models.durations import Duration, format_duration
from models.maintenance import Maintenance
from models.versions import KubernetesVersion

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_CLUSTER_ID_LENGTH = 40
MEMORY = re.compile(r"^[1-9]\d*(Mi|Gi)$")
AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


class Provider(StrEnum):
    KVM = "kvm"
    AWS = "aws"


def _cluster_id(value: str) -> str:
    if len(value) > MAX_CLUSTER_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_CLUSTER_ID_LENGTH} characters (got {len(value)})")
    if not DNS1123_LABEL.match(value):
        raise ValueError(
            "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending "
            f"with a letter or digit (got '{value}')"
        )
    return value


def _dns_label(value: str) -> str:
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise ValueError(f"must be a DNS-1123 label of at most 63 characters (got '{value}')")
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or "." not in value or not DNS1123_SUBDOMAIN.match(value):
        raise ValueError(f"must be a DNS domain such as 'k8s.example.com' (got '{value}')")
    return value


def _memory(value: str) -> str:
    if not MEMORY.match(value):
        raise ValueError(f"must be a quantity in Mi or Gi such as '8Gi' (got '{value}')")
    return value


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"must be a valid network in CIDR notation such as '10.2.0.0/16': {exc}") from exc
    if network.version != 4:
        raise ValueError(f"must be an IPv4 network (got '{value}')")
    if network.prefixlen > 24:
        raise ValueError(f"must be /24 or larger to hold a cluster (got /{network.prefixlen})")
    return str(network)


ClusterId = Annotated[str, AfterValidator(_cluster_id)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
DnsDomain = Annotated[str, AfterValidator(_dns_subdomain)]
Memory = Annotated[str, AfterValidator(_memory)]
Cidr = Annotated[str, AfterValidator(_cidr)]


def memory_mib(quantity: str) -> int:
    """``8Gi`` -> 8192."""
    number, unit = int(quantity[:-2]), quantity[-2:]
    return number * 1024 if unit == "Gi" else number


class MachineSize(Model):
    """Size of one node: cpu and memory for KVM VMs, an instance type for AWS."""

    cpu: int | None = Field(default=None, ge=1, le=64, description="vCPUs of each KVM VM")
    memory: Memory | None = Field(default=None, description="memory of each KVM VM, e.g. 8Gi")
    instance_type: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$", description="EC2 instance type, e.g. m5.large"
    )


class MasterPool(MachineSize):
    count: Literal[1, 3, 5] = Field(default=3, description="masters run etcd: an odd count keeps quorum")


class WorkerPool(MachineSize):
    count: int = Field(default=3, ge=1, le=200)
    max_surge: int = Field(default=1, ge=0, le=10, description="extra workers during an upgrade")
    max_unavailable: int = Field(default=0, ge=0, le=10, description="workers down at once during an upgrade")

    @model_validator(mode="after")
    def _surge_or_unavailable(self) -> WorkerPool:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0: an upgrade could never progress")
        return self


class Networking(Model):
    pod_cidr: Cidr = "10.2.0.0/16"
    service_cidr: Cidr = "172.31.0.0/16"

    @model_validator(mode="after")
    def _disjoint(self) -> Networking:
        if ipaddress.ip_network(self.pod_cidr).overlaps(ipaddress.ip_network(self.service_cidr)):
            raise ValueError(f"pod_cidr {self.pod_cidr} overlaps service_cidr {self.service_cidr}")
        return self

    @property
    def api_service_ip(self) -> str:
        """The first service IP is the in-cluster address of the API server (``kubernetes.default``)."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))


class Certificates(Model):
    """Short lives instead of revocation: Kubernetes does not read CRLs (the talk: TTL 3d, rotate daily)."""

    ttl: Duration = Field(default=timedelta(hours=72), description="lifetime of every leaf certificate")
    rotation_interval: Duration = Field(default=timedelta(hours=24), description="how often leaves rotate")
    ca_ttl: Duration = Field(default=timedelta(days=3650), description="lifetime of the cluster's root CA")

    @model_validator(mode="after")
    def _ordering(self) -> Certificates:
        if self.rotation_interval < timedelta(minutes=1):
            raise ValueError("rotation_interval must be at least 1m")
        if self.rotation_interval >= self.ttl:
            raise ValueError(
                f"rotation_interval ({format_duration(self.rotation_interval)}) must be shorter than ttl "
                f"({format_duration(self.ttl)}), "
                "or certificates expire before they are rotated"
            )
        if self.rotation_interval * 3 >= self.ttl * 2:
            # A leaf is renewed by the first scheduled run that finds it due (``renew_before``), i.e. at
            # least interval/2 old. Runs fall on a fixed grid, so one issued just before a run (at
            # create, or by an on-demand rotation) waits up to 1.5 intervals: that must stay below ttl.
            raise ValueError(
                f"rotation_interval ({format_duration(self.rotation_interval)}) must be under 2/3 of ttl "
                f"({format_duration(self.ttl)}): a certificate can wait 1.5 intervals for the rotation that "
                "renews it, and would expire first"
            )
        if self.ttl >= self.ca_ttl:
            raise ValueError(
                f"ttl ({format_duration(self.ttl)}) must be shorter than ca_ttl ({format_duration(self.ca_ttl)})"
            )
        return self

    @property
    def renew_before(self) -> timedelta:
        """A leaf is due when less than this lifetime remains.

        ``ttl - interval/2``: a scheduled run (one interval after the last issue) always finds
        the leaf due, while a leaf issued moments ago (an on-demand rotation, a retried activity)
        is not re-issued, so rotations never churn.
        """
        return self.ttl - self.rotation_interval / 2


class KvmSettings(Model):
    """KVM-in-Kubernetes: tenant nodes are VMs in pods of the host cluster."""

    image_repository: str = Field(
        default="quay.io/tenantctl/k8s-kvm-node", description="VM image; the tag is the Kubernetes version"
    )
    ingress_class: str = "nginx"
    ingress_namespace: DnsLabel = Field(
        default="ingress-nginx", description="host namespace of the ingress controller allowed into the tenant"
    )


class AwsSettings(Model):
    region: str = Field(default="eu-central-1", description="AWS region")
    availability_zones: list[str] = Field(default_factory=lambda: ["eu-central-1a"], min_length=1, max_length=3)
    vpc_cidr: Cidr = "10.0.0.0/16"
    master_instance_type: str = Field(default="m5.large", pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
    ami_name_prefix: str = Field(
        default="tenantctl-node", description="AMIs are found by name '<prefix>-<kubernetes version>'"
    )

    @model_validator(mode="after")
    def _zones_in_region(self) -> AwsSettings:
        if not AWS_REGION.match(self.region):
            raise ValueError(f"region '{self.region}' is not an AWS region name such as eu-central-1")
        for zone in self.availability_zones:
            if not (zone.startswith(self.region) and len(zone) == len(self.region) + 1 and zone[-1].isalpha()):
                raise ValueError(f"availability zone '{zone}' is not a zone of region {self.region}")
        if len(set(self.availability_zones)) != len(self.availability_zones):
            raise ValueError("availability_zones must not repeat a zone")
        return self


class DriftCheck(Model):
    """How often the cluster entity compares the backends with the spec and repairs what differs."""

    interval: Duration = Field(default=timedelta(minutes=5), description="time between two drift checks")
    paused: bool = Field(default=False, description="no periodic check (on-demand 'tenantctl reconcile' still runs)")

    @model_validator(mode="after")
    def _interval_rules(self) -> DriftCheck:
        if self.interval < timedelta(minutes=1):
            raise ValueError("drift_check.interval must be at least 1m")
        return self


class ClusterSpec(Model):
    """A tenant cluster as its owner wants it."""

    id: ClusterId = Field(description="DNS-1123 label, at most 40 characters; names everything of the cluster")
    owner: DnsLabel = Field(description="the customer organization that owns the cluster")
    provider: Provider
    kvm: KvmSettings | None = None
    aws: AwsSettings | None = None
    kubernetes_version: KubernetesVersion
    base_domain: DnsDomain
    masters: MasterPool = Field(default_factory=MasterPool)
    workers: WorkerPool = Field(default_factory=WorkerPool)
    networking: Networking = Field(default_factory=Networking)
    certificates: Certificates = Field(default_factory=Certificates)
    deletion_protection: bool = False
    maintenance: Maintenance | None = Field(
        default=None, description="when upgrades and CA rotations may disrupt the cluster (none: any time)"
    )
    drift_check: DriftCheck = Field(
        default_factory=DriftCheck, description="the periodic drift check and repair (issue 12)"
    )

    @model_validator(mode="before")
    @classmethod
    def _provider_section_default(cls, data: Any) -> Any:
        # A spec that names its provider may leave that provider's section out: its defaults apply.
        if isinstance(data, dict) and data.get("provider") in ("kvm", "aws") and data.get(data["provider"]) is None:
            data = {**data, data["provider"]: {}}
        return data

    @model_validator(mode="after")
    def _provider_rules(self) -> ClusterSpec:
        other = "aws" if self.provider is Provider.KVM else "kvm"
        if getattr(self, other) is not None:
            raise ValueError(f"section '{other}' does not apply to provider '{self.provider}'; remove it")
        for pool_name in ("masters", "workers"):
            pool: MachineSize = getattr(self, pool_name)
            if self.provider is Provider.KVM:
                if pool.cpu is None or pool.memory is None:
                    raise ValueError(f"{pool_name}: provider kvm needs cpu and memory for each VM")
                if pool.instance_type is not None:
                    raise ValueError(f"{pool_name}.instance_type applies to provider aws only")
            elif pool.cpu is not None or pool.memory is not None:
                raise ValueError(f"{pool_name}: provider aws sizes nodes by instance_type, not cpu/memory")
        if self.provider is Provider.AWS and self.workers.instance_type is None:
            raise ValueError("workers.instance_type is required for provider aws")
        if self.aws is not None:
            vpc = ipaddress.ip_network(self.aws.vpc_cidr)
            for name in ("pod_cidr", "service_cidr"):
                net = ipaddress.ip_network(getattr(self.networking, name))
                if vpc.overlaps(net):
                    raise ValueError(f"aws.vpc_cidr {vpc} overlaps networking.{name} {net}")
            if len(self.aws.availability_zones) * 2 > 2 ** (24 - vpc.prefixlen):
                raise ValueError(f"aws.vpc_cidr {vpc} is too small for two /24 subnets per zone")
        return self

    # --- names derived from the id, used by every provider --------------------------------------
    @property
    def api_domain(self) -> str:
        return f"api.{self.id}.{self.base_domain}"

    @property
    def cluster_domain(self) -> str:
        return f"{self.id}.{self.base_domain}"

    def node_names(self) -> list[str]:
        return [f"master-{i}" for i in range(self.masters.count)] + [f"worker-{i}" for i in range(self.workers.count)]


class SpecError(ValueError):
    """A cluster spec that cannot be used; ``problems`` holds one line per field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid cluster spec:\n" + "\n".join(f"  - {p}" for p in problems))


def describe_validation_error(error: ValidationError) -> list[str]:
    """One line per problem: ``field.path: rule``, the way a user wants to read it."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (not part of the cluster spec; check the spelling)"
        elif item["type"] == "missing":
            message = "required field is missing"
        lines.append(f"{path or '<spec>'}: {message}")
    return lines


def parse_spec(data: Any, source: str = "<spec>") -> ClusterSpec:
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, describe_validation_error(exc)) from None
