"""Vault PKI activities against a real OpenBao dev server, key pairs in the host API emulator.

Each test uses a fresh cluster id, so it owns its mount, policy and namespace. Activities run as
plain methods, and through ``ActivityEnvironment`` where heartbeats matter.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s
from temporalio.testing import ActivityEnvironment

from activities.common.errors import translated
from activities.kvm.key_pairs import KubernetesSecretSink
from activities.kvm.provider import KvmProvider
from activities.pki.vault import ROOT_ISSUER_NAME, VaultPki, serial_hex
from activities.providers.contract import Providers
from activities.providers.key_pairs import (
    CERTIFICATE_LABEL,
    ISSUER_ANNOTATION,
    NOT_AFTER_ANNOTATION,
    SERIAL_ANNOTATION,
    KeyPair,
    key_matches_certificate,
)
from models.drift import DriftItem, DriftKind, ObserveInput
from models.errors import (
    NON_RETRYABLE_ERROR_TYPES,
    Conflict,
    Forbidden,
    InvalidInput,
    MissingPrerequisite,
    PermanentError,
)
from models.naming import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    certificate_secret,
    kvm_namespace,
)
from models.pki import (
    MASTERS_GROUP,
    NODES_GROUP,
    CaInput,
    CertificateRequest,
    CertificatesResult,
    Component,
    EnsureCertificatesInput,
    certificate_requests,
    pki_mount,
    role_specs,
    vault_policy_name,
)
from models.provider import ClusterRef, EnsureResult, ResourceChange
from models.spec import ClusterSpec
from tests.servers import OpenBao
from tests.specs import example, small_kvm, unique_id

BACKDATE = timedelta(seconds=30)  # Vault's default not_before_duration: leaves start 30 s in the past


# --- fixtures ----------------------------------------------------------------------------------------
def provision(pki: VaultPki, spec: ClusterSpec) -> None:
    pki.ensure_ca(CaInput(spec=spec))
    pki.ensure_roles(ClusterRef(spec=spec))
    pki.ensure_policy(ClusterRef(spec=spec))


def create_namespace(core: k8s.CoreV1Api, spec: ClusterSpec) -> str:
    name = kvm_namespace(spec.id)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


def certificates(
    spec: ClusterSpec, requests: list[CertificateRequest] | None = None, **changes: Any
) -> EnsureCertificatesInput:
    return EnsureCertificatesInput(
        spec=spec,
        requests=certificate_requests(spec) if requests is None else requests,
        **{"renew_before": spec.certificates.renew_before, **changes},
    )


def data(vault: hvac.Client, path: str) -> dict[str, Any]:
    response = vault.read(path)
    assert response is not None, path
    return dict(response["data"])


def listed(vault: hvac.Client, path: str) -> list[str]:
    response = vault.list(path)
    return [] if response is None else list(response["data"]["keys"])


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:  # Vault leaves carry no basic constraints at all
        return False


def leaf_serials(vault: hvac.Client, mount: str) -> set[str]:
    """Serials of the leaves Vault stored for the mount (its CAs left out)."""
    serials = set()
    for serial in listed(vault, f"{mount}/certs"):
        pem = data(vault, f"{mount}/cert/{serial}")["certificate"]
        if not is_ca(x509.load_pem_x509_certificate(pem.encode())):
            serials.add(serial)
    return serials


def secret_files(core: k8s.CoreV1Api, spec: ClusterSpec, name: str) -> tuple[k8s.V1Secret, dict[str, str]]:
    secret = core.read_namespaced_secret(certificate_secret(name), kvm_namespace(spec.id))
    files = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
    return secret, files


def meta(secret: k8s.V1Secret) -> k8s.V1ObjectMeta:
    assert secret.metadata is not None
    return secret.metadata


def ca_certificate(vault: hvac.Client, mount: str) -> x509.Certificate:
    issuer_id = data(vault, f"{mount}/config/issuers")["default"]
    return x509.load_pem_x509_certificate(data(vault, f"{mount}/issuer/{issuer_id}")["certificate"].encode())


def names_of(certificate: x509.Certificate) -> tuple[str, set[str], set[str], set[str]]:
    """CN, O, DNS SANs and IP SANs."""
    cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = {str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns, ips = (
            set(sans.get_values_for_type(x509.DNSName)),
            {str(i) for i in sans.get_values_for_type(x509.IPAddress)},
        )
    except x509.ExtensionNotFound:
        dns, ips = set(), set()
    return str(cn), orgs, dns, ips


# --- CA ------------------------------------------------------------------------------------------------
def test_ensure_ca_creates_one_root_and_keeps_it(pki: VaultPki, vault: hvac.Client, spec: ClusterSpec) -> None:
    first = pki.ensure_ca(CaInput(spec=spec))
    again = pki.ensure_ca(CaInput(spec=spec))

    mount = pki_mount(spec.id)
    assert first.created and not again.created
    assert first.mount == again.mount == mount
    assert first.issuer_id == again.issuer_id
    assert listed(vault, f"{mount}/issuers") == [first.issuer_id]
    assert data(vault, f"{mount}/issuer/{first.issuer_id}")["issuer_name"] == ROOT_ISSUER_NAME
    assert first.common_name == f"{spec.id} root CA"

    ca = ca_certificate(vault, mount)
    assert ca.subject == ca.issuer and is_ca(ca)
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    expected_end = datetime.now(UTC) + spec.certificates.ca_ttl
    assert abs(ca.not_valid_after_utc - expected_end) < timedelta(minutes=2)
    assert first.not_after == ca.not_valid_after_utc

    mounts = data(vault, "sys/mounts")
    assert mounts[f"{mount}/"]["type"] == "pki"
    assert mounts[f"{mount}/"]["config"]["max_lease_ttl"] >= spec.certificates.ca_ttl.total_seconds()
    assert data(vault, f"{mount}/config/auto-tidy")["enabled"] is True


def test_ensure_ca_racing_itself_makes_one_root(openbao: OpenBao, spec: ClusterSpec) -> None:
    # Two attempts of the activity at once (a retry while the first still runs) must not make two CAs.
    results: list[Any] = []

    def attempt() -> None:
        worker = VaultPki(hvac.Client(url=openbao.addr, token=openbao.token), Providers([]))
        results.append(worker.ensure_ca(CaInput(spec=spec)))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    vault = hvac.Client(url=openbao.addr, token=openbao.token)
    assert len(results) == 8, "every attempt succeeds"
    assert len({r.issuer_id for r in results}) == 1
    assert listed(vault, f"{pki_mount(spec.id)}/issuers") == [results[0].issuer_id]


def test_ensure_ca_converges_mount_tuning(pki: VaultPki, vault: hvac.Client, spec: ClusterSpec) -> None:
    first = pki.ensure_ca(CaInput(spec=spec))
    mount = pki_mount(spec.id)
    vault.write_data(f"sys/mounts/{mount}/tune", data={"max_lease_ttl": "1h", "description": "edited"})
    vault.write_data(f"{mount}/config/auto-tidy", data={"enabled": False})

    again = pki.ensure_ca(CaInput(spec=spec))

    tuned = data(vault, "sys/mounts")[f"{mount}/"]
    assert tuned["config"]["max_lease_ttl"] == spec.certificates.ca_ttl.total_seconds()
    assert tuned["description"] == f"tenantctl PKI of cluster {spec.id}"
    assert data(vault, f"{mount}/config/auto-tidy")["enabled"] is True
    assert again.issuer_id == first.issuer_id and not again.created


# --- roles -----------------------------------------------------------------------------------------------
WORKER_POLICY_TEXT = (Path(__file__).resolve().parents[2] / "deploy" / "vault" / "tenantctl-worker.hcl").read_text()
LISTING_GRANT = 'path "sys/mounts" {\n  capabilities = ["read"]\n}\n'
MOUNT_GRANT = 'path "sys/mounts/pki/+" {\n  capabilities = ["create", "read", "update", "delete"]\n}\n'


def pki_under_policy(vault: hvac.Client, core: k8s.CoreV1Api, name: str, policy: str) -> VaultPki:
    vault.sys.create_or_update_policy(name, policy)
    token = vault.auth.token.create(policies=[name], no_default_policy=True, ttl="10m")["auth"]["client_token"]
    worker = hvac.Client(url=vault.url, token=token)
    return VaultPki(worker, Providers([KvmProvider(core.api_client)]))


def test_the_mount_is_read_at_its_own_path_not_from_the_fleet_wide_listing(
    vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    # Every create and drift check asks whether pki/<id> is mounted; the listing of every secrets
    # engine grows with the fleet. A token that may not list them still creates, converges and
    # observes its mount, and tells a missing mount apart.
    assert LISTING_GRANT in WORKER_POLICY_TEXT
    pki = pki_under_policy(vault, core, f"no-listing-{spec.id}", WORKER_POLICY_TEXT.replace(LISTING_GRANT, ""))
    with pytest.raises(hvac.exceptions.Forbidden):
        pki.vault.read("sys/mounts")

    missing = pki.observe(ObserveInput(spec=spec, nodes={}))
    assert DriftItem(kind=DriftKind.MISSING, object=f"vault:mount/{pki_mount(spec.id)}") in missing.items

    first = pki.ensure_ca(CaInput(spec=spec))
    vault.write_data(f"sys/mounts/{pki_mount(spec.id)}/tune", data={"description": "edited"})
    again = pki.ensure_ca(CaInput(spec=spec))
    assert first.created and not again.created and again.issuer_id == first.issuer_id
    assert data(vault, "sys/mounts")[f"{pki_mount(spec.id)}/"]["description"] == f"tenantctl PKI of cluster {spec.id}"
    present = pki.observe(ObserveInput(spec=spec, nodes={}))
    assert not any(i.object == f"vault:mount/{pki_mount(spec.id)}" for i in present.items)


def test_a_policy_without_the_mount_read_falls_back_to_the_listing(
    vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    # A policy installed before the worker read sys/mounts/pki/<id> still works: refused that read,
    # the worker answers from the listing.
    assert MOUNT_GRANT in WORKER_POLICY_TEXT
    older = WORKER_POLICY_TEXT.replace(MOUNT_GRANT, MOUNT_GRANT.replace('"read", ', ""))
    pki = pki_under_policy(vault, core, f"older-{spec.id}", older)
    with pytest.raises(hvac.exceptions.Forbidden):
        pki.vault.read("sys/mounts/pki/anything")

    missing = pki.observe(ObserveInput(spec=spec, nodes={}))
    assert DriftItem(kind=DriftKind.MISSING, object=f"vault:mount/{pki_mount(spec.id)}") in missing.items
    first = pki.ensure_ca(CaInput(spec=spec))
    again = pki.ensure_ca(CaInput(spec=spec))
    assert first.created and not again.created and again.issuer_id == first.issuer_id


def test_a_create_writes_the_roles_the_listing_lacks_without_reading_them(
    vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    # Under a policy that may list and write roles but not read them, a fresh mount's roles are
    # still all created: the listing said they were missing, so none of them was read.
    grant = 'path "pki/+/roles/*" {\n  capabilities = ["read", "create", "update", "delete"]\n}\n'
    assert grant in WORKER_POLICY_TEXT
    unreadable = WORKER_POLICY_TEXT.replace(grant, grant.replace('"read", ', ""))
    pki = pki_under_policy(vault, core, f"no-role-read-{spec.id}", unreadable)
    pki.ensure_ca(CaInput(spec=spec))

    created = pki.ensure_roles(ClusterRef(spec=spec))

    desired = {r.name.value for r in role_specs(spec)}
    assert created.count(ResourceChange.CREATED) == len(desired) == len(created.outcomes)
    assert set(listed(vault, f"{pki_mount(spec.id)}/roles")) == desired
    with pytest.raises(Forbidden):  # a listed role is read before it is converged
        pki.ensure_roles(ClusterRef(spec=spec))


def test_roles_are_created_once_and_drift_is_converged(pki: VaultPki, vault: hvac.Client, spec: ClusterSpec) -> None:
    pki.ensure_ca(CaInput(spec=spec))
    mount = pki_mount(spec.id)
    desired = {r.name.value for r in role_specs(spec)}

    first = pki.ensure_roles(ClusterRef(spec=spec))
    again = pki.ensure_roles(ClusterRef(spec=spec))

    assert {o.name for o in first.outcomes} == desired
    assert first.count(ResourceChange.CREATED) == len(desired)
    assert again.count(ResourceChange.UNCHANGED) == len(desired) and len(again.outcomes) == len(desired)
    assert set(listed(vault, f"{mount}/roles")) == desired

    node = data(vault, f"{mount}/roles/node")
    ttl = int(spec.certificates.ttl.total_seconds())
    assert (node["ttl"], node["max_ttl"]) == (ttl, ttl)
    assert (node["key_type"], node["key_bits"]) == ("ec", 256)
    assert node["organization"] == [NODES_GROUP] and node["allow_glob_domains"] is True
    assert node["no_store"] is False and node["generate_lease"] is False
    assert node["key_usage"] == ["DigitalSignature"]
    assert data(vault, f"{mount}/roles/admin")["organization"] == [MASTERS_GROUP]
    assert data(vault, f"{mount}/roles/apiserver")["allow_localhost"] is True
    assert data(vault, f"{mount}/roles/admin")["allow_localhost"] is False

    # Someone edits a role by hand (a full write: Vault's role write replaces every field).
    vault.write_data(f"{mount}/roles/node", data={**node, "max_ttl": "8760h", "allowed_domains": ["*"]})
    vault.write_data(f"{mount}/roles/hand-made", data={"allowed_domains": ["example.com"]})
    converged = pki.ensure_roles(ClusterRef(spec=spec))

    changes = {o.name: o.change for o in converged.outcomes}
    assert changes.pop("node") is ResourceChange.UPDATED
    assert changes.pop("hand-made") is ResourceChange.UNCHANGED  # reported, left alone
    assert set(changes.values()) == {ResourceChange.UNCHANGED}
    assert [o.kind for o in converged.outcomes if o.name == "hand-made"] == ["unmanaged-pki-role"]
    assert data(vault, f"{mount}/roles/node")["max_ttl"] == ttl
    assert data(vault, f"{mount}/roles/node")["allowed_domains"] == role_specs(spec)[2].allowed_domains
    assert "hand-made" in listed(vault, f"{mount}/roles")


# --- policy ------------------------------------------------------------------------------------------------
def test_policy_token_issues_from_its_own_mount_only(pki: VaultPki, vault: hvac.Client, openbao: OpenBao) -> None:
    mine, other = small_kvm(), small_kvm()
    provision(pki, mine)
    provision(pki, other)
    again = pki.ensure_policy(ClusterRef(spec=mine))
    assert [(o.name, o.change) for o in again.outcomes] == [(vault_policy_name(mine.id), ResourceChange.UNCHANGED)]

    token = vault.auth.token.create(policies=[vault_policy_name(mine.id)], ttl="10m")["auth"]["client_token"]
    component = hvac.Client(url=openbao.addr, token=token)
    own, foreign = pki_mount(mine.id), pki_mount(other.id)

    issued = component.write_data(f"{own}/issue/admin", data={"common_name": "tenantctl-admin", "ttl": "1h"})
    assert issued["data"]["serial_number"]
    assert "BEGIN CERTIFICATE" in component.read(f"{own}/cert/ca")["data"]["certificate"]
    with pytest.raises(Forbidden), translated("issue from another cluster's mount"):
        component.write_data(f"{foreign}/issue/admin", data={"common_name": "tenantctl-admin", "ttl": "1h"})
    with pytest.raises(Forbidden), translated("list certificates"):
        component.list(f"{own}/certs")
    with pytest.raises(Forbidden), translated("edit a role"):
        component.write_data(f"{own}/roles/admin", data={"allowed_domains": ["*"]})

    # Someone widens the policy by hand: converged back.
    vault.sys.create_or_update_acl_policy(vault_policy_name(mine.id), 'path "*" { capabilities = ["sudo"] }')
    converged = pki.ensure_policy(ClusterRef(spec=mine))
    assert converged.count(ResourceChange.UPDATED) == 1
    assert 'path "*"' not in data(vault, f"sys/policies/acl/{vault_policy_name(mine.id)}")["policy"]


# --- certificates --------------------------------------------------------------------------------------------
def test_certificates_say_what_rbac_reads_and_are_stored(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    provision(pki, spec)
    namespace = create_namespace(core, spec)
    mount = pki_mount(spec.id)
    requests = certificate_requests(spec)

    result = pki.ensure_certificates(certificates(spec))

    ca = ca_certificate(vault, mount)
    issuer_id = data(vault, f"{mount}/config/issuers")["default"]
    assert sorted(result.issued) == sorted(r.name for r in requests) and not result.kept
    assert leaf_serials(vault, mount) == {r.serial for r in result.records}
    by_name = {r.name: r for r in result.records}
    for request in requests:
        record = by_name[request.name]
        secret, files = secret_files(core, spec, request.name)
        leaf = x509.load_pem_x509_certificate(files["tls.crt"].encode())
        cn, orgs, dns, ips = names_of(leaf)

        assert cn == record.common_name == request.common_name
        assert dns == set(request.alt_names) and ips == set(request.ip_sans)
        assert orgs == set({r.name: r for r in role_specs(spec)}[request.component].organization)
        assert leaf.issuer == ca.subject
        leaf.verify_directly_issued_by(ca)
        assert abs(leaf.not_valid_after_utc - leaf.not_valid_before_utc - spec.certificates.ttl - BACKDATE) < timedelta(
            seconds=5
        )
        assert record.serial == serial_hex(leaf.serial_number)
        assert (record.not_before, record.not_after) == (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
        assert record.issuer_id == issuer_id
        assert record.destination == f"secret {namespace}/{certificate_secret(request.name)}"
        assert key_matches_certificate(files["tls.crt"], files["tls.key"])
        assert x509.load_pem_x509_certificates(files["ca.crt"].encode()) == [ca]

        assert secret.type == "kubernetes.io/tls"
        assert meta(secret).labels == {
            CLUSTER_LABEL: spec.id,
            COMPONENT_LABEL: request.component.value,
            CERTIFICATE_LABEL: request.name,
            MANAGED_BY_LABEL: MANAGED_BY,
        }
        annotations = meta(secret).annotations or {}
        assert annotations[SERIAL_ANNOTATION] == record.serial
        assert annotations[ISSUER_ANNOTATION] == issuer_id
        assert datetime.fromisoformat(annotations[NOT_AFTER_ANNOTATION]) == record.not_after

        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
        if request.component in (Component.APISERVER, Component.ETCD, Component.NODE):
            assert ExtendedKeyUsageOID.SERVER_AUTH in usages
        assert_no_private_key(result, files["tls.key"])

    apiserver = names_of(x509.load_pem_x509_certificate(secret_files(core, spec, "apiserver")[1]["tls.crt"].encode()))
    assert {spec.api_domain, "kubernetes", "kubernetes.default.svc"} <= apiserver[2]
    assert str(next(ipaddress.ip_network(spec.networking.service_cidr).hosts())) in apiserver[3]
    assert names_of(x509.load_pem_x509_certificate(secret_files(core, spec, "admin")[1]["tls.crt"].encode()))[1] == {
        MASTERS_GROUP
    }
    node = names_of(x509.load_pem_x509_certificate(secret_files(core, spec, "node-worker-0")[1]["tls.crt"].encode()))
    assert node[:2] == ("system:node:worker-0", {NODES_GROUP})


def assert_no_private_key(result: CertificatesResult, key_pem: str) -> None:
    dumped = result.model_dump_json() + repr(result)
    key_body = "".join(key_pem.strip().splitlines()[1:-1])
    assert "PRIVATE KEY" not in dumped
    assert key_body[:40] not in dumped


def test_certificates_twice_is_once(pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec) -> None:
    provision(pki, spec)
    create_namespace(core, spec)
    first = pki.ensure_certificates(certificates(spec))
    versions = {r.name: meta(secret_files(core, spec, r.name)[0]).resource_version for r in first.records}

    again = pki.ensure_certificates(certificates(spec))

    assert again.issued == [] and sorted(again.kept) == sorted(first.issued)
    assert again.records == first.records
    assert leaf_serials(vault, pki_mount(spec.id)) == {r.serial for r in first.records}
    assert {r.name: meta(secret_files(core, spec, r.name)[0]).resource_version for r in again.records} == versions


def test_only_what_is_due_or_wrong_is_reissued(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    provision(pki, spec)
    namespace = create_namespace(core, spec)
    mount = pki_mount(spec.id)
    first = {r.name: r for r in pki.ensure_certificates(certificates(spec)).records}

    # Four reasons to re-issue, one certificate each; everything else is kept.
    core.delete_namespaced_secret(certificate_secret("scheduler"), namespace)  # nothing stored
    vault.write_data(f"{mount}/revoke", data={"serial_number": first["admin"].serial})  # revoked in Vault
    broken, _ = secret_files(core, spec, "controller-manager")  # key of another pair
    broken.data = {
        **(broken.data or {}),
        "tls.key": (secret_files(core, spec, "service-account")[0].data or {})["tls.key"],
    }
    core.replace_namespaced_secret(certificate_secret("controller-manager"), namespace, broken)
    dropped = "kubernetes.default.svc.cluster.local"  # the request changed: SANs differ
    requests = [
        r.model_copy(update={"alt_names": [n for n in r.alt_names if n != dropped]}) if r.name == "apiserver" else r
        for r in certificate_requests(spec)
    ]

    result = pki.ensure_certificates(certificates(spec, requests))

    assert sorted(result.issued) == ["admin", "apiserver", "controller-manager", "scheduler"]
    assert sorted(result.kept) == sorted(set(first) - set(result.issued))
    records = {r.name: r for r in result.records}
    for name in result.kept:
        assert records[name] == first[name]
    for name in result.issued:
        assert records[name].serial != first[name].serial
    _, files = secret_files(core, spec, "controller-manager")
    assert key_matches_certificate(files["tls.crt"], files["tls.key"])
    apiserver = x509.load_pem_x509_certificate(secret_files(core, spec, "apiserver")[1]["tls.crt"].encode())
    assert dropped not in names_of(apiserver)[2]


def test_force_and_due_reissue_everything(pki: VaultPki, core: k8s.CoreV1Api, spec: ClusterSpec) -> None:
    provision(pki, spec)
    create_namespace(core, spec)
    requests = certificate_requests(spec)[:3]
    first = pki.ensure_certificates(certificates(spec, requests))

    forced = pki.ensure_certificates(certificates(spec, requests, force=True))
    due = pki.ensure_certificates(certificates(spec, requests, renew_before=spec.certificates.ttl))

    for result, previous in ((forced, first), (due, forced)):
        assert sorted(result.issued) == sorted(r.name for r in requests) and not result.kept
        assert {r.serial for r in result.records}.isdisjoint(r.serial for r in previous.records)


def test_new_default_issuer_reissues_every_leaf(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    provision(pki, spec)
    create_namespace(core, spec)
    mount = pki_mount(spec.id)
    requests = certificate_requests(spec)[:2]
    first = pki.ensure_certificates(certificates(spec, requests))
    rotated = vault.write_data(
        f"{mount}/root/generate/internal",
        data={"common_name": "rotated", "ttl": "8760h", "key_type": "ec", "issuer_name": "root-2"},
    )["data"]["issuer_id"]
    vault.write_data(f"{mount}/config/issuers", data={"default": rotated})

    result = pki.ensure_certificates(certificates(spec, requests))

    assert sorted(result.issued) == sorted(r.name for r in requests)
    assert {r.issuer_id for r in result.records} == {rotated} != {r.issuer_id for r in first.records}
    assert pki.ensure_ca(CaInput(spec=spec)).issuer_id == rotated  # the default is kept, not replaced


def test_name_outside_the_role_is_invalid_input(pki: VaultPki, core: k8s.CoreV1Api, spec: ClusterSpec) -> None:
    provision(pki, spec)
    create_namespace(core, spec)
    sneaky = CertificateRequest(name="sneaky", component=Component.ADMIN, common_name="root.evil.example")

    with pytest.raises(InvalidInput, match="not allowed by this role") as refused:
        pki.ensure_certificates(certificates(spec, [sneaky]))
    assert type(refused.value).__name__ in NON_RETRYABLE_ERROR_TYPES
    assert KubernetesSecretSink(core.api_client).read(spec.id, "sneaky") is None


def test_missing_namespace_is_a_missing_prerequisite(pki: VaultPki, spec: ClusterSpec) -> None:
    """The same type as every other missing prerequisite: permanent, naming the step that makes it."""
    provision(pki, spec)

    with pytest.raises(MissingPrerequisite, match=f"namespace {kvm_namespace(spec.id)} does not exist") as missing:
        pki.ensure_certificates(certificates(spec, certificate_requests(spec)[:1]))
    assert "foundation must be ensured first" in str(missing.value)
    assert type(missing.value).__name__ in NON_RETRYABLE_ERROR_TYPES


def test_missing_ca_and_missing_sink_are_permanent(pki: VaultPki) -> None:
    spec = small_kvm()
    with pytest.raises(MissingPrerequisite, match="no CA"):
        pki.ensure_certificates(certificates(spec))
    aws = example("aws-cluster.yaml", id=unique_id())
    pki.ensure_ca(CaInput(spec=aws))
    with pytest.raises(PermanentError, match="serves no provider 'aws'"):
        pki.ensure_certificates(certificates(aws))
    with pytest.raises(InvalidInput, match="repeated: admin"):
        pki.ensure_certificates(certificates(spec, [certificate_requests(spec)[4]] * 2))


def test_sink_does_not_take_over_a_foreign_secret(pki: VaultPki, core: k8s.CoreV1Api, spec: ClusterSpec) -> None:
    provision(pki, spec)
    namespace = create_namespace(core, spec)
    core.create_namespaced_secret(
        namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=certificate_secret("admin")), string_data={"x": "y"})
    )

    with pytest.raises(Conflict, match="not managed by tenantctl"):
        pki.ensure_certificates(certificates(spec, [certificate_requests(spec)[4]]))


def test_sink_writers_racing_on_one_secret_leave_a_consistent_pair(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    # Concurrent writers hit both 409s (AlreadyExists on create, stale resourceVersion on replace).
    provision(pki, spec)
    create_namespace(core, spec)
    sink, request = KubernetesSecretSink(core.api_client), certificate_requests(spec)[4]
    pairs = [issue_key_pair(vault, spec) for _ in range(8)]
    errors: list[BaseException] = []

    def write(pair: KeyPair) -> None:
        try:
            sink.write(spec.id, request, pair)
        except BaseException as exc:  # collected: the test thread reports it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(pair,)) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    secret, files = secret_files(core, spec, request.name)
    winner = [p for p in pairs if p.serial == (meta(secret).annotations or {})[SERIAL_ANNOTATION]]
    assert len(winner) == 1 and files["tls.crt"] == winner[0].certificate
    assert key_matches_certificate(files["tls.crt"], files["tls.key"])
    stored = sink.read(spec.id, request.name)
    assert stored is not None and stored.key_matches and "PRIVATE" not in repr(stored) + repr(winner[0])
    assert sink.list_names(spec.id) == [request.name]


def issue_key_pair(vault: hvac.Client, spec: ClusterSpec) -> KeyPair:
    issued = vault.write_data(
        f"{pki_mount(spec.id)}/issue/admin", data={"common_name": "tenantctl-admin", "ttl": "1h"}
    )["data"]
    certificate = x509.load_pem_x509_certificate(issued["certificate"].encode())
    return KeyPair(
        certificate=issued["certificate"],
        private_key=issued["private_key"],
        ca_chain="\n".join(issued["ca_chain"]),
        serial=issued["serial_number"],
        not_after=certificate.not_valid_after_utc,
        issuer_id="test",
    )


def test_heartbeats_name_each_certificate(pki: VaultPki, core: k8s.CoreV1Api, spec: ClusterSpec) -> None:
    provision(pki, spec)
    create_namespace(core, spec)
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    requests = certificate_requests(spec)

    result = env.run(pki.ensure_certificates, certificates(spec))
    again = env.run(pki.ensure_certificates, certificates(spec))

    assert len(result.issued) == len(requests) and len(again.kept) == len(requests)
    names = [r.name for r in requests]
    assert beats[: len(names)] == names and beats[len(names) + 1 : 2 * len(names) + 1] == names


# --- teardown ------------------------------------------------------------------------------------------------
def test_revoke_and_absent_leave_nothing(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    provision(pki, spec)
    create_namespace(core, spec)
    mount, ref = pki_mount(spec.id), ClusterRef(spec=spec)
    issued = pki.ensure_certificates(certificates(spec))
    count = len(issued.records)

    revoked = pki.revoke_certificates(ref)
    again = pki.revoke_certificates(ref)

    assert (revoked.revoked, revoked.already_revoked_or_expired) == (count, 0)
    assert (again.revoked, again.already_revoked_or_expired) == (0, count)
    for record in issued.records:
        assert data(vault, f"{mount}/cert/{record.serial}")["revocation_time"] > 0

    gone = pki.ensure_certificates_absent(ref)
    assert gone.count(ResourceChange.DELETED) == count
    assert core.list_namespaced_secret(kvm_namespace(spec.id)).items == []
    assert [o.change for o in pki.ensure_certificates_absent(ref).outcomes] == [ResourceChange.ABSENT]

    absent = pki.ensure_pki_absent(ref)
    assert outcome_changes(absent) == {
        **{("pki-role", r.name.value): ResourceChange.DELETED for r in role_specs(spec)},
        ("vault-policy", vault_policy_name(spec.id)): ResourceChange.DELETED,
        ("pki-mount", mount): ResourceChange.DELETED,
    }
    assert f"{mount}/" not in data(vault, "sys/mounts")
    assert vault.read(f"sys/policies/acl/{vault_policy_name(spec.id)}") is None

    twice = pki.ensure_pki_absent(ref)
    assert set(outcome_changes(twice).values()) == {ResourceChange.ABSENT}
    assert pki.revoke_certificates(ref).revoked == 0


def outcome_changes(result: EnsureResult) -> dict[tuple[str, str], ResourceChange]:
    return {(o.kind, o.name): o.change for o in result.outcomes}


def test_teardown_of_a_cluster_that_never_existed(pki: VaultPki, spec: ClusterSpec) -> None:
    ref = ClusterRef(spec=spec)
    assert pki.revoke_certificates(ref).revoked == 0
    assert set(outcome_changes(pki.ensure_pki_absent(ref)).values()) == {ResourceChange.ABSENT}
    assert set(outcome_changes(pki.ensure_certificates_absent(ref)).values()) == {ResourceChange.ABSENT}


# --- issuing side by side -----------------------------------------------------------------------------
class SinkFailingOnce(KubernetesSecretSink):
    """The host API refusing one write (a 500 while storing one key pair), then working again."""

    def __init__(self, api: k8s.ApiClient, name: str) -> None:
        super().__init__(api)
        self.failing, self.serials_refused = name, list[str]()

    def write(self, cluster_id: str, request: CertificateRequest, key_pair: KeyPair) -> str:
        if request.name == self.failing and not self.serials_refused:
            self.serials_refused.append(key_pair.serial)
            raise k8s.ApiException(status=500, reason="Internal Server Error")
        return super().write(cluster_id, request, key_pair)


def test_a_certificate_issued_but_not_stored_is_revoked_and_the_retry_converges(
    vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    api = core.api_client
    provider = KvmProvider(api)
    sink = SinkFailingOnce(api, "apiserver")
    provider.key_pairs = sink
    pki = VaultPki(vault, Providers([provider]))
    provision(pki, spec)
    create_namespace(core, spec)
    mount, requests = pki_mount(spec.id), certificate_requests(spec)

    with pytest.raises(k8s.ApiException):
        pki.ensure_certificates(certificates(spec))
    [unstored] = sink.serials_refused
    assert data(vault, f"{mount}/cert/{unstored}")["revocation_time"] > 0  # nobody holds it: revoked
    # every other certificate of the attempt ended stored (issued side by side, none left half-done)
    assert sorted(sink.list_names(spec.id)) == sorted(r.name for r in requests if r.name != "apiserver")

    again = pki.ensure_certificates(certificates(spec))
    assert again.issued == ["apiserver"] and len(again.kept) == len(requests) - 1
    assert [r.name for r in again.records] == [r.name for r in requests]  # in the requests' order
    held = {r.serial for r in again.records}
    revoked = {s for s in leaf_serials(vault, mount) if data(vault, f"{mount}/cert/{s}")["revocation_time"] > 0}
    assert revoked == {unstored} and unstored not in held


def test_a_retry_revokes_what_an_earlier_attempt_issued_and_lost(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    # Vault went down (or the worker died) after issuing and before the attempt stored the leaf:
    # the answer was lost, so the leaf is valid and in no Secret. Only a later attempt of the same
    # call may take it for its own: a first attempt, or a leaf from before the call, is left alone.
    provision(pki, spec)
    create_namespace(core, spec)
    mount, requests = pki_mount(spec.id), certificate_requests(spec)
    pki.ensure_certificates(certificates(spec))  # what the cluster holds from before the call
    before_call = datetime.now(UTC)
    apiserver = next(r for r in requests if r.name == "apiserver")
    lost = serial_hex(
        x509.load_pem_x509_certificate(
            vault.write(
                f"{mount}/issue/{apiserver.component.value}",
                common_name=apiserver.common_name,
                alt_names=",".join(apiserver.alt_names),
                ip_sans=",".join(apiserver.ip_sans),
                exclude_cn_from_sans=True,
            )["data"]["certificate"].encode()
        ).serial_number
    )

    def attempt(number: int, scheduled: datetime) -> CertificatesResult:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, attempt=number, scheduled_time=scheduled)
        return env.run(pki.ensure_certificates, certificates(spec))

    assert attempt(1, before_call).revoked_lost == []  # a first attempt has no earlier one
    assert attempt(2, before_call + timedelta(minutes=2)).revoked_lost == []  # issued before the call
    assert data(vault, f"{mount}/cert/{lost}")["revocation_time"] == 0

    retried = attempt(3, before_call - timedelta(seconds=1))

    assert retried.revoked_lost == [lost]
    assert data(vault, f"{mount}/cert/{lost}")["revocation_time"] > 0
    held = {r.serial for r in retried.records}
    assert all(data(vault, f"{mount}/cert/{s}")["revocation_time"] == 0 for s in held)  # what is stored stays valid
