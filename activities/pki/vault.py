"""Vault/OpenBao PKI of a tenant cluster: mount + root CA, one role per component, a renewal policy,
leaf certificates written straight to the provider's sink, and their removal.

Layout per cluster (Giant Swarm's 2017 design): one PKI secrets engine at ``<prefix>/<cluster id>``
holding one root CA (issuer ``root-1``); roles named after ``models.pki.Component``; the ACL policy
``tenantctl-<cluster id>`` that may only issue/sign on that mount. Every call is idempotent: reads
first, writes only what differs, and "already there" / "not there" is success.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import ipaddress
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import hvac
import hvac.exceptions
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from temporalio import activity

from activities.common.errors import translated
from activities.providers.contract import KeyPairStores
from activities.providers.key_pairs import CertificateSink, KeyPair, StoredCertificate
from models.drift import Backend, DriftItem, DriftKind, DriftReport, ObserveInput
from models.errors import Conflict, Forbidden, InvalidInput, MissingPrerequisite
from models.pki import (
    CaInput,
    CaResult,
    CertificateRecord,
    CertificateRequest,
    CertificatesResult,
    EnsureCertificatesInput,
    IssuerResult,
    NextIssuerInput,
    NodeCertificatesInput,
    NodeCertificatesResult,
    RevokeResult,
    RoleSpec,
    SetDefaultIssuerInput,
    SignedUserCertificate,
    SignUserCsrInput,
    TrustBundleInput,
    TrustBundleResult,
    certificate_requests,
    next_issuer_name,
    node_certificate_name,
    node_common_name,
    pki_mount,
    role_specs,
    vault_policy_name,
)
from models.provider import ClusterRef, EnsureResult, ResourceChange, ResourceOutcome
from models.spec import ClusterSpec

ROOT_ISSUER_NAME = "root-1"
"""Name of a cluster's first root CA. Vault refuses a second issuer of the same name, which turns two
racing attempts of ``ensure_ca`` into one CA instead of two (a CA rotation would add 'root-2')."""
LEAF_KEY_TYPE, LEAF_KEY_BITS = "ec", 256  # fast to generate, accepted by every Kubernetes component
ROOT_KEY_TYPE, ROOT_KEY_BITS = "ec", 256
LEAF_KEY_USAGE = ["DigitalSignature"]
"""ECDSA keys only sign (TLS handshakes, service-account tokens); KeyEncipherment is an RSA notion."""
AUTO_TIDY = {
    # Rotation issues ~20 leaves a day per cluster and no_store is off (teardown must list them):
    # tidy removes leaves 72 h after they expire, so the store and revoke_certificates stay small.
    "enabled": True,
    "tidy_cert_store": True,
    "tidy_revoked_certs": True,
    "interval_duration": int(timedelta(hours=12).total_seconds()),
    "safety_buffer": int(timedelta(hours=72).total_seconds()),
}
USER_KEY_USAGE = ["DigitalSignature"]
USER_EXT_KEY_USAGE = ["ClientAuth"]
"""A user's key pair only authenticates a client to the tenant API (RBAC reads CN and O)."""
KIND_MOUNT, KIND_ROLE, KIND_POLICY = "pki-mount", "pki-role", "vault-policy"
CLUSTER_TOKEN_TTL = "10m"
"""Lifetime of the child token one activity attempt issues its cluster's certificates with: as long
as the attempt may run (``PKI_BATCH_CALL_TIMEOUT``). It is revoked when the attempt ends; only a
worker killed mid-attempt leaves it to expire, and it reaches that one cluster's mount only."""
KIND_ISSUER = "pki-default-issuer"
ClusterWrite = Callable[[str, dict[str, Any], str], dict[str, Any]]
"""A write to a cluster's mount: path, data, what it does (for the error message); the response data."""
CONCURRENT_VAULT_CALLS = 8
"""Certificates issued (and leaves revoked) at once by one worker, over all activities: each is a few
Vault round trips, so 17 of them one by one cost 17 times the latency; the worker's Vault rate limit
and connection pool bound them further."""

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
KIND_UNMANAGED_ROLE = "unmanaged-pki-role"
UNHELD_CERTIFICATE_PREFIX = "vault:certificate/"
"""Drift object of a valid leaf no stored key pair holds: ``vault:certificate/<serial>``."""
NODE_COMMON_NAME_PREFIX = node_common_name("")
"""Every node's kubelet CN starts so (also nodes gone from the spec: theirs are the cluster's too)."""


def serial_hex(serial: int) -> str:
    """Vault's spelling of a serial number: colon-separated lowercase hex bytes, '1c:4e:...'."""
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    return ":".join(f"{byte:02x}" for byte in raw)


def _seconds(value: timedelta) -> int:
    return int(value.total_seconds())


def role_body(role: RoleSpec) -> dict[str, Any]:
    """The complete role as written to Vault (a role write replaces every field, so all are given)."""
    ttl = _seconds(role.max_ttl)
    return {
        **role.model_dump(mode="json", exclude={"name", "max_ttl"}),
        "ttl": ttl,
        "max_ttl": ttl,
        "key_type": LEAF_KEY_TYPE,
        "key_bits": LEAF_KEY_BITS,
        "key_usage": LEAF_KEY_USAGE,
        "ext_key_usage": [],  # server/client auth come from server_flag/client_flag
        "ou": [],
        "allow_any_name": False,
        "allow_wildcard_certificates": False,
        "no_store": False,  # teardown lists the mount's certificates to revoke them
        "generate_lease": False,  # short TTLs replace leases; thousands of leases would only load Vault
        "use_csr_common_name": True,
        "use_csr_sans": True,
        "require_cn": True,
        "issuer_ref": "default",
    }


def policy_document(mount: str) -> str:
    """Enough for a component to renew its own certificate from this cluster's mount, nothing else."""
    return (
        f'path "{mount}/issue/*" {{\n  capabilities = ["create", "update"]\n}}\n\n'
        f'path "{mount}/sign/*" {{\n  capabilities = ["create", "update"]\n}}\n\n'
        f'path "{mount}/cert/ca" {{\n  capabilities = ["read"]\n}}\n\n'
        f'path "{mount}/ca_chain" {{\n  capabilities = ["read"]\n}}\n\n'
        # the worker issues through the issuer's own path, with a child token of this policy
        f'path "{mount}/issuer/+/issue/*" {{\n  capabilities = ["create", "update"]\n}}\n\n'
        'path "auth/token/revoke-self" {\n  capabilities = ["update"]\n}\n'
    )


def _differs(current: Any, desired: Any) -> bool:
    if isinstance(desired, list) and isinstance(current, list):
        return sorted(map(str, current)) != sorted(map(str, desired))
    return bool(current != desired)


