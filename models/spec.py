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
from pydantic_core import PydanticCustomError

from models.base import Model
from models.durations import Duration, format_duration
from models.maintenance import Maintenance
from models.node_health import NodeRepair
from models.versions import KubernetesVersion

# Every pattern is matched with ``fullmatch`` (``$`` would let a trailing newline through) and only
# after a length check, so no value reaches a regex or arithmetic unbounded.
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_CLUSTER_ID_LENGTH = 40
MEMORY = re.compile(r"([1-9][0-9]{0,6})(Mi|Gi)")
MIN_MEMORY_MIB = 64
MAX_MEMORY_MIB = 4096 * 1024
AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+){1,3}-[0-9]{1,2}")
INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]{0,15}\.[a-z0-9]{1,16}")
AMI_NAME_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9()./_-]{0,99}")
"""AMI names allow 3-128 characters of this set; '-<version>' is appended to the prefix."""
# The OCI distribution reference grammar (github.com/distribution/reference), repository part only:
# [domain[:port]/]path-component(/path-component)*, at most 255 characters in all.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]{{1,5}})?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REPOSITORY = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
MAX_IMAGE_REPOSITORY_LENGTH = 255
SHOWN_VALUE_LENGTH = 80
"""A value quoted back in an error is cut to this many characters: a 10 MB value is not echoed."""
MAX_PROBLEM_LENGTH = 300
MAX_PROBLEMS_SHOWN = 20


