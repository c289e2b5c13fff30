"""CA rotation and user-certificate activities against a real OpenBao dev server and the host API emulator.

Each activity is run twice and must act once; refusals must leave everything as it was.
"""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s

from activities.kvm.key_pairs import TRUST_BUNDLE_SECRET, KubernetesSecretSink
from activities.pki.vault import VaultPki, verifies
from models.errors import InvalidInput, MissingPrerequisite
from models.naming import kvm_namespace
from models.pki import (
    NextIssuerInput,
    SetDefaultIssuerInput,
    SignUserCsrInput,
    TrustBundleInput,
    pki_mount,
)
from models.provider import ClusterRef, ResourceChange
from models.spec import ClusterSpec
from tests.activities.test_vault_pki import certificates, create_namespace, data, listed, provision, secret_files
from tests.servers import OpenBao
from tests.specs import small_kvm


@pytest.fixture
def issued(pki: VaultPki, core: k8s.CoreV1Api, spec: ClusterSpec) -> dict[str, str]:
    """A provisioned cluster with every leaf stored; name -> serial."""
    provision(pki, spec)
    create_namespace(core, spec)
    return {r.name: r.serial for r in pki.ensure_certificates(certificates(spec)).records}


def ca_files(core: k8s.CoreV1Api, spec: ClusterSpec) -> dict[str, list[x509.Certificate]]:
    """Every key-pair Secret's ca.crt, parsed."""
    names = KubernetesSecretSink(core.api_client).list_names(spec.id)
    return {n: x509.load_pem_x509_certificates(secret_files(core, spec, n)[1]["ca.crt"].encode()) for n in names}


def bundle_of(core: k8s.CoreV1Api, spec: ClusterSpec) -> list[x509.Certificate]:
    secret = core.read_namespaced_secret(TRUST_BUNDLE_SECRET, kvm_namespace(spec.id))
    return x509.load_pem_x509_certificates(base64.b64decode((secret.data or {})["ca.crt"]))


def issuer_certificate(vault: hvac.Client, spec: ClusterSpec, issuer_id: str) -> x509.Certificate:
    pem = data(vault, f"{pki_mount(spec.id)}/issuer/{issuer_id}")["certificate"]
    return x509.load_pem_x509_certificate(pem.encode())


# --- the next CA ------------------------------------------------------------------------------------
def test_next_issuer_is_made_once_and_not_default(pki: VaultPki, vault: hvac.Client, spec: ClusterSpec) -> None:
    provision(pki, spec)
    mount = pki_mount(spec.id)
    old = data(vault, f"{mount}/config/issuers")["default"]

    first = pki.ensure_next_issuer(NextIssuerInput(spec=spec, after_issuer_id=old))
    again = pki.ensure_next_issuer(NextIssuerInput(spec=spec))  # empty: after the current default

    assert first.created and not again.created
    assert first.issuer_id == again.issuer_id != old
    assert (first.name, first.previous_issuer_id, first.is_default) == ("root-2", old, False)
    assert first.common_name == f"{spec.id} root CA (root-2)" and first.published_trust == []
    assert sorted(listed(vault, f"{mount}/issuers")) == sorted([old, first.issuer_id])
    assert data(vault, f"{mount}/config/issuers")["default"] == old  # OpenBao keeps the default
    ca = issuer_certificate(vault, spec, first.issuer_id)
    assert ca.subject == ca.issuer and first.not_after == ca.not_valid_after_utc

    with pytest.raises(InvalidInput, match="not an issuer"):
        pki.ensure_next_issuer(NextIssuerInput(spec=spec, after_issuer_id="00000000-0000-0000-0000-000000000000"))


def test_next_issuer_racing_itself_makes_one(openbao: OpenBao, pki: VaultPki, spec: ClusterSpec) -> None:
    provision(pki, spec)
    results: list[Any] = []

    def attempt() -> None:
        racer = VaultPki(hvac.Client(url=openbao.addr, token=openbao.token), pki.providers)
        results.append(racer.ensure_next_issuer(NextIssuerInput(spec=spec)))

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6 and len({r.issuer_id for r in results}) == 1
    assert len(listed(hvac.Client(url=openbao.addr, token=openbao.token), f"{pki_mount(spec.id)}/issuers")) == 2


def test_set_default_issuer_twice_is_once(pki: VaultPki, vault: hvac.Client, spec: ClusterSpec) -> None:
    provision(pki, spec)
    new = pki.ensure_next_issuer(NextIssuerInput(spec=spec))
    mount = pki_mount(spec.id)

    first = pki.set_default_issuer(SetDefaultIssuerInput(spec=spec, issuer_id=new.issuer_id))
    again = pki.set_default_issuer(SetDefaultIssuerInput(spec=spec, issuer_id=new.issuer_id))

    assert [o.change for o in first.outcomes] == [ResourceChange.UPDATED]
    assert [o.change for o in again.outcomes] == [ResourceChange.UNCHANGED]
    assert data(vault, f"{mount}/config/issuers")["default"] == new.issuer_id
    assert pki.ensure_next_issuer(NextIssuerInput(spec=spec, after_issuer_id=new.previous_issuer_id)).is_default
    with pytest.raises(InvalidInput, match="not an issuer"):
        pki.set_default_issuer(SetDefaultIssuerInput(spec=spec, issuer_id="11111111-1111-1111-1111-111111111111"))
    assert data(vault, f"{mount}/config/issuers")["default"] == new.issuer_id


