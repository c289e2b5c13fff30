"""The per-cluster PKI as desired state: which mount, roles and certificates a cluster has.

Pure functions of the spec, so workflows, activities and tests derive the same names. The
subject of each certificate is what Kubernetes RBAC reads: CN is the user, O the group.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import Field

from models.base import FrozenModel
from models.durations import Duration
from models.spec import ClusterSpec, Provider


class Component(StrEnum):
    """One Vault role per component; the role pins what its certificates may say."""

    APISERVER = "apiserver"
    ETCD = "etcd"
    NODE = "node"
    CONTROLLER_MANAGER = "controller-manager"
    SCHEDULER = "scheduler"
    SERVICE_ACCOUNT = "service-account"
    ADMIN = "admin"


ADMIN_COMMON_NAME = "tenantctl-admin"
MASTERS_GROUP = "system:masters"
NODES_GROUP = "system:nodes"
DEFAULT_MOUNT_PREFIX = "pki"


def pki_mount(cluster_id: str, prefix: str = DEFAULT_MOUNT_PREFIX) -> str:
    """Vault mount of the cluster's PKI secrets engine, e.g. ``pki/acme-prod``."""
    return f"{prefix}/{cluster_id}"


def vault_policy_name(cluster_id: str) -> str:
    return f"tenantctl-{cluster_id}"


def apiserver_names(spec: ClusterSpec) -> list[str]:
    return [
        spec.api_domain,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]


class RoleSpec(FrozenModel):
    """A Vault PKI role; fields map one to one onto the role API."""

    name: Component
    allowed_domains: list[str]
    allow_bare_domains: bool = True
    allow_subdomains: bool = False
    allow_glob_domains: bool = False
    allow_localhost: bool = False
    allow_ip_sans: bool = False
    enforce_hostnames: bool = False
    server_flag: bool = False
    client_flag: bool = True
    organization: list[str] = Field(default_factory=list)
    max_ttl: timedelta


def role_specs(spec: ClusterSpec) -> list[RoleSpec]:
    """One role per component, limited to the cluster's names and to its certificate TTL."""
    ttl = spec.certificates.ttl
    etcd_domain = f"etcd.{spec.cluster_domain}"
    return [
        RoleSpec(
            name=Component.APISERVER,
            allowed_domains=[*apiserver_names(spec), "kube-apiserver"],
            allow_ip_sans=True,
            allow_localhost=True,
            server_flag=True,
            max_ttl=ttl,
        ),
        RoleSpec(
            name=Component.ETCD,
            allowed_domains=[etcd_domain],
            allow_bare_domains=False,
            allow_subdomains=True,
            allow_ip_sans=True,
            allow_localhost=True,
            server_flag=True,
            max_ttl=ttl,
        ),
        RoleSpec(
            name=Component.NODE,
            allowed_domains=["system:node:*", f"*.nodes.{spec.cluster_domain}"],
            allow_bare_domains=False,
            allow_glob_domains=True,
            allow_ip_sans=True,
            server_flag=True,  # kubelets serve their API with the same key pair
            organization=[NODES_GROUP],
            max_ttl=ttl,
        ),
        RoleSpec(
            name=Component.CONTROLLER_MANAGER,
            allowed_domains=["system:kube-controller-manager"],
            max_ttl=ttl,
        ),
        RoleSpec(name=Component.SCHEDULER, allowed_domains=["system:kube-scheduler"], max_ttl=ttl),
        RoleSpec(name=Component.SERVICE_ACCOUNT, allowed_domains=["service-accounts"], max_ttl=ttl),
        RoleSpec(
            name=Component.ADMIN,
            allowed_domains=[ADMIN_COMMON_NAME],
            organization=[MASTERS_GROUP],
            max_ttl=ttl,
        ),
    ]


class CertificateRequest(FrozenModel):
    """One leaf certificate the cluster needs, and the node(s) that load it."""

    name: str = Field(description="stable name, e.g. 'etcd-peer-master-0'; also names its Secret")
    component: Component
    common_name: str
    alt_names: list[str] = Field(default_factory=list)
    ip_sans: list[str] = Field(default_factory=list)
    consumers: list[str] = Field(default_factory=list, description="nodes that restart to load it")