def shown(value: object) -> str:
    """A user's value, quoted for an error message (control characters escaped) and cut short when long."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > SHOWN_VALUE_LENGTH:
        return f"{text[:SHOWN_VALUE_LENGTH]!r}... ({len(text)} characters)"
    return repr(text)


def field_rule(field: str, message: str) -> PydanticCustomError:
    """An error a model-level rule raises about one of its fields (``field`` relative to the model),
    so the message names ``masters.cpu``, not the whole spec."""
    return PydanticCustomError("field_rule", "{message}", {"field": field, "message": message})


class Provider(StrEnum):
    KVM = "kvm"
    AWS = "aws"


def _cluster_id(value: str) -> str:
    if len(value) > MAX_CLUSTER_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_CLUSTER_ID_LENGTH} characters (got {len(value)})")
    if not DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending "
            f"with a letter or digit (got {shown(value)})"
        )
    return value


def _dns_label(value: str) -> str:
    if len(value) > 63 or not DNS1123_LABEL.fullmatch(value):
        raise ValueError(f"must be a DNS-1123 label of at most 63 characters (got {shown(value)})")
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or "." not in value or not DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"must be a DNS domain such as 'k8s.example.com' (got {shown(value)})")
    return value


def _kubernetes_name(value: str) -> str:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"must be a Kubernetes object name (DNS-1123 subdomain) such as 'nginx' (got {shown(value)})")
    return value


def _memory(value: str) -> str:
    match = MEMORY.fullmatch(value) if len(value) <= 12 else None
    if match is None:
        raise ValueError(f"must be a quantity in Mi or Gi such as '8Gi' (got {shown(value)})")
    if not MIN_MEMORY_MIB <= memory_mib(value) <= MAX_MEMORY_MIB:
        raise ValueError(f"must be between {MIN_MEMORY_MIB}Mi and {MAX_MEMORY_MIB // 1024}Gi (got {shown(value)})")
    return value


def _cidr(value: str) -> str:
    if len(value) > 18:  # "255.255.255.255/32"
        raise ValueError(f"must be a valid network in CIDR notation such as '10.2.0.0/16' (got {shown(value)})")
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"must be a valid network in CIDR notation such as '10.2.0.0/16': {exc}") from exc
    if network.version != 4:
        raise ValueError(f"must be an IPv4 network (got {shown(value)})")
    if network.prefixlen > 24:
        raise ValueError(f"must be /24 or larger to hold a cluster (got /{network.prefixlen})")
    return str(network)


def _image_repository(value: str) -> str:
    if len(value) > MAX_IMAGE_REPOSITORY_LENGTH:
        raise ValueError(f"must be at most {MAX_IMAGE_REPOSITORY_LENGTH} characters (got {len(value)})")
    if IMAGE_REPOSITORY.fullmatch(value):
        return value
    last = value.rsplit("/", 1)[-1]
    if "@" in last or ":" in last:
        raise ValueError(
            f"must be a repository without tag or digest: the tag is the Kubernetes version (got {shown(value)})"
        )
    raise ValueError(
        "must be an OCI image repository such as 'quay.io/tenantctl/k8s-kvm-node' "
        f"(registry[:port]/path, lowercase path) (got {shown(value)})"
    )


def _matching(pattern: re.Pattern[str], example: str, max_length: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > max_length or not pattern.fullmatch(value):
            raise ValueError(f"must look like '{example}' (at most {max_length} characters; got {shown(value)})")
        return value

    return AfterValidator(check)


ClusterId = Annotated[str, AfterValidator(_cluster_id)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
DnsDomain = Annotated[str, AfterValidator(_dns_subdomain)]
KubernetesName = Annotated[str, AfterValidator(_kubernetes_name)]
Memory = Annotated[str, AfterValidator(_memory)]
Cidr = Annotated[str, AfterValidator(_cidr)]
ImageRepository = Annotated[str, AfterValidator(_image_repository)]
InstanceType = Annotated[str, _matching(INSTANCE_TYPE, "m5.large", 33)]
AwsRegion = Annotated[str, _matching(AWS_REGION, "eu-central-1", 32)]
AvailabilityZone = Annotated[str, _matching(re.compile(r"[a-z]{2}(-[a-z]+){1,3}-[0-9]{1,2}[a-z]"), "eu-central-1a", 33)]
AmiNamePrefix = Annotated[str, _matching(AMI_NAME_PREFIX, "tenantctl-node", 100)]


def memory_mib(quantity: str) -> int:
    """``8Gi`` -> 8192."""
    number, unit = int(quantity[:-2]), quantity[-2:]
    return number * 1024 if unit == "Gi" else number


class MachineSize(Model):
    """Size of one node: cpu and memory for KVM VMs, an instance type for AWS."""

    cpu: int | None = Field(default=None, ge=1, le=64, description="vCPUs of each KVM VM")
    memory: Memory | None = Field(default=None, description="memory of each KVM VM, e.g. 8Gi")
    instance_type: InstanceType | None = Field(default=None, description="EC2 instance type, e.g. m5.large")


class MasterPool(MachineSize):
    count: Literal[1, 3, 5] = Field(default=3, description="masters run etcd: an odd count keeps quorum")


class WorkerPool(MachineSize):
    count: int = Field(default=3, ge=1, le=200)
    max_surge: int = Field(default=1, ge=0, le=10, description="extra workers during an upgrade")
    max_unavailable: int = Field(default=0, ge=0, le=10, description="workers down at once during an upgrade")

    @model_validator(mode="after")
    def _surge_or_unavailable(self) -> WorkerPool:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise field_rule(
                "max_surge", "max_surge and max_unavailable cannot both be 0: an upgrade could never progress"
            )
        return self


class Networking(Model):
    pod_cidr: Cidr = "10.2.0.0/16"
    service_cidr: Cidr = "172.31.0.0/16"

    @model_validator(mode="after")
    def _disjoint(self) -> Networking:
        if ipaddress.ip_network(self.pod_cidr).overlaps(ipaddress.ip_network(self.service_cidr)):
            raise field_rule("service_cidr", f"pod_cidr {self.pod_cidr} overlaps service_cidr {self.service_cidr}")
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
        # Each duration is at most 100 years (models.durations), so this arithmetic cannot overflow.
        for name in ("ttl", "ca_ttl"):
            if getattr(self, name) < timedelta(minutes=5):
                raise field_rule(name, "must be at least 5m")
        if self.rotation_interval < timedelta(minutes=1):
            raise field_rule("rotation_interval", "must be at least 1m")
        if self.rotation_interval >= self.ttl:
            raise field_rule(
                "rotation_interval",
                f"rotation_interval ({format_duration(self.rotation_interval)}) must be shorter than ttl "
                f"({format_duration(self.ttl)}), "
                "or certificates expire before they are rotated",
            )
        if self.rotation_interval * 3 >= self.ttl * 2:
            # A leaf is renewed by the first scheduled run that finds it due (``renew_before``), i.e. at
            # least interval/2 old. Runs fall on a fixed grid, so one issued just before a run (at
            # create, or by an on-demand rotation) waits up to 1.5 intervals: that must stay below ttl.
            raise field_rule(
                "rotation_interval",
                f"rotation_interval ({format_duration(self.rotation_interval)}) must be under 2/3 of ttl "
                f"({format_duration(self.ttl)}): a certificate can wait 1.5 intervals for the rotation that "
                "renews it, and would expire first",
            )
        if self.ttl >= self.ca_ttl:
            raise field_rule(
                "ttl", f"ttl ({format_duration(self.ttl)}) must be shorter than ca_ttl ({format_duration(self.ca_ttl)})"
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

    image_repository: ImageRepository = Field(
        default="quay.io/tenantctl/k8s-kvm-node", description="VM image; the tag is the Kubernetes version"
    )
    ingress_class: KubernetesName = "nginx"
    ingress_namespace: DnsLabel = Field(
        default="ingress-nginx", description="host namespace of the ingress controller allowed into the tenant"
    )


class AwsSettings(Model):
    region: AwsRegion = Field(default="eu-central-1", description="AWS region")
    availability_zones: list[AvailabilityZone] = Field(
        default_factory=lambda: ["eu-central-1a"], min_length=1, max_length=3
    )
    vpc_cidr: Cidr = "10.0.0.0/16"
    master_instance_type: InstanceType = "m5.large"
    ami_name_prefix: AmiNamePrefix = Field(
        default="tenantctl-node", description="AMIs are found by name '<prefix>-<kubernetes version>'"
    )

    @model_validator(mode="after")
    def _zones_in_region(self) -> AwsSettings:
        for index, zone in enumerate(self.availability_zones):
            if not (zone.startswith(self.region) and len(zone) == len(self.region) + 1):
                raise field_rule(
                    f"availability_zones.{index}", f"availability zone '{zone}' is not a zone of region {self.region}"
                )
        if len(set(self.availability_zones)) != len(self.availability_zones):
            raise field_rule("availability_zones", "availability_zones must not repeat a zone")
        return self


class DriftCheck(Model):
    """How often the cluster entity compares the backends with the spec and repairs what differs."""

    interval: Duration = Field(default=timedelta(minutes=5), description="time between two drift checks")
    paused: bool = Field(default=False, description="no periodic check (on-demand 'tenantctl reconcile' still runs)")

    @model_validator(mode="after")
    def _interval_rules(self) -> DriftCheck:
        # Seconds are allowed for tests and demos on the local stack (node auto-repair in seconds).
        if self.interval < timedelta(seconds=1):
            raise ValueError("drift_check.interval must be at least 1s")
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
    node_repair: NodeRepair = Field(
        default_factory=NodeRepair,
        description="node auto-repair, part of the periodic check (issue 12): paused with the drift check",
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
            raise field_rule(other, f"section '{other}' does not apply to provider '{self.provider}'; remove it")
        for pool_name in ("masters", "workers"):
            pool: MachineSize = getattr(self, pool_name)
            if self.provider is Provider.KVM:
                for size in ("cpu", "memory"):
                    if getattr(pool, size) is None:
                        got = " (got null)" if size in pool.model_fields_set else ""
                        raise field_rule(
                            f"{pool_name}.{size}", f"required: provider kvm needs cpu and memory for each VM{got}"
                        )
                if pool.instance_type is not None:
                    raise field_rule(f"{pool_name}.instance_type", "applies to provider aws only")
            else:
                for size in ("cpu", "memory"):
                    if getattr(pool, size) is not None:
                        raise field_rule(
                            f"{pool_name}.{size}", "provider aws sizes nodes by instance_type, not cpu/memory"
                        )
        if self.provider is Provider.AWS and self.workers.instance_type is None:
            got = " (got null)" if "instance_type" in self.workers.model_fields_set else ""
            raise field_rule("workers.instance_type", f"required for provider aws{got}")
        if self.aws is not None:
            vpc = ipaddress.ip_network(self.aws.vpc_cidr)
            for name in ("pod_cidr", "service_cidr"):
                net = ipaddress.ip_network(getattr(self.networking, name))
                if vpc.overlaps(net):
                    raise field_rule("aws.vpc_cidr", f"aws.vpc_cidr {vpc} overlaps networking.{name} {net}")
            if len(self.aws.availability_zones) * 2 > 2 ** (24 - vpc.prefixlen):
                raise field_rule("aws.vpc_cidr", f"aws.vpc_cidr {vpc} is too small for two /24 subnets per zone")
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


def _path_part(part: object) -> str:
    # Unknown keys are the user's text: bounded like any value.
    text = str(part)
    return text if len(text) <= SHOWN_VALUE_LENGTH else shown(text)


def _clipped(line: str) -> str:
    return line if len(line) <= MAX_PROBLEM_LENGTH else f"{line[:MAX_PROBLEM_LENGTH]}... (cut)"


def describe_validation_error(error: ValidationError) -> list[str]:
    """One line per problem: ``field.path: rule``, the way a user wants to read it.

    Every line starts with the dotted path of the field at fault (rules of a section name the field
    they are about); lines are cut to a few hundred characters, and at most
    :data:`MAX_PROBLEMS_SHOWN` are listed.
    """
    lines = []
    items = error.errors(include_url=False)
    for item in items[:MAX_PROBLEMS_SHOWN]:
        parts = [_path_part(part) for part in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "field_rule":
            ctx = item.get("ctx") or {}
            parts.append(str(ctx.get("field", "")))
            message = str(ctx.get("message", message))
        elif item["type"] == "extra_forbidden":
            message = "unknown field (not part of the cluster spec; check the spelling)"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item.get("input", "") is None:
            message = "a value is required here (got null)"
        path = ".".join(p for p in parts if p)
        lines.append(_clipped(f"{path or '<spec>'}: {message}"))
    if len(items) > MAX_PROBLEMS_SHOWN:
        lines.append(f"... and {len(items) - MAX_PROBLEMS_SHOWN} more problems")
    return lines


def parse_spec(data: Any, source: str = "<spec>") -> ClusterSpec:
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, describe_validation_error(exc)) from None


def cluster_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a cluster id (the spec's rule), or None: for ids typed on a command line."""
    try:
        _cluster_id(value)
    except ValueError as exc:
        return f"not a cluster id: {exc}"
    return None
