"""Where issued key pairs live: each provider brings a store, behind one small protocol.

``pki.ensure_certificates`` issues a certificate and hands the key pair straight to the store of
the cluster's provider, so the private key never reaches a workflow. Reading back returns the
public half only (certificate, CA chain, and whether the stored key matches), which is all the
activity needs to decide whether a stored pair can be kept; only the tenant API client reads a
whole pair (``read_key_pair``), to present it. A store is addressed by (cluster id, certificate
name): the KVM provider keeps a Secret per certificate in the tenant's host namespace
(``activities.kvm.key_pairs``); the AWS provider a Secrets Manager entry per certificate
(``activities.aws.key_pairs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from models.pki import CertificateRequest

CERTIFICATE_LABEL = "tenantctl.io/certificate"
"""Label with the certificate name: selects exactly the key-pair Secrets of a cluster."""
TRUST_BUNDLE_LABEL = "tenantctl.io/trust-bundle"
TRUST_BUNDLE_ISSUERS_ANNOTATION = "tenantctl.io/issuer-ids"
SERIAL_ANNOTATION = "tenantctl.io/serial"
NOT_AFTER_ANNOTATION = "tenantctl.io/not-after"
ISSUER_ANNOTATION = "tenantctl.io/issuer-id"

TLS_CERT, TLS_KEY, CA_CERT = "tls.crt", "tls.key", "ca.crt"


@dataclass(frozen=True)
class KeyPair:
    """A freshly issued certificate with its private key; it only exists inside one activity call."""

    certificate: str  # leaf, PEM
    private_key: str = field(repr=False)  # kept out of repr so a traceback or a log line never shows it
    ca_chain: str  # the issuing CA chain, PEM blocks one after another
    serial: str
    not_after: datetime
    issuer_id: str


@dataclass(frozen=True)
class StoredCertificate:
    """The public half of a stored key pair, as read back; never the private key itself."""

    name: str
    certificate: str
    ca_chain: str
    key_matches: bool  # a private key is stored and belongs to the certificate
    destination: str


@dataclass(frozen=True)
class StoredKeyPair:
    """A stored key pair with its private key, read for the one call that presents it (the tenant
    API client); never returned from an activity."""

    certificate: str
    private_key: str = field(repr=False)
    ca_chain: str


class CertificateSink(Protocol):
    """Storage of a cluster's key pairs, addressed by (cluster id, certificate name)."""

    kind: str
    """Resource kind in ensure results, e.g. 'secret' or 'secretsmanager-secret'."""

    def destination(self, cluster_id: str, name: str) -> str:
        """Where the key pair of ``name`` lives, for humans: 'secret tenant-acme/cert-admin'."""
        ...

    def read(self, cluster_id: str, name: str) -> StoredCertificate | None:
        """The stored pair's public half, or None when nothing is stored."""
        ...

    def read_key_pair(self, cluster_id: str, name: str) -> StoredKeyPair | None:
        """The stored pair with its private key (for presenting it), or None when nothing is stored."""
        ...

    def write(self, cluster_id: str, request: CertificateRequest, key_pair: KeyPair) -> str:
        """Create or replace the stored pair; returns its destination."""
        ...

    def delete(self, cluster_id: str, name: str) -> bool:
        """Delete one stored pair; False when there was none."""
        ...

    def list_names(self, cluster_id: str) -> list[str]:
        """Names of every stored pair of the cluster."""
        ...

    def read_all(self, cluster_id: str) -> dict[str, StoredCertificate]:
        """Every stored pair's public half by name (a drift check reads them all: one listing
        where the store allows it, not one read each)."""
        ...

    def delete_all(self, cluster_id: str) -> list[str]:
        """Delete every stored pair of the cluster; returns the names that were deleted."""
        ...

    # The trust bundle: published once a CA rotation starts; until then each pair's CA chain is
    # the issuing CA's and is all its consumers trust.
    def trust_bundle_destination(self, cluster_id: str) -> str:
        """Where the published bundle lives, for humans: 'secret tenant-acme/ca-bundle'."""
        ...

    def read_trust_bundle(self, cluster_id: str) -> str | None:
        """The published trust bundle (PEM CA certificates), or None when none was published."""
        ...

    def write_trust_bundle(self, cluster_id: str, bundle_pem: str, issuer_ids: list[str]) -> bool:
        """Publish the bundle; False when it was already exactly that."""
        ...

    def set_ca_chain(self, cluster_id: str, name: str, ca_chain: str) -> bool:
        """Replace only the CA chain of a stored pair (its key is left alone); False if unchanged or absent."""
        ...

    def delete_trust_bundle(self, cluster_id: str) -> bool:
        """Delete the published bundle; False when there was none."""
        ...


def key_matches_certificate(certificate_pem: str, private_key_pem: str) -> bool:
    """True when the private key is the one whose public key the certificate carries."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(key.public_key().public_bytes(*spki) == certificate.public_key().public_bytes(*spki))