def _diff(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    return sorted(key for key, value in desired.items() if _differs(current.get(key), value))


NO_MOUNT_AT = "no secret engine mount at"
"""What Vault and OpenBao answer (with 400) for ``GET sys/mounts/<path>`` where nothing is mounted."""


@dataclass(frozen=True)
class Issuer:
    mount: str
    id: str
    name: str
    certificate: x509.Certificate


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _subject_alt_names(certificate: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(sans.get_values_for_type(x509.DNSName)), {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _heartbeat(*details: Any) -> None:
    # The activities also run as plain methods (tests, scripts), where there is nobody to tell.
    if activity.in_activity():
        activity.heartbeat(*details)


ISSUE_BACKDATE = timedelta(seconds=30)
"""How far Vault dates a leaf's notBefore back from its issue (a role's ``not_before_duration``,
which tenantctl leaves at Vault's default)."""
CLOCK_SLACK = timedelta(seconds=5)
"""Skew allowed between the worker's clock and Vault's when telling which leaves a call issued."""


def _earlier_attempts_since() -> datetime | None:
    """When this call was first scheduled, if an earlier attempt of it ran (None on a first attempt
    and outside an activity)."""
    if not activity.in_activity() or activity.info().attempt <= 1:
        return None
    return activity.info().scheduled_time


class VaultPki:
    """Temporal activities for a cluster's PKI; each cluster's key pairs go where its provider
    stores them (``providers.key_pairs``, the provider contract's key-pair store)."""

    def __init__(
        self,
        vault: hvac.Client,
        providers: KeyPairStores,
        mount_prefix: str = "pki",
        cluster_token_role: str | None = None,
        concurrent_calls: int = CONCURRENT_VAULT_CALLS,
    ) -> None:
        self.vault = vault
        self.providers = providers
        self.mount_prefix = mount_prefix
        # With a token role (allowed_policies_glob tenantctl-*), each certificate is issued with a
        # short-lived child token of its cluster's policy only: one cluster's issuing cannot reach another's mount.
        self.cluster_token_role = cluster_token_role
        # Shared by every activity of this worker, so K clusters issuing at once stay within it.
        self._calls = ThreadPoolExecutor(concurrent_calls, thread_name_prefix="vault-pki")

    def mount(self, cluster_id: str) -> str:
        return pki_mount(cluster_id, self.mount_prefix)

    # --- activities -------------------------------------------------------------------------------
    @activity.defn(name="pki.ensure_ca")
    def ensure_ca(self, input: CaInput) -> CaResult:
        spec = input.spec
        mount = self.mount(spec.id)
        self._ensure_mount(mount, spec)
        self._ensure_auto_tidy(mount)
        issuer, created = self._default_issuer(mount), False
        if issuer is None:
            issuer, created = self._generate_root(mount, spec), True
        activity.logger.info(
            "PKI mount %s: CA %s (%s) %s", mount, issuer.id, issuer.name, "created" if created else "kept"
        )
        return CaResult(
            mount=mount,
            issuer_id=issuer.id,
            common_name=_common_name(issuer.certificate.subject),
            not_after=issuer.certificate.not_valid_after_utc,
            created=created,
        )

    @activity.defn(name="pki.ensure_roles")
    def ensure_roles(self, input: ClusterRef) -> EnsureResult:
        mount = self.mount(input.spec.id)
        desired = role_specs(input.spec)
        # One listing first: a role it does not name is written without reading it (a create's
        # seven roles cost seven calls, not fourteen); a listed one is read and converged.
        existing = set(self._list(f"{mount}/roles", f"list roles of {mount}"))
        outcomes = [
            ResourceOutcome(
                kind=KIND_ROLE, name=r.name.value, change=self._ensure_role(mount, r, r.name.value in existing)
            )
            for r in desired
        ]
        unmanaged = sorted(existing - {r.name.value for r in desired})
        for name in unmanaged:
            # Someone else's role on our mount: not ours to delete, but worth a look.
            activity.logger.warning("PKI mount %s has role %s that tenantctl does not manage", mount, name)
            outcomes.append(ResourceOutcome(kind=KIND_UNMANAGED_ROLE, name=name, change=ResourceChange.UNCHANGED))
        return EnsureResult(outcomes=outcomes)

    @activity.defn(name="pki.ensure_policy")
    def ensure_policy(self, input: ClusterRef) -> EnsureResult:
        name, document = vault_policy_name(input.spec.id), policy_document(self.mount(input.spec.id))
        path = f"sys/policies/acl/{name}"
        current = self._read(path, f"read policy {name}")
        if current is not None and str(current.get("policy", "")).strip() == document.strip():
            change = ResourceChange.UNCHANGED
        else:
            self._write(path, {"policy": document}, f"write policy {name}")
            change = ResourceChange.CREATED if current is None else ResourceChange.UPDATED
            activity.logger.info("policy %s %s", name, change.value)
        return EnsureResult(outcomes=[ResourceOutcome(kind=KIND_POLICY, name=name, change=change)])

    @activity.defn(name="pki.observe")
    def observe(self, input: ObserveInput) -> DriftReport:
        """Drift check of the cluster's PKI: the mount, each role, the policy, and every
        certificate's stored key pair (present, with the private key that belongs to it).

        Read only; a stored key pair no certificate of the spec explains (a removed node's) is
        extra, and so is a valid leaf of the mount that no stored key pair holds (issued by an
        attempt that failed before storing it: ``vault:certificate/<serial>``, which the repair
        revokes). Expiry is not drift: the rotation schedule renews what is due.
        """
        spec = input.spec
        mount, sink = self.mount(spec.id), self._sink(spec)
        items: list[DriftItem] = []
        mounted = self._mount_config(mount) is not None
        if not mounted:
            items.append(DriftItem(kind=DriftKind.MISSING, object=f"vault:mount/{mount}"))
        else:
            desired_roles = role_specs(spec)
            for role in desired_roles:
                where = f"vault:role/{role.name.value}"
                current = self._read(f"{mount}/roles/{role.name.value}", f"read role {role.name.value} of {mount}")
                if current is None:
                    items.append(DriftItem(kind=DriftKind.MISSING, object=where))
                elif changed := _diff(current, role_body(role)):
                    items.append(DriftItem(kind=DriftKind.CHANGED, object=where, detail=", ".join(changed)))
            unmanaged = set(self._list(f"{mount}/roles", f"list roles of {mount}")) - {
                r.name.value for r in desired_roles
            }
            items += [DriftItem(kind=DriftKind.EXTRA, object=f"vault:role/{name}") for name in sorted(unmanaged)]
        policy = vault_policy_name(spec.id)
        current_policy = self._read(f"sys/policies/acl/{policy}", f"read policy {policy}")
        if current_policy is None:
            items.append(DriftItem(kind=DriftKind.MISSING, object=f"vault:policy/{policy}"))
        elif str(current_policy.get("policy", "")).strip() != policy_document(mount).strip():
            items.append(DriftItem(kind=DriftKind.CHANGED, object=f"vault:policy/{policy}", detail="document differs"))
        expected = [r.name for r in certificate_requests(spec, list(input.nodes))]
        stored_pairs = sink.read_all(spec.id)
        for name in expected:
            stored = stored_pairs.get(name)
            if stored is None:
                items.append(DriftItem(kind=DriftKind.MISSING, object=sink.destination(spec.id, name)))
            elif not stored.key_matches:
                detail = "the stored private key is missing or does not belong to the certificate"
                items.append(DriftItem(kind=DriftKind.CHANGED, object=sink.destination(spec.id, name), detail=detail))
        leftovers = sorted(set(stored_pairs) - set(expected))
        items += [DriftItem(kind=DriftKind.EXTRA, object=sink.destination(spec.id, name)) for name in leftovers]
        if mounted:
            for serial, certificate in self._unheld_certificates(spec, list(input.nodes), stored_pairs):
                detail = (
                    f"CN {_common_name(certificate.subject)}, valid until "
                    f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, held by no stored key pair"
                )
                items.append(
                    DriftItem(kind=DriftKind.EXTRA, object=f"{UNHELD_CERTIFICATE_PREFIX}{serial}", detail=detail)
                )
        return DriftReport(backend=Backend.VAULT, items=items)

    @activity.defn(name="pki.revoke_unheld_certificates")
    def revoke_unheld_certificates(self, input: ObserveInput) -> NodeCertificatesResult:
        """Revoke the cluster's valid leaves that no stored key pair holds (the drift repair of the
        ``vault:certificate/<serial>`` extras ``observe`` reports).

        Such a leaf was issued by an attempt that failed before it stored the key pair, or was
        superseded by a later issue of the same name: its private key is in no Secret, so no node
        can load it again, and a valid credential nobody holds is only a risk. Revoking it is safe
        because the drift repair runs as one of the entity's operations, never beside another: no
        ``ensure_certificates`` is between issuing and storing while this runs. The set is computed
        again here (not taken from the observe report): what was stored meanwhile stays valid.
        Kubernetes does not check CRLs, so a node still running with a superseded leaf until its
        restart is not cut off; the revocation stops the leaf from being trusted anywhere that does.
        Already revoked, expired, or no mount: success.
        """
        spec, mount = input.spec, self.mount(input.spec.id)
        if self._mount_config(mount) is None:
            return NodeCertificatesResult()
        revoked: list[str] = []
        for serial, _certificate in self._unheld_certificates(spec, list(input.nodes)):
            _heartbeat(serial)
            self._write(f"{mount}/revoke", {"serial_number": serial}, f"revoke certificate {serial} of {mount}")
            revoked.append(serial)
        activity.logger.info("mount %s: %d certificates held by no stored key pair revoked", mount, len(revoked))
        return NodeCertificatesResult(revoked=revoked)

    @staticmethod
    def _held_serials(stored_pairs: Mapping[str, StoredCertificate]) -> set[str]:
        """Serials of the certificates the cluster's stored key pairs hold (the spec's and leftovers)."""
        held = set()
        for stored in stored_pairs.values():
            try:
                held.add(serial_hex(x509.load_pem_x509_certificate(stored.certificate.encode()).serial_number))
            except ValueError:
                continue  # an unreadable stored certificate holds nothing (observe reports it changed)
        return held

    def _unheld_certificates(
        self, spec: ClusterSpec, nodes: list[str], stored_pairs: Mapping[str, StoredCertificate] | None = None
    ) -> list[tuple[str, x509.Certificate]]:
        """The mount's leaves that are valid (unexpired, unrevoked), carry one of the cluster's own
        component names (the spec's certificates, or any node's), and that no stored key pair holds.

        Users' certificates (``tenantctl kubeconfig``) carry a person's name, are held by that
        person and never stored here: they are not counted. Cost of an in-sync check: two listings
        and one read per serial that is neither held nor revoked (the CA, and leaves that expired
        unrevoked until auto-tidy removes them)."""
        if stored_pairs is None:
            stored_pairs = self._sink(spec).read_all(spec.id)
        own_names = {r.common_name for r in certificate_requests(spec, nodes)}
        return [
            (serial, certificate)
            for serial, certificate in self._valid_leaves(self.mount(spec.id), skip=self._held_serials(stored_pairs))
            if (name := _common_name(certificate.subject)) in own_names or name.startswith(NODE_COMMON_NAME_PREFIX)
        ]

    def _valid_leaves(self, mount: str, skip: set[str]) -> Iterator[tuple[str, x509.Certificate]]:
        """The mount's unexpired, unrevoked leaves whose serials are not in ``skip``: two listings and
        one read per serial neither skipped nor revoked."""
        try:
            revoked = set(self._list(f"{mount}/certs/revoked", f"list revoked certificates of {mount}"))
        except Forbidden:  # a policy without that listing: each serial's own record says it, one read each
            revoked = set()
        now = datetime.now(UTC)
        for serial in self._list(f"{mount}/certs", f"list certificates of {mount}"):
            if serial in skip or serial in revoked:
                continue
            found = self._read(f"{mount}/cert/{serial}", f"read certificate {serial} of {mount}")
            if found is None or int(found.get("revocation_time") or 0):
                continue  # tidied away meanwhile, or revoked
            certificate = x509.load_pem_x509_certificate(str(found["certificate"]).encode())
            if not _is_ca(certificate) and certificate.not_valid_after_utc > now:
                yield serial, certificate

    @activity.defn(name="pki.ensure_certificates")
    def ensure_certificates(self, input: EnsureCertificatesInput) -> CertificatesResult:
        mount, sink = self.mount(input.spec.id), self._sink(input.spec)
        self._refuse_duplicate_names(input.requests)
        issuer = self._default_issuer(mount)
        if issuer is None:
            raise MissingPrerequisite(f"PKI mount {mount} has no CA: pki.ensure_ca must run first")
        trust = self._published_trust(input.spec, issuer)
        records: list[CertificateRecord] = []
        issued: list[str] = []
        kept: list[str] = []
        # Each certificate is looked up and, if need be, issued and stored on its own: side by side,
        # in the requests' order in the result. A failure of one fails the attempt once the others
        # have ended (each one stored or, if issued but not stored, revoked): a retry converges.
        stored_pairs = sink.read_all(input.spec.id)  # one listing, not a read per certificate
        with self._cluster_writer(input.spec.id) as write:
            outcomes = self._each(
                input.requests,
                lambda request: self._ensure_certificate(
                    input, request, stored_pairs.get(request.name), issuer, sink, trust, write
                ),
                lambda request: request.name,
            )
        for request, (record, was_issued) in zip(input.requests, outcomes, strict=True):
            records.append(record)
            (issued if was_issued else kept).append(request.name)
        since = _earlier_attempts_since()
        lost = self._revoke_lost_issues(input.spec, input.requests, records, since) if since else []
        _heartbeat(f"{len(records)} certificates")
        return CertificatesResult(records=records, issued=issued, kept=kept, revoked_lost=lost)

    def _revoke_lost_issues(
        self, spec: ClusterSpec, requests: list[CertificateRequest], records: list[CertificateRecord], since: datetime
    ) -> list[str]:
        """Revoke the leaves an earlier attempt of this call issued and never stored.

        An attempt that dies between issuing and storing (its worker was killed, or Vault went down
        and its answer was lost) leaves a valid leaf whose key is in no Secret. This attempt knows
        them without guessing: valid, named like one of its requests, issued after the call was
        first scheduled, and none of the records it returns. Leaves from before the call (a node's
        current one, which a rotation supersedes) are never among them.
        """
        mount = self.mount(spec.id)
        names = {r.common_name for r in requests}
        earliest = since - ISSUE_BACKDATE - CLOCK_SLACK
        revoked = []
        for serial, certificate in self._valid_leaves(mount, skip={r.serial for r in records}):
            if _common_name(certificate.subject) in names and certificate.not_valid_before_utc >= earliest:
                self._write(f"{mount}/revoke", {"serial_number": serial}, f"revoke lost certificate {serial}")
                revoked.append(serial)
        if revoked:
            activity.logger.info("mount %s: %d certificates an earlier attempt issued but never stored revoked",
                                 mount, len(revoked))  # fmt: skip
        return revoked

    @activity.defn(name="pki.revoke_certificates")
    def revoke_certificates(self, input: ClusterRef) -> RevokeResult:
        mount = self.mount(input.spec.id)
        now = datetime.now(UTC)

        def revoke(serial: str) -> bool | None:
            """True: revoked now; False: already revoked or expired; None: not a leaf (or gone)."""
            found = self._read(f"{mount}/cert/{serial}", f"read certificate {serial} of {mount}")
            if found is None:
                return None  # tidied away meanwhile
            certificate = x509.load_pem_x509_certificate(str(found["certificate"]).encode())
            if _is_ca(certificate):
                return None  # the root itself; revoking an issuer is refused and pointless
            if int(found.get("revocation_time") or 0) or certificate.not_valid_after_utc <= now:
                return False
            self._write(f"{mount}/revoke", {"serial_number": serial}, f"revoke certificate {serial} of {mount}")
            return True

        serials = self._list(f"{mount}/certs", f"list certificates of {mount}")
        if serials:
            # Vault rebuilds a mount's CRL on every revocation unless it rebuilds lazily: one rebuild
            # per leaf made revoking the slowest step of a teardown. The CRL of a mount about to be
            # deleted is read by nobody (Kubernetes checks none), so lazily it is.
            self._write(f"{mount}/config/crl", {"auto_rebuild": True}, f"let {mount} rebuild its CRL lazily")
        outcomes = self._each(serials, revoke, str)
        revoked, skipped = outcomes.count(True), outcomes.count(False)
        activity.logger.info("mount %s: %d revoked, %d already revoked or expired", mount, revoked, skipped)
        return RevokeResult(revoked=revoked, already_revoked_or_expired=skipped)

    @activity.defn(name="pki.ensure_node_certificates_absent")
    def ensure_node_certificates_absent(self, input: NodeCertificatesInput) -> NodeCertificatesResult:
        """Revoke every unexpired leaf issued to the nodes, then delete their stored key pairs.

        For nodes that no longer exist (replaced by an upgrade, removed by a scale-down): their
        kubelet certificates must not stay valid for days nor lie in a Secret. Every leaf whose CN
        names the node is revoked, not only the stored one (an earlier rotation's leaf is as valid);
        revocation comes first, so a crash between the two steps leaves nothing valid behind and the
        next attempt only deletes. Already revoked, expired, or nothing stored: success.
        """
        spec, mount, sink = input.spec, self.mount(input.spec.id), self._sink(input.spec)
        common_names = {node_common_name(n) for n in input.nodes}
        revoked: list[str] = []
        now = datetime.now(UTC)
        if self._mount_config(mount) is not None:
            for serial in self._list(f"{mount}/certs", f"list certificates of {mount}"):
                _heartbeat(serial)
                found = self._read(f"{mount}/cert/{serial}", f"read certificate {serial} of {mount}")
                if found is None or int(found.get("revocation_time") or 0):
                    continue  # tidied away meanwhile, or revoked already
                certificate = x509.load_pem_x509_certificate(str(found["certificate"]).encode())
                if _is_ca(certificate) or certificate.not_valid_after_utc <= now:
                    continue
                if _common_name(certificate.subject) not in common_names:
                    continue
                self._write(f"{mount}/revoke", {"serial_number": serial}, f"revoke certificate {serial} of {mount}")
                revoked.append(serial)
        deleted = [
            sink.destination(spec.id, name)
            for name in (node_certificate_name(n) for n in input.nodes)
            if sink.delete(spec.id, name)
        ]
        activity.logger.info(
            "certificates of %s in %s: %d revoked, %d stored key pairs deleted",
            ", ".join(input.nodes),
            spec.id,
            len(revoked),
            len(deleted),
        )
        return NodeCertificatesResult(revoked=revoked, deleted=deleted)

    @activity.defn(name="pki.ensure_pki_absent")
    def ensure_pki_absent(self, input: ClusterRef) -> EnsureResult:
        spec, mount = input.spec, self.mount(input.spec.id)
        config = self._mount_config(mount)
        if config is not None and config.get("type") != "pki":
            raise Conflict(f"mount {mount} has type {config.get('type')!r}, not pki; tenantctl will not delete it")
        exists = config is not None
        # Disabling the mount deletes its roles with it: they are listed, not deleted one by one.
        outcomes = self._roles_of_mount(mount, spec)  # a missing mount lists no roles: all absent
        outcomes.append(self._delete_policy(vault_policy_name(spec.id)))
        if exists:
            with translated(f"disable PKI mount {mount}"):
                self.vault.sys.disable_secrets_engine(mount)
            activity.logger.info("disabled PKI mount %s", mount)
        change = ResourceChange.DELETED if exists else ResourceChange.ABSENT
        outcomes.append(ResourceOutcome(kind=KIND_MOUNT, name=mount, change=change))
        return EnsureResult(outcomes=outcomes)

    @activity.defn(name="pki.ensure_certificates_absent")
    def ensure_certificates_absent(self, input: ClusterRef) -> EnsureResult:
        sink = self._sink(input.spec)
        deleted = sink.delete_all(input.spec.id)
        outcomes = [
            ResourceOutcome(kind=sink.kind, name=sink.destination(input.spec.id, name), change=ResourceChange.DELETED)
            for name in deleted
        ]
        if sink.delete_trust_bundle(input.spec.id):  # published by a CA rotation, if there was one
            where = sink.trust_bundle_destination(input.spec.id)
            outcomes.append(ResourceOutcome(kind=sink.kind, name=where, change=ResourceChange.DELETED))
        if not outcomes:
            where = sink.destination(input.spec.id, "*")
            return EnsureResult(outcomes=[ResourceOutcome(kind=sink.kind, name=where, change=ResourceChange.ABSENT)])
        return EnsureResult(outcomes=outcomes)

    # --- CA rotation --------------------------------------------------------------------------------
    @activity.defn(name="pki.ensure_next_issuer")
    def ensure_next_issuer(self, input: NextIssuerInput) -> IssuerResult:
        """The CA that replaces ``after_issuer_id``: a second root in the same mount, not the default.

        Found by its deterministic name when an earlier attempt (or an interrupted CA rotation)
        made it, so running this again never makes a third CA. Making it the default is a separate
        step (``pki.set_default_issuer``), taken only once every consumer trusts it.
        """
        spec, mount = input.spec, self.mount(input.spec.id)
        current = self._default_issuer(mount)
        if current is None:
            raise MissingPrerequisite(f"PKI mount {mount} has no CA: pki.ensure_ca must run first")
        after_id = input.after_issuer_id or current.id
        issuers = self._issuers(mount)
        if after_id not in issuers:
            raise InvalidInput(f"issuer {after_id} is not an issuer of PKI mount {mount}; nothing to rotate from")
        name = next_issuer_name(str(issuers[after_id].get("issuer_name", "")))
        created = False
        found = _issuer_named(issuers, name)
        if found is None:
            try:
                generated = self._write(
                    f"{mount}/root/generate/internal",
                    {
                        "common_name": f"{spec.id} root CA ({name})",
                        "organization": spec.owner,
                        "ttl": f"{_seconds(spec.certificates.ca_ttl)}s",
                        "key_type": ROOT_KEY_TYPE,
                        "key_bits": ROOT_KEY_BITS,
                        "issuer_name": name,
                    },
                    f"generate CA {name} of {mount}",
                )
                # OpenBao keeps the default issuer when another root is generated (checked in tests).
                found, created = str(generated["issuer_id"]), True
                activity.logger.info("PKI mount %s: generated CA %s (%s), not default yet", mount, found, name)
            except InvalidInput:
                # "issuer name already in use": a concurrent attempt generated it; use that one.
                found = _issuer_named(self._issuers(mount), name)
                if found is None:
                    raise
        issuer = self._issuer(mount, found)
        return IssuerResult(
            issuer_id=issuer.id,
            name=issuer.name,
            common_name=_common_name(issuer.certificate.subject),
            not_after=issuer.certificate.not_valid_after_utc,
            is_default=issuer.id == current.id,
            created=created,
            previous_issuer_id=after_id,
            published_trust=self._published_issuer_ids(spec),
        )

    @activity.defn(name="pki.set_default_issuer")
    def set_default_issuer(self, input: SetDefaultIssuerInput) -> EnsureResult:
        """Make ``issuer_id`` the CA that issues (and signs) from now on; unchanged if it already is."""
        mount = self.mount(input.spec.id)
        config = self._read(f"{mount}/config/issuers", f"read issuers config of {mount}") or {}
        if str(config.get("default") or "") == input.issuer_id:
            change = ResourceChange.UNCHANGED
        else:
            self._issuer(mount, input.issuer_id)  # refuses an unknown issuer before the config is touched
            self._write(f"{mount}/config/issuers", {"default": input.issuer_id}, f"set default issuer of {mount}")
            change = ResourceChange.UPDATED
            activity.logger.info("PKI mount %s: default issuer is now %s", mount, input.issuer_id)
        return EnsureResult(outcomes=[ResourceOutcome(kind=KIND_ISSUER, name=input.issuer_id, change=change)])

    @activity.defn(name="pki.publish_trust_bundle")
    def publish_trust_bundle(self, input: TrustBundleInput) -> TrustBundleResult:
        """Make the given CAs what every consumer trusts: the bundle, and the CA chain of every stored pair.

        Refuses (permanently, changing nothing) when a stored leaf would not verify against the
        new bundle: dropping a CA that still signs a leaf in use would break that component.
        """
        spec, mount, sink = input.spec, self.mount(input.spec.id), self._sink(input.spec)
        cas = [self._issuer(mount, issuer_id).certificate for issuer_id in input.issuer_ids]
        bundle = _pem_bundle(cas)
        names = sink.list_names(spec.id)
        untrusted = []
        for name in names:
            _heartbeat(f"check {name}")
            stored = sink.read(spec.id, name)
            if stored is None:
                continue  # deleted meanwhile: nothing of it is in use
            problem = _untrusted_by(stored.certificate, cas)
            if problem:
                untrusted.append(f"{name} ({problem})")
        if untrusted:
            raise MissingPrerequisite(
                f"trust bundle [{', '.join(input.issuer_ids)}] of {spec.id} would not verify "
                f"{len(untrusted)} stored certificates: {'; '.join(untrusted[:10])}; re-issue them first"
            )
        updated = []
        if sink.write_trust_bundle(spec.id, bundle, input.issuer_ids):
            updated.append(sink.trust_bundle_destination(spec.id))
        for name in names:
            _heartbeat(f"publish to {name}")
            if sink.set_ca_chain(spec.id, name, bundle):
                updated.append(sink.destination(spec.id, name))
        activity.logger.info(
            "trust bundle of %s is [%s]: %d destinations updated", spec.id, ", ".join(input.issuer_ids), len(updated)
        )
        return TrustBundleResult(
            issuer_ids=input.issuer_ids,
            fingerprints=[_fingerprint(ca) for ca in cas],
            updated=updated,
            unchanged=len(names) + 1 - len(updated),
            leaves_checked=len(names),
        )

    # --- user key pairs -----------------------------------------------------------------------------
    @activity.defn(name="pki.sign_user_csr")
    def sign_user_csr(self, input: SignUserCsrInput) -> SignedUserCertificate:
        """Sign a user's CSR with the cluster's CA: CN and O verbatim from the CSR, client auth only.

        ``sign-verbatim`` is the Vault endpoint that keeps the CSR's subject (a role would impose
        its own O); everything else is pinned here: no SANs, no CA, TTL capped by the cluster's
        leaf TTL. Signing twice makes two certificates for the same key (both short-lived, both
        stored in Vault so teardown revokes them): harmless, so a retried attempt needs no lookup.
        """
        spec, mount = input.spec, self.mount(input.spec.id)
        csr = _user_csr(input.csr_pem)
        issuer = self._default_issuer(mount)
        if issuer is None:
            raise MissingPrerequisite(f"PKI mount {mount} has no CA: the cluster is not provisioned")
        published = self._published_trust(spec, issuer)
        ttl = min(input.ttl, spec.certificates.ttl)
        signed = self._write(
            f"{mount}/issuer/{issuer.id}/sign-verbatim",
            {
                "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                "ttl": f"{_seconds(ttl)}s",
                "key_usage": USER_KEY_USAGE,
                "ext_key_usage": USER_EXT_KEY_USAGE,
            },
            f"sign a user certificate for {_common_name(csr.subject)} with {mount}",
        )
        certificate = x509.load_pem_x509_certificate(str(signed["certificate"]).encode())
        groups = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        bundle = published or _joined(signed.get("ca_chain") or [signed["issuing_ca"]])
        activity.logger.info(
            "signed user certificate %s for %s (groups %s) until %s",
            serial_hex(certificate.serial_number),
            _common_name(certificate.subject),
            ", ".join(groups) or "none",
            certificate.not_valid_after_utc.isoformat(),
        )
        return SignedUserCertificate(
            certificate_pem=str(signed["certificate"]).strip() + "\n",
            ca_bundle_pem=bundle,
            serial=serial_hex(certificate.serial_number),
            not_after=certificate.not_valid_after_utc,
            common_name=_common_name(certificate.subject),
            groups=groups,
            issuer_id=issuer.id,
            ttl_capped=input.ttl > spec.certificates.ttl,
        )

    # --- mount and CA -----------------------------------------------------------------------------
    def _mount_config(self, mount: str) -> dict[str, Any] | None:
        """The mount's configuration (type, description, TTLs), or None when nothing is mounted there.

        Read at its own path, not from the listing of every secrets engine: every create and every
        drift check asks, and the listing grows with the fleet (a thousand clusters make it a few
        hundred KB of JSON per question). A missing mount answers 400 (not 404) with the text
        Vault and OpenBao both send; any other 400, or a policy written before the worker read
        this path (403), is answered from the listing, which is unambiguous.
        """
        with translated(f"read PKI mount {mount}"):
            try:
                response = self.vault.read(f"sys/mounts/{mount}")
            except hvac.exceptions.InvalidRequest as exc:
                if NO_MOUNT_AT in str(exc).lower():
                    return None
                return self._listed_mount_config(mount)
            except hvac.exceptions.Forbidden:
                return self._listed_mount_config(mount)
        if response is None:
            return None
        found = response.get("data") or response
        return dict(found) if isinstance(found, dict) and found.get("type") else None

    def _listed_mount_config(self, mount: str) -> dict[str, Any] | None:
        mounts = self._read("sys/mounts", "list secrets engines") or {}
        found = mounts.get(f"{mount}/")
        return dict(found) if isinstance(found, dict) else None

    def _ensure_mount(self, mount: str, spec: ClusterSpec) -> None:
        desired = {
            "description": f"tenantctl PKI of cluster {spec.id}",
            "max_lease_ttl": _seconds(spec.certificates.ca_ttl),
        }
        current = self._mount_config(mount)
        if current is None:
            try:
                self._write(
                    f"sys/mounts/{mount}",
                    {
                        "type": "pki",
                        "description": desired["description"],
                        "config": {"max_lease_ttl": f"{desired['max_lease_ttl']}s"},
                    },
                    f"enable PKI mount {mount}",
                )
                activity.logger.info("enabled PKI mount %s", mount)
                return
            except InvalidInput:
                current = self._mount_config(mount)  # a concurrent attempt enabled it first
                if current is None:
                    raise
        if current.get("type") != "pki":
            raise Conflict(
                f"mount {mount} exists with type {current.get('type')!r}, not pki; tenantctl will not take it over"
            )
        have = {
            "description": current.get("description", ""),
            "max_lease_ttl": current.get("config", {}).get("max_lease_ttl"),
        }
        if changed := _diff(have, desired):
            self._write(
                f"sys/mounts/{mount}/tune",
                {"description": desired["description"], "max_lease_ttl": f"{desired['max_lease_ttl']}s"},
                f"tune PKI mount {mount}",
            )
            activity.logger.info("tuned PKI mount %s: %s", mount, ", ".join(changed))

    def _ensure_auto_tidy(self, mount: str) -> None:
        current = self._read(f"{mount}/config/auto-tidy", f"read auto-tidy of {mount}") or {}
        if changed := _diff(current, AUTO_TIDY):
            self._write(f"{mount}/config/auto-tidy", AUTO_TIDY, f"configure auto-tidy of {mount}")
            activity.logger.info("auto-tidy of %s converged: %s", mount, ", ".join(changed))

    def _default_issuer(self, mount: str) -> Issuer | None:
        config = self._read(f"{mount}/config/issuers", f"read issuers config of {mount}") or {}
        issuer_id = str(config.get("default") or "") or self._adopt_root(mount)
        if not issuer_id:
            return None
        found = self._read(f"{mount}/issuer/{issuer_id}", f"read issuer {issuer_id} of {mount}")
        if found is None:
            return None
        return Issuer(
            mount=mount,
            id=issuer_id,
            name=str(found.get("issuer_name", "")),
            certificate=x509.load_pem_x509_certificate(str(found["certificate"]).encode()),
        )

    def _adopt_root(self, mount: str) -> str | None:
        """Make tenantctl's root the default when the mount has issuers but no default; None if no issuers.

        OpenBao stores a generated issuer a moment before it becomes the default, so a concurrent
        attempt of ensure_ca can see exactly that state. Our root is known by its name.
        """
        # LIST answers id -> {issuer_name, is_default}; GET issuer/<unknown name> answers 500, not 404.
        with translated(f"list issuers of {mount}"):
            response = self.vault.list(f"{mount}/issuers")
        key_info = {} if response is None else (response.get("data") or {}).get("key_info") or {}
        if not key_info:
            return None
        ours = sorted(i for i, info in key_info.items() if info.get("issuer_name") == ROOT_ISSUER_NAME)
        if not ours:
            raise Conflict(
                f"PKI mount {mount} has issuers but neither a default nor {ROOT_ISSUER_NAME!r}; fix it by hand"
            )
        self._write(f"{mount}/config/issuers", {"default": ours[0]}, f"set default issuer of {mount}")
        activity.logger.warning("PKI mount %s had no default issuer; made %s the default", mount, ROOT_ISSUER_NAME)
        return str(ours[0])

    def _generate_root(self, mount: str, spec: ClusterSpec) -> Issuer:
        body = {
            "common_name": f"{spec.id} root CA",
            "organization": spec.owner,
            "ttl": f"{_seconds(spec.certificates.ca_ttl)}s",
            "key_type": ROOT_KEY_TYPE,
            "key_bits": ROOT_KEY_BITS,
            "issuer_name": ROOT_ISSUER_NAME,
        }
        try:
            generated = self._write(f"{mount}/root/generate/internal", body, f"generate root CA of {mount}")
        except InvalidInput:
            # "issuer name already in use": a concurrent attempt generated it; use that one.
            existing = self._default_issuer(mount)
            if existing is None:
                raise
            return existing
        return Issuer(
            mount=mount,
            id=str(generated["issuer_id"]),
            name=str(generated.get("issuer_name", ROOT_ISSUER_NAME)),
            certificate=x509.load_pem_x509_certificate(str(generated["certificate"]).encode()),
        )

    def _issuers(self, mount: str) -> dict[str, dict[str, Any]]:
        """Issuer id -> {issuer_name, is_default, ...} of every CA of the mount."""
        with translated(f"list issuers of {mount}"):
            response = self.vault.list(f"{mount}/issuers")
        key_info = {} if response is None else (response.get("data") or {}).get("key_info") or {}
        return {str(k): dict(v) for k, v in key_info.items()}

    def _issuer(self, mount: str, issuer_id: str) -> Issuer:
        if issuer_id not in self._issuers(mount):  # GET of an unknown issuer answers 500, not 404
            raise InvalidInput(f"issuer {issuer_id} is not an issuer of PKI mount {mount}")
        found = self._read(f"{mount}/issuer/{issuer_id}", f"read issuer {issuer_id} of {mount}")
        if found is None:
            raise InvalidInput(f"issuer {issuer_id} is not an issuer of PKI mount {mount}")
        return Issuer(
            mount=mount,
            id=issuer_id,
            name=str(found.get("issuer_name", "")),
            certificate=x509.load_pem_x509_certificate(str(found["certificate"]).encode()),
        )

    def _published_issuer_ids(self, spec: ClusterSpec) -> list[str]:
        """Which of the mount's issuers the published trust bundle holds, in its order (a resumed CA
        rotation reads from it how far an earlier attempt got)."""
        published = self._sink(spec).read_trust_bundle(spec.id)
        if published is None:
            return []
        mount = self.mount(spec.id)
        by_certificate = {}
        for issuer_id in self._issuers(mount):
            found = self._read(f"{mount}/issuer/{issuer_id}", f"read issuer {issuer_id} of {mount}") or {}
            if found.get("certificate"):
                by_certificate[x509.load_pem_x509_certificate(str(found["certificate"]).encode())] = issuer_id
        try:
            trusted = x509.load_pem_x509_certificates(published.encode())
        except ValueError:
            return []
        return [by_certificate[ca] for ca in trusted if ca in by_certificate]

    def _published_trust(self, spec: ClusterSpec, issuer: Issuer) -> str | None:
        """The published trust bundle a new leaf's consumers are told to trust, or None before any.

        Before any CA rotation no bundle is published and the issuing chain is all there is. With a
        bundle, the issuing CA must be in it: a leaf from a CA the other consumers do not trust yet
        would break them (Gardener #15301), so that is refused before anything is issued.
        """
        published = self._sink(spec).read_trust_bundle(spec.id)
        if published is None:
            return None
        try:
            trusted = x509.load_pem_x509_certificates(published.encode())
        except ValueError:
            trusted = []
        if issuer.certificate not in trusted:
            raise MissingPrerequisite(
                f"the default issuer {issuer.id} of {issuer.mount} is not in the published trust bundle of "
                f"{spec.id}; it would issue certificates nobody trusts. Rotate the CA with 'tenantctl rotate "
                f"{spec.id} --ca' instead of changing the default issuer by hand"
            )
        return published

    # --- roles and policy -------------------------------------------------------------------------
    def _ensure_role(self, mount: str, role: RoleSpec, listed: bool = True) -> ResourceChange:
        """Converge one role; ``listed=False`` (the mount's listing lacks it): write it unread. Writing
        a role replaces it whole, so one created meanwhile by a concurrent attempt converges too."""
        path, desired = f"{mount}/roles/{role.name.value}", role_body(role)
        current = self._read(path, f"read role {role.name.value} of {mount}") if listed else None
        changed = _diff(current or {}, desired)
        if current is not None and not changed:
            return ResourceChange.UNCHANGED
        self._write(path, desired, f"write role {role.name.value} of {mount}")
        if current is None:
            activity.logger.info("created role %s on %s", role.name.value, mount)
            return ResourceChange.CREATED
        activity.logger.info("updated role %s on %s: %s", role.name.value, mount, ", ".join(changed))
        return ResourceChange.UPDATED

    def _roles_of_mount(self, mount: str, spec: ClusterSpec) -> list[ResourceOutcome]:
        """The outcome for every role of a mount about to be disabled (which deletes them all)."""
        existing = set(self._list(f"{mount}/roles", f"list roles of {mount}"))
        managed = [r.name.value for r in role_specs(spec)]
        outcomes = []
        for name in managed + sorted(existing - set(managed)):  # the mount goes, so unmanaged roles go too
            change = ResourceChange.DELETED if name in existing else ResourceChange.ABSENT
            outcomes.append(ResourceOutcome(kind=KIND_ROLE, name=name, change=change))
        return outcomes

    def _each(
        self, items: Iterable[ItemT], call: Callable[[ItemT], ResultT], label: Callable[[ItemT], str]
    ) -> list[ResultT]:
        """``call`` of every item on the shared Vault threads, results in the items' order.

        Every call ends before this returns (nothing of an attempt runs on after it); then the
        first failure, if any, is raised. The activity heartbeats each item's ``label`` from its own
        thread, in the items' order, as their calls end.
        """
        listed = list(items)
        futures: list[Future[ResultT]] = [
            # each call sees the activity's context (its logger, ``activity.info()``)
            self._calls.submit(contextvars.copy_context().run, call, item)
            for item in listed
        ]
        failure: BaseException | None = None
        for item, future in zip(listed, futures, strict=True):
            exception = future.exception()
            failure = failure or exception
            _heartbeat(label(item))
        if failure is not None:
            raise failure
        return [future.result() for future in futures]

    def _delete_policy(self, name: str) -> ResourceOutcome:
        path = f"sys/policies/acl/{name}"
        if self._read(path, f"read policy {name}") is None:
            return ResourceOutcome(kind=KIND_POLICY, name=name, change=ResourceChange.ABSENT)
        with translated(f"delete policy {name}"):
            self.vault.delete(path)
        activity.logger.info("deleted policy %s", name)
        return ResourceOutcome(kind=KIND_POLICY, name=name, change=ResourceChange.DELETED)

    # --- certificates -----------------------------------------------------------------------------
    def _sink(self, spec: ClusterSpec) -> CertificateSink:
        return self.providers.key_pairs(spec.provider)

    @staticmethod
    def _refuse_duplicate_names(requests: list[CertificateRequest]) -> None:
        names = [r.name for r in requests]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise InvalidInput(f"requests: certificate names must be unique; repeated: {', '.join(duplicates)}")

    def _ensure_certificate(
        self,
        input: EnsureCertificatesInput,
        request: CertificateRequest,
        stored: StoredCertificate | None,
        issuer: Issuer,
        sink: CertificateSink,
        trust: str | None,
        write: ClusterWrite,
    ) -> tuple[CertificateRecord, bool]:
        """The record of a kept or freshly issued certificate, and whether it was issued now."""
        reason = self._reissue_reason(stored, request, input.spec, issuer, input)
        if stored is not None and reason is None:
            certificate = x509.load_pem_x509_certificate(stored.certificate.encode())
            return self._record(request, certificate, issuer, stored.destination), False
        activity.logger.info("issuing %s from %s: %s", request.name, issuer.mount, reason)
        return self._issue(input.spec, request, issuer, sink, trust, write), True

    def _reissue_reason(
        self,
        stored: StoredCertificate | None,
        request: CertificateRequest,
        spec: ClusterSpec,
        issuer: Issuer,
        input: EnsureCertificatesInput,
    ) -> str | None:
        """Why the stored key pair cannot be kept, or None when it can."""
        if stored is None:
            return "nothing stored"
        if input.force:
            return "forced"
        if not stored.key_matches:
            return "stored private key missing or not matching the certificate"
        try:
            certificate = x509.load_pem_x509_certificate(stored.certificate.encode())
        except ValueError:
            return "stored certificate unreadable"
        return (
            _issuer_problem(certificate, stored.ca_chain, issuer)
            or _subject_problem(certificate, request, spec)
            or _lifetime_problem(certificate, input.renew_before)
            or self._revocation_problem(self.mount(spec.id), certificate)
        )

    def _revocation_problem(self, mount: str, certificate: x509.Certificate) -> str | None:
        # Vault is the source of truth: a leaf revoked there (or unknown to it) is not kept.
        serial = serial_hex(certificate.serial_number)
        found = self._read(f"{mount}/cert/{serial}", f"read certificate {serial} of {mount}")
        if found is None:
            return f"serial {serial} unknown to Vault"
        if int(found.get("revocation_time") or 0):
            return f"serial {serial} revoked in Vault"
        return None

    def _issue(
        self,
        spec: ClusterSpec,
        request: CertificateRequest,
        issuer: Issuer,
        sink: CertificateSink,
        trust: str | None,
        write: ClusterWrite,
    ) -> CertificateRecord:
        mount = self.mount(spec.id)
        body = {
            "common_name": request.common_name,
            "alt_names": ",".join(request.alt_names),
            "ip_sans": ",".join(request.ip_sans),
            "ttl": f"{_seconds(spec.certificates.ttl)}s",
            "exclude_cn_from_sans": True,  # SANs are exactly the request's, so "matches" is a set comparison
            "format": "pem",
        }
        # Issuing through the issuer's own path pins the CA, so the record's issuer_id is certain.
        issued = write(
            f"{mount}/issuer/{issuer.id}/issue/{request.component.value}",
            body,
            f"issue certificate {request.name} ({request.common_name}) from {mount}",
        )
        certificate = x509.load_pem_x509_certificate(str(issued["certificate"]).encode())
        record = self._record(request, certificate, issuer, sink.destination(spec.id, request.name))
        chain = trust or _joined(issued.get("ca_chain") or [issued["issuing_ca"]])
        key_pair = KeyPair(
            certificate=str(issued["certificate"]).strip() + "\n",
            private_key=str(issued["private_key"]).strip() + "\n",
            ca_chain=chain,
            serial=record.serial,
            not_after=record.not_after,
            issuer_id=issuer.id,
        )
        del issued  # the response holds the key too: drop it before anything below could fail and show it
        try:
            destination = sink.write(spec.id, request, key_pair)
        except BaseException:
            # Issued but not stored: nobody holds this certificate, and a retry issues another.
            self._revoke_unheld(mount, record.serial, request.name)
            raise
        activity.logger.info("stored %s (serial %s) in %s", request.name, record.serial, destination)
        return record.model_copy(update={"destination": destination})

    @staticmethod
    def _record(
        request: CertificateRequest, certificate: x509.Certificate, issuer: Issuer, destination: str
    ) -> CertificateRecord:
        return CertificateRecord(
            name=request.name,
            common_name=_common_name(certificate.subject),
            serial=serial_hex(certificate.serial_number),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            issuer_id=issuer.id,
            destination=destination,
        )

    def _revoke_unheld(self, mount: str, serial: str, name: str) -> None:
        """Best effort: revoke a certificate this attempt issued and could not store (the failure
        that stopped it is what the attempt reports; a leftover is what ``observe`` finds)."""
        try:
            self._write(f"{mount}/revoke", {"serial_number": serial}, f"revoke unstored certificate {serial}")
        except Exception as exc:
            activity.logger.warning("could not revoke %s (serial %s), issued but not stored: %s", name, serial, exc)
        else:
            activity.logger.info("revoked %s (serial %s): issued but not stored", name, serial)

    # --- Vault calls --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _cluster_writer(self, cluster_id: str) -> Iterator[ClusterWrite]:
        """``_write`` for one activity attempt's writes to a cluster's mount. With a token role, they
        go with one child token bound to the cluster's policy, made at the first write and revoked
        when the attempt ends (one token per certificate cost two more Vault calls each)."""
        if self.cluster_token_role is None:
            yield self._write
            return
        policy = vault_policy_name(cluster_id)
        made: list[hvac.Client] = []
        making = threading.Lock()

        def child() -> hvac.Client:
            with making:  # the attempt's certificates are issued side by side: one token for all
                if not made:
                    created = self._write_auth(
                        f"auth/token/create/{self.cluster_token_role}",
                        {"policies": [policy], "ttl": CLUSTER_TOKEN_TTL, "display_name": policy},
                        f"create a {policy} token",
                    )
                    token = str(created["client_token"])
                    made.append(hvac.Client(url=self.vault.url, token=token, session=self.vault.session))
                return made[0]

        def write(path: str, data: dict[str, Any], what: str) -> dict[str, Any]:
            client = child()
            with translated(what):
                response = client.write_data(path, data=data)
            return dict(response.get("data") or {}) if isinstance(response, dict) else {}

        try:
            yield write
        finally:
            if made:
                try:
                    made[0].auth.token.revoke_self()
                except hvac.exceptions.VaultError:  # it expires within CLUSTER_TOKEN_TTL anyway
                    activity.logger.warning("could not revoke the %s token; it expires by itself", policy)

    def _write_auth(self, path: str, data: dict[str, Any], what: str) -> dict[str, Any]:
        with translated(what):
            response = self.vault.write_data(path, data=data)
        return dict(response.get("auth") or {}) if isinstance(response, dict) else {}

    def _read(self, path: str, what: str) -> dict[str, Any] | None:
        with translated(what):
            response = self.vault.read(path)
        return None if response is None else dict(response.get("data") or {})

    def _list(self, path: str, what: str) -> list[str]:
        with translated(what):
            response = self.vault.list(path)
        return [] if response is None else [str(key) for key in (response.get("data") or {}).get("keys", [])]

    def _write(self, path: str, data: dict[str, Any], what: str) -> dict[str, Any]:
        with translated(what):
            response = self.vault.write_data(path, data=data)
        # 204 No Content comes back as a bare HTTP response: nothing to read from it.
        return dict(response.get("data") or {}) if isinstance(response, dict) else {}


def _issuer_problem(certificate: x509.Certificate, ca_chain: str, issuer: Issuer) -> str | None:
    if certificate.issuer != issuer.certificate.subject:
        return "issued by another CA"
    try:
        certificate.verify_directly_issued_by(issuer.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return f"not signed by the current CA {issuer.id}"
    try:
        bundle = x509.load_pem_x509_certificates(ca_chain.encode())
    except ValueError:
        return "stored CA bundle unreadable"
    if issuer.certificate not in bundle:
        return "stored CA bundle lacks the current CA"
    return None


def _subject_problem(certificate: x509.Certificate, request: CertificateRequest, spec: ClusterSpec) -> str | None:
    dns, ips = _subject_alt_names(certificate)
    organization = {str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    role = {r.name: r for r in role_specs(spec)}[request.component]
    if _common_name(certificate.subject) != request.common_name:
        return "common name differs"
    if dns != set(request.alt_names) or ips != {str(ipaddress.ip_address(ip)) for ip in request.ip_sans}:
        return "subject alternative names differ"
    if organization != set(role.organization):
        return "organization differs"
    return None


def _lifetime_problem(certificate: x509.Certificate, renew_before: timedelta) -> str | None:
    left = certificate.not_valid_after_utc - datetime.now(UTC)
    if left <= renew_before:
        return f"due: {left} left, renewed when {renew_before} or less remain"
    return None


def _joined(pems: list[Any]) -> str:
    return "\n".join(str(pem).strip() for pem in pems) + "\n"


def _issuer_named(issuers: Mapping[str, Mapping[str, Any]], name: str) -> str | None:
    found = sorted(issuer_id for issuer_id, info in issuers.items() if info.get("issuer_name") == name)
    return found[0] if found else None


def _pem_bundle(cas: list[x509.Certificate]) -> str:
    return "".join(ca.public_bytes(serialization.Encoding.PEM).decode() for ca in cas)


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def verifies(leaf: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    """True when one of ``cas`` signed ``leaf`` (the check a TLS peer makes against its CA file)."""
    for ca in cas:
        if leaf.issuer != ca.subject:
            continue
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _untrusted_by(certificate_pem: str, cas: list[x509.Certificate]) -> str | None:
    try:
        leaf = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        return "stored certificate unreadable"
    if not verifies(leaf, cas):
        return f"serial {serial_hex(leaf.serial_number)} issued by {leaf.issuer.rfc4514_string()}"
    return None


def _user_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    """The CSR, if it asks for a plain client certificate; InvalidInput naming what is wrong otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise InvalidInput(f"csr: not a PEM certificate signing request ({exc})") from None
    if not csr.is_signature_valid:
        raise InvalidInput("csr: its signature does not match its public key")
    if not _common_name(csr.subject):
        raise InvalidInput("csr: the subject needs a common name (CN), the Kubernetes user name")
    for extension in csr.extensions:
        if extension.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            raise InvalidInput("csr: subject alternative names are not allowed in a user certificate")
        if extension.oid == ExtensionOID.BASIC_CONSTRAINTS and getattr(extension.value, "ca", False):
            raise InvalidInput("csr: a user certificate cannot be a CA")
    return csr
