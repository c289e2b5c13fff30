"""The AWS certificate sink: the real Vault PKI activities (OpenBao dev server) writing key pairs
into Secrets Manager (moto server), as the worker wires them for AWS clusters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import hvac
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from activities.aws.key_pairs import SecretsManagerSink
from activities.aws.provider import AwsProvider
from activities.aws.resources import TRUST_BUNDLE
from activities.kvm.key_pairs import TRUST_BUNDLE_SECRET
from activities.pki.vault import VaultPki
from activities.providers.contract import Providers
from activities.providers.key_pairs import (
    CERTIFICATE_LABEL,
    ISSUER_ANNOTATION,
    NOT_AFTER_ANNOTATION,
    SERIAL_ANNOTATION,
    KeyPair,
    key_matches_certificate,
)
from config.settings import Settings
from models.drift import DriftKind, ObserveInput
from models.errors import Conflict
from models.naming import CLUSTER_LABEL, COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from models.pki import (
    MASTERS_GROUP,
    NODES_GROUP,
    CaInput,
    EnsureCertificatesInput,
    NextIssuerInput,
    TrustBundleInput,
    certificate_requests,
    role_specs,
)
from models.provider import ClusterRef, ResourceChange
from models.spec import ClusterSpec
from tests.servers import OpenBao
from tests.specs import example, unique_id
from worker.clients import aws_clients


@pytest.fixture
def secrets(moto_url: str) -> Any:
    import boto3

    return boto3.Session(region_name="eu-central-1").client("secretsmanager", endpoint_url=moto_url)


@pytest.fixture
def provider(moto_url: str) -> AwsProvider:
    settings = Settings(
        _env_file=None,
        vault_token="unused",
        aws_endpoint_url=moto_url,
        aws_region="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key=SecretStr("testing"),
    )
    return AwsProvider(aws_clients(settings))


@pytest.fixture
def sink(provider: AwsProvider) -> SecretsManagerSink:
    return provider.key_pairs  # where the AWS provider keeps its key pairs


@pytest.fixture
def pki(openbao: OpenBao, provider: AwsProvider) -> VaultPki:
    vault = hvac.Client(url=openbao.addr, token=openbao.token)
    return VaultPki(vault, Providers([provider]))


@pytest.fixture
def spec() -> ClusterSpec:
    return example("aws-cluster.yaml", id=unique_id("sm"), masters={"count": 1})


def certificates(spec: ClusterSpec) -> EnsureCertificatesInput:
    return EnsureCertificatesInput(
        spec=spec, requests=certificate_requests(spec), renew_before=spec.certificates.renew_before
    )


def provision(pki: VaultPki, spec: ClusterSpec) -> None:
    pki.ensure_ca(CaInput(spec=spec))
    pki.ensure_roles(ClusterRef(spec=spec))
    pki.ensure_policy(ClusterRef(spec=spec))


def stored(secrets: Any, spec: ClusterSpec, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """The secret's JSON value and its tags."""
    secret_id = f"tenantctl/{spec.id}/{name}"
    value = json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
    tags = {t["Key"]: t["Value"] for t in secrets.describe_secret(SecretId=secret_id).get("Tags", [])}
    return value, tags


def subject(pem: str) -> tuple[str, set[str]]:
    certificate = x509.load_pem_x509_certificate(pem.encode())
    cn = str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    return cn, {str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}


