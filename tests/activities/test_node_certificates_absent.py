"""A gone node's credentials: every leaf issued to it revoked in a real OpenBao, its stored key pair
deleted from where its provider keeps it (a Secret in the host API emulator for KVM, a Secrets
Manager entry in moto for AWS); the other nodes' key pairs untouched; twice = once."""

from __future__ import annotations

from typing import Any

import hvac
import pytest
from kubernetes import client as k8s
from pydantic import SecretStr

from activities.aws.provider import AwsProvider
from activities.pki.vault import VaultPki
from activities.providers.contract import Providers
from config.settings import Settings
from models.naming import certificate_secret, kvm_namespace
from models.pki import (
    CaInput,
    EnsureCertificatesInput,
    NodeCertificatesInput,
    certificate_requests,
    pki_mount,
)
from models.provider import ClusterRef
from models.spec import ClusterSpec
from tests.servers import OpenBao
from tests.specs import example, small_kvm, unique_id
from worker.clients import aws_clients


def provision_and_issue(pki: VaultPki, spec: ClusterSpec, *, force_again: bool = False) -> None:
    pki.ensure_ca(CaInput(spec=spec))
    pki.ensure_roles(ClusterRef(spec=spec))
    pki.ensure_policy(ClusterRef(spec=spec))
    requests = certificate_requests(spec)
    pki.ensure_certificates(
        EnsureCertificatesInput(spec=spec, requests=requests, renew_before=spec.certificates.renew_before)
    )
    if force_again:  # a rotation: the earlier leaves stay valid in Vault until their TTL
        pki.ensure_certificates(
            EnsureCertificatesInput(
                spec=spec, requests=requests, renew_before=spec.certificates.renew_before, force=True
            )
        )


def valid_serials_by_cn(vault: hvac.Client, mount: str) -> dict[str, set[str]]:
    """CN -> serials of the unrevoked leaves Vault holds for the mount."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    found: dict[str, set[str]] = {}
    for serial in (vault.list(f"{mount}/certs") or {"data": {"keys": []}})["data"]["keys"]:
        data = vault.read(f"{mount}/cert/{serial}")["data"]
        if int(data.get("revocation_time") or 0):
            continue
        certificate = x509.load_pem_x509_certificate(data["certificate"].encode())
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        found.setdefault(str(names[0].value) if names else "", set()).add(serial)
    return found


# --- KVM: Secrets in the host API ---------------------------------------------------------------------
def test_kvm_node_certificates_revoked_and_secret_deleted_twice_is_once(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api
) -> None:
    spec = small_kvm()
    namespace = kvm_namespace(spec.id)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    provision_and_issue(pki, spec, force_again=True)
    mount = pki_mount(spec.id)
    before = valid_serials_by_cn(vault, mount)
    assert len(before["system:node:worker-0"]) == 2  # the first leaf and the rotated one

    first = pki.ensure_node_certificates_absent(NodeCertificatesInput(spec=spec, nodes=["worker-0"]))
    again = pki.ensure_node_certificates_absent(NodeCertificatesInput(spec=spec, nodes=["worker-0"]))

    assert set(first.revoked) == before["system:node:worker-0"]
    assert first.deleted == [f"secret {namespace}/{certificate_secret('node-worker-0')}"]
    assert again.revoked == [] and again.deleted == []  # twice = once
    after = valid_serials_by_cn(vault, mount)
    assert "system:node:worker-0" not in after
    assert after == {cn: serials for cn, serials in before.items() if cn != "system:node:worker-0"}
    secrets = {s.metadata.name for s in core.list_namespaced_secret(namespace).items}
    assert certificate_secret("node-worker-0") not in secrets
    assert {certificate_secret("node-worker-1"), certificate_secret("node-master-0")} <= secrets


def test_kvm_nothing_issued_or_no_mount_is_success(pki: VaultPki) -> None:
    spec = small_kvm()  # no mount, no namespace: a removal retried after teardown began
    result = pki.ensure_node_certificates_absent(NodeCertificatesInput(spec=spec, nodes=["worker-5"]))
    assert result.revoked == [] and result.deleted == []


# --- AWS: Secrets Manager entries -----------------------------------------------------------------------
@pytest.fixture
def aws_pki(openbao: OpenBao, moto_url: str) -> tuple[VaultPki, Any]:
    import boto3

    settings = Settings(
        _env_file=None,
        vault_token="unused",
        aws_endpoint_url=moto_url,
        aws_region="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key=SecretStr("testing"),
    )
    vault = hvac.Client(url=openbao.addr, token=openbao.token)
    secrets = boto3.Session(region_name="eu-central-1").client("secretsmanager", endpoint_url=moto_url)
    return VaultPki(vault, Providers([AwsProvider(aws_clients(settings))])), secrets


def test_aws_node_certificates_revoked_and_entry_deleted_twice_is_once(
    aws_pki: tuple[VaultPki, Any], openbao: OpenBao
) -> None:
    pki, secrets = aws_pki
    vault = hvac.Client(url=openbao.addr, token=openbao.token)
    spec = example("aws-cluster.yaml", id=unique_id("nc"), masters={"count": 1})
    provision_and_issue(pki, spec)
    mount = pki_mount(spec.id)
    before = valid_serials_by_cn(vault, mount)
    gone = ["worker-0", "worker-1"]

    first = pki.ensure_node_certificates_absent(NodeCertificatesInput(spec=spec, nodes=gone))
    again = pki.ensure_node_certificates_absent(NodeCertificatesInput(spec=spec, nodes=gone))

    assert set(first.revoked) == before["system:node:worker-0"] | before["system:node:worker-1"]
    assert sorted(first.deleted) == [f"secretsmanager secret tenantctl/{spec.id}/node-{n}" for n in gone]
    assert again.revoked == [] and again.deleted == []
    after = valid_serials_by_cn(vault, mount)
    assert not {f"system:node:{n}" for n in gone} & set(after)
    names = {
        s["Name"]
        for page in secrets.get_paginator("list_secrets").paginate(
            Filters=[{"Key": "name", "Values": [f"tenantctl/{spec.id}/"]}]
        )
        for s in page["SecretList"]
    }
    assert not {f"tenantctl/{spec.id}/node-{n}" for n in gone} & names
    assert f"tenantctl/{spec.id}/node-master-0" in names and f"tenantctl/{spec.id}/admin" in names