def certificate_requests(spec: ClusterSpec, nodes: list[str] | None = None) -> list[CertificateRequest]:
    """Every leaf certificate of the cluster. ``nodes`` defaults to the spec's node names."""
    nodes = spec.node_names() if nodes is None else nodes
    masters = [n for n in nodes if n.startswith("master-")]
    etcd_domain = f"etcd.{spec.cluster_domain}"
    requests = [
        CertificateRequest(
            name="apiserver",
            component=Component.APISERVER,
            common_name="kube-apiserver",
            alt_names=[*apiserver_names(spec), "localhost"],
            ip_sans=[spec.networking.api_service_ip, "127.0.0.1"],
            consumers=masters,
        ),
        CertificateRequest(
            name="controller-manager",
            component=Component.CONTROLLER_MANAGER,
            common_name="system:kube-controller-manager",
            consumers=masters,
        ),
        CertificateRequest(
            name="scheduler",
            component=Component.SCHEDULER,
            common_name="system:kube-scheduler",
            consumers=masters,
        ),
        CertificateRequest(
            name="service-account",
            component=Component.SERVICE_ACCOUNT,
            common_name="service-accounts",
            consumers=masters,
        ),
        CertificateRequest(name="admin", component=Component.ADMIN, common_name=ADMIN_COMMON_NAME),
    ]
    for master in masters:
        for kind in ("server", "peer"):
            requests.append(
                CertificateRequest(
                    name=f"etcd-{kind}-{master}",
                    component=Component.ETCD,
                    common_name=f"{master}.{etcd_domain}",
                    alt_names=[f"{master}.{etcd_domain}", "localhost"],
                    ip_sans=["127.0.0.1"],
                    consumers=[master],
                )
            )
    for node in nodes:
        requests.append(
            CertificateRequest(
                name=node_certificate_name(node),
                component=Component.NODE,
                common_name=node_common_name(node),
                alt_names=[f"{node}.nodes.{spec.cluster_domain}"],
                consumers=[node],
            )
        )
    return requests


class CertificateRecord(FrozenModel):
    """What the control plane knows of an issued leaf: never the key, only public facts."""

    name: str
    common_name: str
    serial: str
    not_before: datetime
    not_after: datetime
    issuer_id: str = Field(description="Vault issuer that signed it")
    destination: str = Field(description="where the key pair lives, e.g. 'secret tenant-acme/cert-admin'")


class PkiTarget(FrozenModel):
    """Where a cluster's PKI lives and where its key pairs go."""

    cluster_id: str
    provider: Provider
    mount: str


def earliest_expiry(records: dict[str, CertificateRecord] | list[CertificateRecord]) -> datetime | None:
    values = records.values() if isinstance(records, dict) else records
    return min((r.not_after for r in values), default=None)


# --- activity inputs and results -------------------------------------------------------------------
class CaInput(FrozenModel):
    spec: ClusterSpec


class CaResult(FrozenModel):
    mount: str
    issuer_id: str = Field(description="Vault issuer id of the cluster's current root CA")
    common_name: str
    not_after: datetime
    created: bool = Field(description="False when the CA already existed (idempotent re-run)")


class EnsureCertificatesInput(FrozenModel):
    spec: ClusterSpec
    requests: list[CertificateRequest]
    renew_before: timedelta = Field(description="re-issue a leaf when less lifetime than this remains")
    force: bool = Field(default=False, description="re-issue every leaf whatever its remaining lifetime")


class CertificatesResult(FrozenModel):
    records: list[CertificateRecord]
    issued: list[str] = Field(default_factory=list, description="names re-issued by this call")
    kept: list[str] = Field(default_factory=list, description="names still valid long enough, left alone")
    revoked_lost: list[str] = Field(
        default_factory=list, description="serials an earlier attempt issued but never stored, revoked by this one"
    )