def test_key_pairs_go_to_secrets_manager_once(pki: VaultPki, secrets: Any, spec: ClusterSpec) -> None:
    provision(pki, spec)
    first = pki.ensure_certificates(certificates(spec))
    again = pki.ensure_certificates(certificates(spec))

    requests = certificate_requests(spec)
    assert sorted(first.issued) == sorted(r.name for r in requests) and not first.kept
    assert again.issued == [] and sorted(again.kept) == sorted(first.issued)  # twice = once
    assert again.records == first.records
    dumped = first.model_dump_json() + again.model_dump_json()
    assert "PRIVATE KEY" not in dumped  # only public facts leave the activity

    by_name = {r.name: r for r in first.records}
    roles = {role.name: role for role in role_specs(spec)}
    for request in requests:
        record = by_name[request.name]
        assert record.destination == f"secretsmanager secret tenantctl/{spec.id}/{request.name}"
        value, tags = stored(secrets, spec, request.name)
        assert set(value) == {"tls.crt", "tls.key", "ca.crt"}
        assert key_matches_certificate(value["tls.crt"], value["tls.key"])
        cn, orgs = subject(value["tls.crt"])
        assert cn == request.common_name == record.common_name
        assert orgs == set(roles[request.component].organization)  # what RBAC reads as the group
        assert tags == {
            CLUSTER_LABEL: spec.id,
            COMPONENT_LABEL: request.component.value,
            CERTIFICATE_LABEL: request.name,
            MANAGED_BY_LABEL: MANAGED_BY,
            SERIAL_ANNOTATION: record.serial,
            NOT_AFTER_ANNOTATION: record.not_after.isoformat(),
            ISSUER_ANNOTATION: record.issuer_id,
        }
    assert subject(stored(secrets, spec, "admin")[0]["tls.crt"]) == ("tenantctl-admin", {MASTERS_GROUP})
    assert subject(stored(secrets, spec, "node-worker-1")[0]["tls.crt"]) == ("system:node:worker-1", {NODES_GROUP})
    # one version each: the second run wrote nothing
    versions = secrets.list_secret_version_ids(SecretId=f"tenantctl/{spec.id}/admin")["Versions"]
    assert len(versions) == 1


def test_a_forced_reissue_writes_a_new_version(pki: VaultPki, secrets: Any, spec: ClusterSpec) -> None:
    provision(pki, spec)
    first = {r.name: r.serial for r in pki.ensure_certificates(certificates(spec)).records}
    forced = pki.ensure_certificates(certificates(spec).model_copy(update={"force": True}))
    assert sorted(forced.issued) == sorted(first)
    value, tags = stored(secrets, spec, "apiserver")
    assert tags[SERIAL_ANNOTATION] == {r.name: r.serial for r in forced.records}["apiserver"] != first["apiserver"]
    assert key_matches_certificate(value["tls.crt"], value["tls.key"])


def test_a_published_trust_bundle_reaches_every_secret(pki: VaultPki, secrets: Any, spec: ClusterSpec) -> None:
    provision(pki, spec)
    pki.ensure_certificates(certificates(spec))
    old = pki.ensure_ca(CaInput(spec=spec)).issuer_id
    new = pki.ensure_next_issuer(NextIssuerInput(spec=spec)).issuer_id

    published = pki.publish_trust_bundle(TrustBundleInput(spec=spec, issuer_ids=[old, new]))
    assert f"secretsmanager secret tenantctl/{spec.id}/{TRUST_BUNDLE}" in published.updated
    bundle = stored(secrets, spec, TRUST_BUNDLE)[0]["ca.crt"]
    assert len(x509.load_pem_x509_certificates(bundle.encode())) == 2
    value, _ = stored(secrets, spec, "scheduler")
    assert value["ca.crt"] == bundle and key_matches_certificate(value["tls.crt"], value["tls.key"])
    again = pki.publish_trust_bundle(TrustBundleInput(spec=spec, issuer_ids=[old, new]))
    assert again.updated == []


