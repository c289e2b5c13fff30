"""The KVM provider's key-pair store: one ``kubernetes.io/tls`` Secret per certificate in the
tenant's host namespace (``tenant-<id>/cert-<name>``), which the node VMs mount."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from activities.common.errors import translated
from activities.common.kube_rest import SECRETS, KubeRest
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
from models.errors import Conflict, MissingPrerequisite, NotReady
from models.naming import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    certificate_secret,
    kvm_namespace,
)
from models.pki import CertificateRequest

TRUST_BUNDLE_SECRET = "ca-bundle"
"""Secret holding the cluster's published trust bundle (every CA its consumers must trust)."""
Secret = dict[str, Any]
"""A Secret as the API's JSON (activities/common/kube_rest.py: no client models)."""
WRITE_ATTEMPTS = 10
"""Create/replace races (another attempt of the activity writing the same Secret) are retried here.
Every lost race means another writer succeeded and left, so N writers need at most N attempts."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: Mapping[str, bytes | str], key: str) -> str:
    value = data.get(key)
    if not value:
        return ""
    try:
        # The client hands Secret data over as the API's base64 text (typed bytes | str).
        return base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ""  # unreadable content counts as missing: the pair is re-issued


class KubernetesSecretSink:
    """One ``kubernetes.io/tls`` Secret per certificate in the tenant's host namespace."""

    kind = "secret"

    def __init__(self, api: ApiClient) -> None:
        self.rest = KubeRest(api)

    def destination(self, cluster_id: str, name: str) -> str:
        return f"secret {kvm_namespace(cluster_id)}/{certificate_secret(name)}"

    def read(self, cluster_id: str, name: str) -> StoredCertificate | None:
        secret = self._get(kvm_namespace(cluster_id), certificate_secret(name))
        return None if secret is None else self._stored(cluster_id, name, secret)

    def read_all(self, cluster_id: str) -> dict[str, StoredCertificate]:
        return {name: self._stored(cluster_id, name, secret) for name, secret in self._listed(cluster_id).items()}

    def _stored(self, cluster_id: str, name: str, secret: Secret) -> StoredCertificate:
        data = secret.get("data") or {}
        certificate = _unb64(data, TLS_CERT)
        return StoredCertificate(
            name=name,
            certificate=certificate,
            ca_chain=_unb64(data, CA_CERT),
            key_matches=key_matches_certificate(certificate, _unb64(data, TLS_KEY)),
            destination=self.destination(cluster_id, name),
        )

    def read_key_pair(self, cluster_id: str, name: str) -> StoredKeyPair | None:
        secret = self._get(kvm_namespace(cluster_id), certificate_secret(name))
        if secret is None:
            return None
        data = secret.get("data") or {}
        return StoredKeyPair(
            certificate=_unb64(data, TLS_CERT), private_key=_unb64(data, TLS_KEY), ca_chain=_unb64(data, CA_CERT)
        )

    def write(self, cluster_id: str, request: CertificateRequest, key_pair: KeyPair) -> str:
        namespace, secret_name = kvm_namespace(cluster_id), certificate_secret(request.name)
        body = self._body(cluster_id, request, key_pair)
        what = f"write {self.destination(cluster_id, request.name)}"
        # A new certificate's Secret is usually not there yet: create it in one call, and only if it
        # is (409) read it and replace it, as for a renewal.
        if self._create(namespace, body, what):
            return self.destination(cluster_id, request.name)
        for _ in range(WRITE_ATTEMPTS):
            if self._create_or_replace(namespace, secret_name, body, what):
                return self.destination(cluster_id, request.name)
        raise NotReady(f"{what}: the Secret kept changing under us for {WRITE_ATTEMPTS} attempts; retrying")

    def delete(self, cluster_id: str, name: str) -> bool:
        return self._delete(kvm_namespace(cluster_id), certificate_secret(name))

    def list_names(self, cluster_id: str) -> list[str]:
        return sorted(self._secrets(cluster_id))

    def delete_all(self, cluster_id: str) -> list[str]:
        namespace = kvm_namespace(cluster_id)
        deleted = []
        for name, secret_name in sorted(self._secrets(cluster_id).items()):
            if self._delete(namespace, secret_name):
                deleted.append(name)
        return deleted

    # --- trust bundle -------------------------------------------------------------------------
    def trust_bundle_destination(self, cluster_id: str) -> str:
        return f"secret {kvm_namespace(cluster_id)}/{TRUST_BUNDLE_SECRET}"

    def read_trust_bundle(self, cluster_id: str) -> str | None:
        secret = self._get(kvm_namespace(cluster_id), TRUST_BUNDLE_SECRET)
        if secret is None:
            return None
        return _unb64(secret.get("data") or {}, CA_CERT) or None

    def write_trust_bundle(self, cluster_id: str, bundle_pem: str, issuer_ids: list[str]) -> bool:
        namespace = kvm_namespace(cluster_id)
        what = f"write {self.trust_bundle_destination(cluster_id)}"
        for _ in range(WRITE_ATTEMPTS):
            existing = self._get(namespace, TRUST_BUNDLE_SECRET)
            if existing is not None and _unb64(existing.get("data") or {}, CA_CERT) == bundle_pem:
                return False
            # Public certificates only, but a Secret like the key pairs: the VM pods mount Secrets,
            # and the sink needs no access to another kind.
            body = _secret(
                {
                    "name": TRUST_BUNDLE_SECRET,
                    "namespace": namespace,
                    "labels": {CLUSTER_LABEL: cluster_id, TRUST_BUNDLE_LABEL: "true", MANAGED_BY_LABEL: MANAGED_BY},
                    "annotations": {TRUST_BUNDLE_ISSUERS_ANNOTATION: ",".join(issuer_ids)},
                },
                "Opaque",
                {CA_CERT: _b64(bundle_pem)},
            )
            if self._create_or_replace(namespace, TRUST_BUNDLE_SECRET, body, what):
                activity.logger.info("published trust bundle of %s: issuers %s", cluster_id, ", ".join(issuer_ids))
                return True
        raise NotReady(f"{what}: the Secret kept changing under us for {WRITE_ATTEMPTS} attempts; retrying")

    def set_ca_chain(self, cluster_id: str, name: str, ca_chain: str) -> bool:
        namespace, secret_name = kvm_namespace(cluster_id), certificate_secret(name)
        what = f"update the CA chain of {self.destination(cluster_id, name)}"
        for _ in range(WRITE_ATTEMPTS):
            existing = self._get(namespace, secret_name)
            if existing is None:
                return False
            self._refuse_foreign(existing, what)
            data = dict(existing.get("data") or {})
            if _unb64(data, CA_CERT) == ca_chain:
                return False
            # The rest of the Secret goes back as read (key included, never decoded here); the
            # resourceVersion makes a concurrent re-issue a 409 instead of a lost update.
            if self._replace(namespace, secret_name, {**existing, "data": {**data, CA_CERT: _b64(ca_chain)}}, what):
                return True
        raise NotReady(f"{what}: the Secret kept changing under us for {WRITE_ATTEMPTS} attempts; retrying")

    def delete_trust_bundle(self, cluster_id: str) -> bool:
        return self._delete(kvm_namespace(cluster_id), TRUST_BUNDLE_SECRET)

    # --- Kubernetes calls ---------------------------------------------------------------------
    def _body(self, cluster_id: str, request: CertificateRequest, key_pair: KeyPair) -> Secret:
        return _secret(
            {
                "name": certificate_secret(request.name),
                "namespace": kvm_namespace(cluster_id),
                "labels": {
                    CLUSTER_LABEL: cluster_id,
                    COMPONENT_LABEL: request.component.value,
                    CERTIFICATE_LABEL: request.name,
                    MANAGED_BY_LABEL: MANAGED_BY,
                },
                "annotations": {
                    SERIAL_ANNOTATION: key_pair.serial,
                    NOT_AFTER_ANNOTATION: key_pair.not_after.isoformat(),
                    ISSUER_ANNOTATION: key_pair.issuer_id,
                },
            },
            "kubernetes.io/tls",
            {
                TLS_CERT: _b64(key_pair.certificate),
                TLS_KEY: _b64(key_pair.private_key),
                CA_CERT: _b64(key_pair.ca_chain),
            },
        )

    def _create(self, namespace: str, body: Secret, what: str) -> bool:
        """Create the Secret; False when one of that name exists (it is not touched)."""
        try:
            with translated(what):
                self.rest.create(SECRETS, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status == 404:
                # The workflow creates the namespace first (kvm.ensure_foundation): not there *yet*.
                raise MissingPrerequisite(
                    f"{what}: namespace {namespace} does not exist: the cluster's foundation must be ensured first"
                ) from exc
            raise
        return True

    def _create_or_replace(self, namespace: str, name: str, body: Secret, what: str) -> bool:
        """One attempt; False when a concurrent writer won the race and the caller should retry."""
        existing = self._get(namespace, name)
        if existing is None:
            return self._create(namespace, body, what)  # 409: created meanwhile
        self._refuse_foreign(existing, what)
        # Replacing with the version we read makes a concurrent write a 409, not a lost update.
        # False: deleted or modified meanwhile.
        return self._replace(namespace, name, _with_version(body, existing), what)

    def _replace(self, namespace: str, name: str, body: Secret, what: str) -> bool:
        """One replace of a Secret read before; False when it changed or went meanwhile (re-read and retry)."""
        try:
            with translated(what):
                self.rest.replace(SECRETS, namespace, name, body)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    @staticmethod
    def _refuse_foreign(existing: Secret, what: str) -> None:
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            raise Conflict(f"{what}: a Secret of that name exists and is not managed by {MANAGED_BY}; not replacing it")

    def _get(self, namespace: str, name: str) -> Secret | None:
        try:
            with translated(f"read secret {namespace}/{name}"):
                return self.rest.read(SECRETS, namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _delete(self, namespace: str, name: str) -> bool:
        try:
            with translated(f"delete secret {namespace}/{name}"):
                self.rest.delete(SECRETS, namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        activity.logger.info("deleted secret %s/%s", namespace, name)
        return True

    def _secrets(self, cluster_id: str) -> dict[str, str]:
        """Certificate name -> Secret name of every key-pair Secret of the cluster."""
        return {name: secret["metadata"]["name"] for name, secret in self._listed(cluster_id).items()}

    def _listed(self, cluster_id: str) -> dict[str, Secret]:
        """Certificate name -> Secret of every key-pair Secret of the cluster: one listing."""
        namespace = kvm_namespace(cluster_id)
        selector = f"{CLUSTER_LABEL}={cluster_id},{MANAGED_BY_LABEL}={MANAGED_BY},{CERTIFICATE_LABEL}"
        with translated(f"list key-pair secrets in {namespace}"):
            items = self.rest.list_all(SECRETS, namespace, selector)
        found = {}
        for item in items:
            meta = item.get("metadata") or {}
            labels = meta.get("labels") or {}
            if meta.get("name") and labels.get(CERTIFICATE_LABEL):
                found[labels[CERTIFICATE_LABEL]] = item
        return found


def _secret(metadata: Secret, secret_type: str, data: dict[str, str]) -> Secret:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": secret_type, "data": data}


def _with_version(body: Secret, existing: Secret) -> Secret:
    """``body`` replacing ``existing``: with the resourceVersion it was read at."""
    version = (existing.get("metadata") or {}).get("resourceVersion")
    return {**body, "metadata": {**body["metadata"], "resourceVersion": version}}
