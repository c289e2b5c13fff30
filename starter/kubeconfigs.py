"""User kubeconfigs: a key made on this machine, a CSR for the entity to sign, a file only its owner reads."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from models.pki import SignedUserCertificate


def make_key_and_csr(user: str, groups: list[str]) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A new P-256 key and a CSR saying CN=user, O=each group (what Kubernetes RBAC reads)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def kubeconfig_document(
    cluster_id: str, server: str, user: str, signed: SignedUserCertificate, key: ec.EllipticCurvePrivateKey
) -> dict[str, Any]:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    context = f"{user}@{cluster_id}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_id,
                "cluster": {"server": server, "certificate-authority-data": _b64(signed.ca_bundle_pem.encode())},
            }
        ],
        "users": [
            {
                "name": context,
                "user": {
                    "client-certificate-data": _b64(signed.certificate_pem.encode()),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster_id, "user": context}}],
        "current-context": context,
    }


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (0600), also when the file existed with wider rights."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