# --- the trust bundle -------------------------------------------------------------------------------
def test_ca_rotation_phases_never_store_a_leaf_its_peers_cannot_verify(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec, issued: dict[str, str]
) -> None:
    sink = KubernetesSecretSink(core.api_client)
    new = pki.ensure_next_issuer(NextIssuerInput(spec=spec))
    old_id, new_id = new.previous_issuer_id, new.issuer_id
    old_ca, new_ca = issuer_certificate(vault, spec, old_id), issuer_certificate(vault, spec, new_id)
    keys_before = {n: secret_files(core, spec, n)[1]["tls.key"] for n in issued}

    # publish both: every consumer's ca.crt and the bundle Secret hold old + new; keys untouched
    both = pki.publish_trust_bundle(TrustBundleInput(spec=spec, issuer_ids=[old_id, new_id]))
    both_again = pki.publish_trust_bundle(TrustBundleInput(spec=spec, issuer_ids=[old_id, new_id]))
    assert len(both.updated) == len(issued) + 1 and both.leaves_checked == len(issued)
    assert both_again.updated == [] and both_again.unchanged == len(issued) + 1
    assert set(map(tuple, ca_files(core, spec).values())) == {(old_ca, new_ca)}
    assert bundle_of(core, spec) == [old_ca, new_ca]
    assert {n: secret_files(core, spec, n)[1]["tls.key"] for n in issued} == keys_before
    assert all(s.key_matches for s in (sink.read(spec.id, n) for n in issued) if s is not None)
    assert pki.ensure_next_issuer(NextIssuerInput(spec=spec)).published_trust == [old_id, new_id]

    # dropping the old CA while its leaves are stored is refused, and changes nothing
    with pytest.raises(MissingPrerequisite, match=f"would not verify {len(issued)} stored certificates"):
        pki.publish_trust_bundle(TrustBundleInput(spec=spec, issuer_ids=[new_id]))
    assert bundle_of(core, spec) == [old_ca, new_ca]

    # the new CA issues: every leaf re-issued once, each stored with the dual bundle as its trust
    pki.set_default_issuer(SetDefaultIssuerInput(spec=spec, issuer_id=new_id))
    reissued = pki.ensure_certificates(certificates(spec))
    assert sorted(reissued.issued) == sorted(issued) and {r.issuer_id for r in reissued.records} == {new_id}
    assert pki.ensure_certificates(certificates(spec)).issued == []
    assert set(map(tuple, ca_files(core, spec).values())) == {(old_ca, new_ca)}

    # now the old CA can go
    dropped = pki.publish_trust_bundle(TrustBundleInput(spec=spec, issuer_ids=[new_id]))
    assert len(dropped.updated) == len(issued) + 1
    assert bundle_of(core, spec) == [new_ca]
    for name, cas in ca_files(core, spec).items():
        leaf = x509.load_pem_x509_certificate(secret_files(core, spec, name)[1]["tls.crt"].encode())
        assert cas == [new_ca] and verifies(leaf, cas) and not verifies(leaf, [old_ca])
    assert pki.ensure_next_issuer(NextIssuerInput(spec=spec, after_issuer_id=old_id)).published_trust == [new_id]


def test_a_default_issuer_outside_the_bundle_issues_nothing(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec, issued: dict[str, str]
) -> None:
    """Someone switches the default issuer by hand after a bundle is published: refused before issuing."""
    mount = pki_mount(spec.id)
    new = pki.ensure_next_issuer(NextIssuerInput(spec=spec))
    pki.publish_trust_bundle(TrustBundleInput(spec=spec, issuer_ids=[new.previous_issuer_id]))
    vault.write_data(f"{mount}/config/issuers", data={"default": new.issuer_id})
    serials_in_vault = set(listed(vault, f"{mount}/certs"))

    with pytest.raises(MissingPrerequisite, match="not in the published trust bundle"):
        pki.ensure_certificates(certificates(spec, force=True))
    assert set(listed(vault, f"{mount}/certs")) == serials_in_vault  # nothing was issued
    with pytest.raises(MissingPrerequisite, match="not in the published trust bundle"):
        pki.sign_user_csr(SignUserCsrInput(spec=spec, csr_pem=csr("eve", ["devs"])[1], ttl=timedelta(hours=1)))