class RevokeResult(FrozenModel):
    revoked: int = 0
    already_revoked_or_expired: int = 0


def node_certificate_name(node: str) -> str:
    """Name of a node's kubelet key pair (and, through it, of its Secret / Secrets Manager entry)."""
    return f"node-{node}"


def node_common_name(node: str) -> str:
    """CN of a node's kubelet certificate: what the tenant API's Node authorizer reads."""
    return f"system:node:{node}"


class NodeCertificatesInput(FrozenModel):
    """Nodes that are gone (replaced by an upgrade, removed by a scale-down): their credentials go too."""

    spec: ClusterSpec
    nodes: list[str] = Field(description="node names, e.g. ['worker-0']")


class NodeCertificatesResult(FrozenModel):
    revoked: list[str] = Field(default_factory=list, description="serials revoked in Vault by this call")
    deleted: list[str] = Field(default_factory=list, description="stored key pairs deleted by this call")


# --- CA rotation: a second issuer in the same mount, and the trust bundle every consumer reads ------
DEFAULT_USER_CERTIFICATE_TTL = timedelta(hours=8)


def next_issuer_name(current: str) -> str:
    """Name of the CA that follows ``current``: ``root-1`` -> ``root-2``; anything else -> ``root-2``.

    Deterministic, so a resumed CA rotation finds the issuer an earlier attempt created (OpenBao
    refuses a second issuer of the same name, which also turns two racing attempts into one CA).
    """
    prefix, _, number = current.rpartition("-")
    if prefix == "root" and number.isdigit():
        return f"root-{int(number) + 1}"
    return "root-2"


class NextIssuerInput(FrozenModel):
    spec: ClusterSpec
    after_issuer_id: str = Field(
        default="", description="the CA being replaced; empty means the mount's current default issuer"
    )


class IssuerResult(FrozenModel):
    """Public facts of one issuer (CA) of a cluster's mount."""

    issuer_id: str
    name: str
    common_name: str
    not_after: datetime
    is_default: bool
    created: bool = Field(default=False, description="made by this call (False: found from an earlier attempt)")
    previous_issuer_id: str = Field(default="", description="the CA this one replaces")
    published_trust: list[str] = Field(
        default_factory=list, description="issuer ids in the published trust bundle now (empty: none published)"
    )


class SetDefaultIssuerInput(FrozenModel):
    spec: ClusterSpec
    issuer_id: str


class TrustBundleInput(FrozenModel):
    """The CAs every consumer of the cluster must trust, in order (old first during a rotation)."""

    spec: ClusterSpec
    issuer_ids: list[str] = Field(min_length=1)


class TrustBundleResult(FrozenModel):
    issuer_ids: list[str]
    fingerprints: list[str] = Field(description="SHA-256 of each CA certificate, as in issuer_ids")
    updated: list[str] = Field(default_factory=list, description="destinations rewritten by this call")
    unchanged: int = 0
    leaves_checked: int = Field(default=0, description="stored leaves verified against the bundle before writing")


# --- user key pairs: a CSR made on the user's machine, signed by the cluster's CA ---------------------
class SignUserCertificateRequest(FrozenModel):
    """Entity update ``sign_user_certificate``: only a CSR travels, the private key stays with the user."""

    csr_pem: str = Field(description="PKCS#10 CSR: CN is the Kubernetes user, each O a group")
    ttl: Duration = Field(default=DEFAULT_USER_CERTIFICATE_TTL, description="capped by the cluster's leaf TTL")
    requested_by: str = ""


class SignUserCsrInput(FrozenModel):
    spec: ClusterSpec
    csr_pem: str
    ttl: Duration


class SignedUserCertificate(FrozenModel):
    certificate_pem: str
    ca_bundle_pem: str = Field(description="what a kubeconfig trusts for the tenant API (the published bundle)")
    serial: str
    not_after: datetime
    common_name: str
    groups: list[str] = Field(default_factory=list)
    issuer_id: str
    ttl_capped: bool = Field(default=False, description="the requested TTL exceeded the cluster's leaf TTL")