def test_removal_deletes_every_secret_at_once(pki: VaultPki, sink: SecretsManagerSink, secrets: Any) -> None:
    spec = example("aws-cluster.yaml", id=unique_id("sm"), masters={"count": 1})
    provision(pki, spec)
    pki.ensure_certificates(certificates(spec))
    sink.write_trust_bundle(spec.id, "-----BEGIN CERTIFICATE-----", ["a"])
    assert TRUST_BUNDLE == TRUST_BUNDLE_SECRET  # the same name on both providers

    removed = pki.ensure_certificates_absent(ClusterRef(spec=spec))
    assert removed.count(ResourceChange.DELETED) == len(certificate_requests(spec)) + 1
    listed = secrets.list_secrets(
        Filters=[{"Key": "name", "Values": [f"tenantctl/{spec.id}/"]}], IncludePlannedDeletion=True
    )
    assert listed["SecretList"] == []  # deleted without a recovery window: nothing left, not even planned
    assert pki.ensure_certificates_absent(ClusterRef(spec=spec)).count(ResourceChange.ABSENT) == 1
    # the names are free again at once (a recovery window would hold them for up to 30 days)
    pki.ensure_certificates(certificates(spec))
    assert len(sink.list_names(spec.id)) == len(certificate_requests(spec))
    pki.ensure_certificates_absent(ClusterRef(spec=spec))


def test_a_foreign_secret_is_neither_overwritten_nor_deleted(
    sink: SecretsManagerSink, secrets: Any, spec: ClusterSpec
) -> None:
    secrets.create_secret(Name=f"tenantctl/{spec.id}/admin", SecretString="someone else's")
    request = next(r for r in certificate_requests(spec) if r.name == "admin")
    pair = KeyPair(
        certificate="c", private_key="k", ca_chain="ca", serial="01", not_after=datetime.now(UTC), issuer_id="i"
    )
    with pytest.raises(Conflict, match="not managed by tenantctl"):
        sink.write(spec.id, request, pair)
    with pytest.raises(Conflict):
        sink.delete(spec.id, "admin")
    assert sink.list_names(spec.id) == []  # not one of ours: untagged
    assert secrets.get_secret_value(SecretId=f"tenantctl/{spec.id}/admin")["SecretString"] == "someone else's"
    secrets.delete_secret(SecretId=f"tenantctl/{spec.id}/admin", ForceDeleteWithoutRecovery=True)


def test_a_secret_scheduled_for_deletion_is_restored_and_rewritten(
    sink: SecretsManagerSink, secrets: Any, spec: ClusterSpec
) -> None:
    request = next(r for r in certificate_requests(spec) if r.name == "scheduler")
    pair = KeyPair(
        certificate="c1", private_key="k1", ca_chain="ca", serial="01", not_after=datetime.now(UTC), issuer_id="i"
    )
    sink.write(spec.id, request, pair)
    secrets.delete_secret(SecretId=f"tenantctl/{spec.id}/scheduler", RecoveryWindowInDays=7)  # by hand
    assert sink.read(spec.id, "scheduler") is None
    sink.write(spec.id, request, pair.__class__(**{**pair.__dict__, "certificate": "c2", "serial": "02"}))
    value, tags = stored(secrets, spec, "scheduler")
    assert value["tls.crt"] == "c2" and tags[SERIAL_ANNOTATION] == "02"
    assert sink.delete_all(spec.id) == ["scheduler"]


def test_pki_observe_reports_a_deleted_secrets_manager_entry(pki: VaultPki, secrets: Any, spec: ClusterSpec) -> None:
    provision(pki, spec)
    pki.ensure_certificates(certificates(spec))
    observe = ObserveInput(spec=spec, nodes={n: spec.kubernetes_version for n in spec.node_names()})
    assert pki.observe(observe).items == []

    secrets.delete_secret(SecretId=f"tenantctl/{spec.id}/apiserver", ForceDeleteWithoutRecovery=True)
    report = pki.observe(observe)
    assert report.of(DriftKind.MISSING) == [f"secretsmanager secret tenantctl/{spec.id}/apiserver"], report

    pki.ensure_certificates(certificates(spec))  # the create's step writes it again
    # the leaf whose entry was deleted is held by no stored key pair now: the repair revokes it
    assert [i.object.startswith("vault:certificate/") for i in pki.observe(observe).items] == [True]
    assert len(pki.revoke_unheld_certificates(observe).revoked) == 1
    assert pki.observe(observe).items == []