def test_key_pairs_and_the_bundle_go_together(
    pki: VaultPki, core: k8s.CoreV1Api, spec: ClusterSpec, issued: dict[str, str]
) -> None:
    new = pki.ensure_next_issuer(NextIssuerInput(spec=spec))
    pki.publish_trust_bundle(TrustBundleInput(spec=spec, issuer_ids=[new.previous_issuer_id, new.issuer_id]))

    gone = pki.ensure_certificates_absent(ClusterRef(spec=spec))
    again = pki.ensure_certificates_absent(ClusterRef(spec=spec))

    assert gone.count(ResourceChange.DELETED) == len(issued) + 1
    assert f"secret {kvm_namespace(spec.id)}/{TRUST_BUNDLE_SECRET}" in {o.name for o in gone.outcomes}
    assert [o.change for o in again.outcomes] == [ResourceChange.ABSENT]
    assert core.list_namespaced_secret(kvm_namespace(spec.id)).items == []
    assert KubernetesSecretSink(core.api_client).set_ca_chain(spec.id, "admin", "x") is False  # nothing to update


# --- user certificates ------------------------------------------------------------------------------
def csr(user: str, groups: list[str], **extensions: Any) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, user)] if user else []
    subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if "san" in extensions:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(extensions["san"])]), critical=False)
    if extensions.get("ca"):
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return key, builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def test_user_csr_is_signed_as_asked_and_capped(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    provision(pki, spec)
    create_namespace(core, spec)
    key, request = csr("alice", ["system:masters", "devs"])

    signed = pki.sign_user_csr(SignUserCsrInput(spec=spec, csr_pem=request, ttl=timedelta(hours=8)))
    again = pki.sign_user_csr(SignUserCsrInput(spec=spec, csr_pem=request, ttl=timedelta(days=30)))

    certificate = x509.load_pem_x509_certificate(signed.certificate_pem.encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert sorted(signed.groups) == ["devs", "system:masters"] and signed.common_name == "alice"
    assert list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_cert_sign
    with pytest.raises(x509.ExtensionNotFound):
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    lifetime = certificate.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(hours=7, minutes=58) < lifetime <= timedelta(hours=8) and not signed.ttl_capped
    assert verifies(certificate, x509.load_pem_x509_certificates(signed.ca_bundle_pem.encode()))
    # the second request asked for 30 days: capped at the cluster's leaf TTL
    assert again.ttl_capped and again.serial != signed.serial
    capped = x509.load_pem_x509_certificate(again.certificate_pem.encode())
    assert capped.not_valid_after_utc - datetime.now(UTC) <= spec.certificates.ttl
    # stored in Vault, so teardown revokes it like every leaf
    assert signed.serial in listed(vault, f"{pki_mount(spec.id)}/certs")
    assert "PRIVATE" not in signed.model_dump_json()


@pytest.mark.parametrize(
    ("request_pem", "problem"),
    [
        (csr("alice", ["devs"], san="api.evil.example")[1], "subject alternative names"),
        (csr("alice", ["devs"], ca=True)[1], "cannot be a CA"),
        (csr("", ["devs"])[1], "common name"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n-----END CERTIFICATE REQUEST-----\n", "not a PEM"),
    ],
    ids=["san", "ca", "no-cn", "garbage"],
)
def test_user_csr_that_asks_for_more_is_refused(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec, request_pem: str, problem: str
) -> None:
    provision(pki, spec)
    create_namespace(core, spec)
    before = set(listed(vault, f"{pki_mount(spec.id)}/certs"))
    with pytest.raises(InvalidInput, match=problem):
        pki.sign_user_csr(SignUserCsrInput(spec=spec, csr_pem=request_pem, ttl=timedelta(hours=1)))
    assert set(listed(vault, f"{pki_mount(spec.id)}/certs")) == before


def test_user_csr_needs_a_ca(pki: VaultPki) -> None:
    with pytest.raises(MissingPrerequisite, match="no CA"):
        pki.sign_user_csr(SignUserCsrInput(spec=small_kvm(), csr_pem=csr("a", ["b"])[1], ttl=timedelta(hours=1)))


def test_a_csr_whose_signature_does_not_match_is_refused(pki: VaultPki, core: k8s.CoreV1Api, spec: ClusterSpec) -> None:
    """Proof of possession: a CSR altered after signing (here one bit of the signature) is not signed."""
    provision(pki, spec)
    create_namespace(core, spec)
    der = x509.load_pem_x509_csr(csr("alice", ["devs"])[1].encode()).public_bytes(serialization.Encoding.DER)
    tampered = der[:-1] + bytes([der[-1] ^ 0x01])  # the last byte of the signature's s value
    pem = x509.load_der_x509_csr(tampered).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(InvalidInput, match="signature does not match"):
        pki.sign_user_csr(SignUserCsrInput(spec=spec, csr_pem=pem, ttl=timedelta(hours=1)))
