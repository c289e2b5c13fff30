"""The AWS certificate sink: one Secrets Manager secret per key pair (``tenantctl/<id>/<name>``).

The PKI activities hand a freshly issued key pair straight to this sink, so the private key goes
from Vault to Secrets Manager inside one activity and never into workflow history. Nodes read
their own key pairs with their instance profile (``activities.aws.resources.node_policy``). The value is
JSON with the files the nodes write: ``tls.crt``, ``tls.key``, ``ca.crt``; public facts (serial,
expiry, issuer) are tags, so an operator sees them without reading the secret.

Encryption: the account's default key (``aws/secretsmanager``), which every principal the node
policy allows can use without a KMS grant. A customer-managed key is one ``KmsKeyId`` away, with
``kms:Decrypt`` added to the node roles.

Deletion is immediate (``ForceDeleteWithoutRecovery``): a recovery window would keep the name
taken (re-creating a cluster of the same id fails for up to 30 days) and keep a deleted cluster's
private keys readable for that long, to recover certificates that were revoked at teardown, live
three days and are re-issued from Vault in seconds. Nothing worth recovering, much worth erasing.

Secrets Manager has no conditional write: ``set_ca_chain`` re-reads right before it writes and
the cluster's entity workflow runs one operation at a time, which is what keeps a CA-chain update
from overwriting a key pair re-issued meanwhile.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError
from temporalio import activity

from activities.aws.resources import TRUST_BUNDLE, tag_dict, tag_list
from activities.common.errors import translated
from activities.providers.key_pairs import (
    CA_CERT,
    CERTIFICATE_LABEL,
    ISSUER_ANNOTATION,
    NOT_AFTER_ANNOTATION,
    SERIAL_ANNOTATION,
    TLS_CERT,
    TLS_KEY,
    TRUST_BUNDLE_ISSUERS_ANNOTATION,
    TRUST_BUNDLE_LABEL,
    KeyPair,
    StoredCertificate,
    StoredKeyPair,
    key_matches_certificate,
)
from models.errors import Conflict, NotReady
from models.naming import CLUSTER_LABEL, COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, aws_secret_name
from models.pki import CertificateRequest

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

WRITE_ATTEMPTS: Final = 5
_NOT_FOUND: Final = frozenset({"ResourceNotFoundException"})
_MARKED_DELETED: Final = "InvalidRequestException"
"""Reading a secret scheduled for deletion; also creating one whose deletion is still under way."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class SecretsManagerSink:
    """Key pairs of AWS clusters in Secrets Manager, addressed by (cluster id, certificate name)."""

    kind = "secretsmanager-secret"

    def __init__(self, client: SecretsManagerClient) -> None:
        self.client = client

    # --- CertificateSink ----------------------------------------------------------------------
    def destination(self, cluster_id: str, name: str) -> str:
        return f"secretsmanager secret {aws_secret_name(cluster_id, name)}"

    def read(self, cluster_id: str, name: str) -> StoredCertificate | None:
        value = self._value(aws_secret_name(cluster_id, name))
        if value is None:
            return None
        certificate = value.get(TLS_CERT, "")
        return StoredCertificate(
            name=name,
            certificate=certificate,
            ca_chain=value.get(CA_CERT, ""),
            key_matches=key_matches_certificate(certificate, value.get(TLS_KEY, "")),
            destination=self.destination(cluster_id, name),
        )

    def read_all(self, cluster_id: str) -> dict[str, StoredCertificate]:
        # Secrets Manager lists names and tags, not values: one read each
        found = {name: self.read(cluster_id, name) for name in self.list_names(cluster_id)}
        return {name: stored for name, stored in found.items() if stored is not None}

    def read_key_pair(self, cluster_id: str, name: str) -> StoredKeyPair | None:
        value = self._value(aws_secret_name(cluster_id, name))
        if value is None:
            return None
        return StoredKeyPair(
            certificate=value.get(TLS_CERT, ""), private_key=value.get(TLS_KEY, ""), ca_chain=value.get(CA_CERT, "")
        )

    def write(self, cluster_id: str, request: CertificateRequest, key_pair: KeyPair) -> str:
        secret = aws_secret_name(cluster_id, request.name)
        value = json.dumps({TLS_CERT: key_pair.certificate, TLS_KEY: key_pair.private_key, CA_CERT: key_pair.ca_chain})
        tags = {
            CLUSTER_LABEL: cluster_id,
            COMPONENT_LABEL: request.component.value,
            CERTIFICATE_LABEL: request.name,
            MANAGED_BY_LABEL: MANAGED_BY,
            SERIAL_ANNOTATION: key_pair.serial,
            NOT_AFTER_ANNOTATION: key_pair.not_after.isoformat(),
            ISSUER_ANNOTATION: key_pair.issuer_id,
        }
        self._put(secret, value, tags, f"certificate {request.name} of cluster {cluster_id}")
        return self.destination(cluster_id, request.name)

    def delete(self, cluster_id: str, name: str) -> bool:
        return self._delete(aws_secret_name(cluster_id, name))

    def list_names(self, cluster_id: str) -> list[str]:
        return sorted(self._certificates(cluster_id))

    def delete_all(self, cluster_id: str) -> list[str]:
        deleted = []
        for name, secret in sorted(self._certificates(cluster_id).items()):
            if self._delete(secret):
                deleted.append(name)
        return deleted

    def trust_bundle_destination(self, cluster_id: str) -> str:
        return self.destination(cluster_id, TRUST_BUNDLE)

    def read_trust_bundle(self, cluster_id: str) -> str | None:
        value = self._value(aws_secret_name(cluster_id, TRUST_BUNDLE))
        return (value or {}).get(CA_CERT) or None

    def write_trust_bundle(self, cluster_id: str, bundle_pem: str, issuer_ids: list[str]) -> bool:
        if self.read_trust_bundle(cluster_id) == bundle_pem:
            return False
        tags = {
            CLUSTER_LABEL: cluster_id,
            TRUST_BUNDLE_LABEL: "true",
            MANAGED_BY_LABEL: MANAGED_BY,
            TRUST_BUNDLE_ISSUERS_ANNOTATION: ",".join(issuer_ids),
        }
        self._put(aws_secret_name(cluster_id, TRUST_BUNDLE), json.dumps({CA_CERT: bundle_pem}), tags, "trust bundle")
        activity.logger.info("published trust bundle of %s: issuers %s", cluster_id, ", ".join(issuer_ids))
        return True

    def set_ca_chain(self, cluster_id: str, name: str, ca_chain: str) -> bool:
        secret = aws_secret_name(cluster_id, name)
        value = self._value(secret)
        if value is None:
            return False
        if value.get(CA_CERT) == ca_chain:
            return False
        self._refuse_foreign(secret, f"update the CA chain of {secret}")
        # The key travels back unchanged, read and written inside this call only.
        updated = json.dumps({**value, CA_CERT: ca_chain})
        with translated(f"update the CA chain of {secret}"):
            self.client.put_secret_value(SecretId=secret, SecretString=updated)
        return True

    def delete_trust_bundle(self, cluster_id: str) -> bool:
        return self._delete(aws_secret_name(cluster_id, TRUST_BUNDLE))

    # --- Secrets Manager calls ----------------------------------------------------------------
    def _value(self, secret: str) -> dict[str, str] | None:
        try:
            with translated(f"read secret {secret}"):
                response = self.client.get_secret_value(SecretId=secret)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND or _code(exc) == _MARKED_DELETED:
                return None
            raise
        try:
            data = json.loads(response.get("SecretString") or "{}")
        except ValueError:
            return {}  # unreadable content counts as missing: the pair is re-issued
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _describe(self, secret: str) -> Any:
        try:
            with translated(f"describe secret {secret}"):
                return self.client.describe_secret(SecretId=secret)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise

    def _refuse_foreign(self, secret: str, what: str) -> Any:
        described = self._describe(secret)
        if described is not None and tag_dict(described.get("Tags")).get(MANAGED_BY_LABEL) != MANAGED_BY:
            raise Conflict(f"{what}: a secret of that name exists and is not managed by {MANAGED_BY}; not replacing it")
        return described

    def _put(self, secret: str, value: str, tags: dict[str, str], what: str) -> None:
        """Create the secret, or write a new current version of ours; tags converge either way."""
        for _ in range(WRITE_ATTEMPTS):
            try:
                with translated(f"create secret {secret}"):
                    self.client.create_secret(
                        Name=secret,
                        Description=f"tenantctl: {what}",
                        SecretString=value,
                        Tags=tag_list(tags),
                    )
                activity.logger.info("created secret %s", secret)
                return
            except ClientError as exc:
                if _code(exc) not in ("ResourceExistsException", _MARKED_DELETED):
                    raise
            described = self._refuse_foreign(secret, f"write {secret}")
            if described is None:
                continue  # deleted meanwhile: create it again
            if described.get("DeletedDate"):
                # Scheduled for deletion (by hand, with a recovery window): take it back.
                try:
                    with translated(f"restore secret {secret}"):
                        self.client.restore_secret(SecretId=secret)
                except ClientError as exc:
                    if _code(exc) in _NOT_FOUND:
                        continue  # its forced deletion just finished
                    if _code(exc) == _MARKED_DELETED:
                        raise NotReady(f"secret {secret} is being deleted; it is written again on retry") from exc
                    raise
            try:
                with translated(f"write secret {secret}"):
                    self.client.put_secret_value(SecretId=secret, SecretString=value)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    continue
                raise
            missing = {k: v for k, v in tags.items() if tag_dict(described.get("Tags")).get(k) != v}
            if missing:
                with translated(f"tag secret {secret}"):
                    self.client.tag_resource(SecretId=secret, Tags=tag_list(missing))
            return
        raise NotReady(f"write {secret}: it kept appearing and disappearing for {WRITE_ATTEMPTS} attempts; retrying")

    def _delete(self, secret: str) -> bool:
        described = self._refuse_foreign(secret, f"delete {secret}")
        if described is None:
            return False
        try:
            with translated(f"delete secret {secret}"):
                self.client.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return False
            raise
        activity.logger.info("deleted secret %s", secret)
        return True

    def _certificates(self, cluster_id: str) -> dict[str, str]:
        """Certificate name -> secret name of every key pair of the cluster."""
        prefix = aws_secret_name(cluster_id, "")
        found: dict[str, str] = {}
        pages = self.client.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}])
        with translated(f"list secrets {prefix}*"):
            for page in pages:
                for secret in page["SecretList"]:
                    secret_tags = tag_dict(list(secret.get("Tags") or []))
                    name = str(secret.get("Name", ""))
                    if (
                        name.startswith(prefix)
                        and secret_tags.get(CLUSTER_LABEL) == cluster_id
                        and secret_tags.get(CERTIFICATE_LABEL)
                    ):
                        found[secret_tags[CERTIFICATE_LABEL]] = name
        return found
