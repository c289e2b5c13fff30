"""One KVM cluster's whole life through the worker's activity classes, for the deploy tests.

It makes every kind of call the worker makes to the host API and to Vault for a KVM cluster:
create (PKI, foundation, certificates, endpoint, nodes), read (waits, listings, the admin key pair
the tenant API client loads), update (drift repaired, a node restarted, a node upgraded, a CA
rotation with its trust bundle, a user certificate signed) and delete (teardown, reverse order).
The RBAC test runs it through a recording proxy; the Vault policy test runs it with a token of
the worker's policy.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, NetworkingV1Api
from temporalio.testing import ActivityEnvironment

from activities.kvm import manifests as m
from activities.kvm.provider import KvmProvider
from activities.pki.vault import VaultPki
from activities.tenant.clusters import admin_certificate_factory
from models.naming import kvm_namespace
from models.pki import (
    CaInput,
    EnsureCertificatesInput,
    NextIssuerInput,
    SetDefaultIssuerInput,
    SignUserCsrInput,
    TrustBundleInput,
    certificate_requests,
)
from models.provider import ClusterRef, NodeRef, ResourceChange, WaitNodesInput
from models.spec import ClusterSpec


def _node(spec: ClusterSpec, node: str, version: str | None = None, token: str = "") -> NodeRef:
    return NodeRef(spec=spec, node=node, kubernetes_version=version or spec.kubernetes_version, restart_token=token)


def _wait(spec: ClusterSpec, version: str) -> WaitNodesInput:
    return WaitNodesInput(spec=spec, nodes=spec.node_names(), timeout=timedelta(seconds=30), kubernetes_version=version)


def _user_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "alice"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devs")]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _tamper(api: ApiClient, spec: ClusterSpec) -> None:
    """Someone edits what tenantctl owns: one change per kind, by merge patch."""
    core, apps, net, ns = CoreV1Api(api), AppsV1Api(api), NetworkingV1Api(api), kvm_namespace(spec.id)
    core.patch_namespace(ns, {"metadata": {"labels": {m.OWNER_LABEL: "someone-else"}}})
    net.patch_namespaced_network_policy(m.NETWORK_POLICY, ns, {"spec": {"podSelector": {"matchLabels": {"x": "y"}}}})
    core.patch_namespaced_service_account(m.SERVICE_ACCOUNT, ns, {"automountServiceAccountToken": True})
    core.patch_namespaced_config_map(m.CLUSTER_CONFIGMAP, ns, {"data": {"edited": "by hand"}})
    core.patch_namespaced_service(m.API_SERVICE, ns, {"spec": {"selector": {"x": "y"}}})
    net.patch_namespaced_ingress(
        m.API_INGRESS, ns, {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/ssl-passthrough": "false"}}}
    )
    apps.patch_namespaced_deployment("worker-0", ns, {"spec": {"replicas": 0}})


def kvm_lifecycle(
    env: ActivityEnvironment,
    pki: VaultPki,
    provider: KvmProvider,
    core: CoreV1Api,
    tamper: ApiClient,
    spec: ClusterSpec,
    upgrade_to: str,
) -> dict[str, Any]:
    """Create, operate and delete ``spec``; returns a few facts for the caller to assert on.

    ``tamper`` is the test's own client (not the worker's): it makes the drift the worker repairs.
    """
    ref = ClusterRef(spec=spec)
    facts: dict[str, Any] = {}

    # --- create ----------------------------------------------------------------------------------
    ca = env.run(pki.ensure_ca, CaInput(spec=spec))
    env.run(pki.ensure_roles, ref)
    env.run(pki.ensure_policy, ref)
    env.run(provider.ensure_foundation, ref)
    certificates = EnsureCertificatesInput(
        spec=spec, requests=certificate_requests(spec), renew_before=spec.certificates.renew_before
    )
    issued = env.run(pki.ensure_certificates, certificates)
    facts["issued"] = len(issued.records)
    env.run(pki.publish_trust_bundle, TrustBundleInput(spec=spec, issuer_ids=[ca.issuer_id]))
    env.run(provider.ensure_endpoint, ref)
    for node in spec.node_names():
        env.run(provider.ensure_node, _node(spec, node))
    facts["ready"] = [n.name for n in env.run(provider.wait_nodes_ready, _wait(spec, spec.kubernetes_version)).nodes]

    # --- read and update -------------------------------------------------------------------------
    admin_certificate_factory(provider.tenant_admin_credentials, lambda s: f"https://api.{s.id}.{s.base_domain}")(
        spec
    ).close()
    env.run(provider.list_nodes, ref)
    env.run(provider.list_resources, ref)
    # drift on every kind the provider owns; the ensure_* steps repair it
    _tamper(tamper, spec)
    repaired = [
        *env.run(provider.ensure_foundation, ref).outcomes,
        *env.run(provider.ensure_endpoint, ref).outcomes,
        *env.run(provider.ensure_node, _node(spec, "worker-0")).outcomes,
    ]
    facts["repaired"] = sorted(o.kind for o in repaired if o.change is ResourceChange.UPDATED)
    env.run(provider.restart_node, _node(spec, "master-0", token="rotation-1"))
    env.run(pki.ensure_certificates, certificates.model_copy(update={"force": True}))
    for node in spec.node_names():
        env.run(provider.ensure_node, _node(spec, node, version=upgrade_to))
    env.run(provider.wait_nodes_ready, _wait(spec, upgrade_to))
    upgraded = spec.model_copy(update={"kubernetes_version": upgrade_to})
    upgraded_ref = ClusterRef(spec=upgraded)
    # CA rotation: a second root, trusted first, then made the default, leaves re-issued from it
    nxt = env.run(pki.ensure_next_issuer, NextIssuerInput(spec=upgraded, after_issuer_id=ca.issuer_id))
    env.run(pki.publish_trust_bundle, TrustBundleInput(spec=upgraded, issuer_ids=[ca.issuer_id, nxt.issuer_id]))
    env.run(pki.set_default_issuer, SetDefaultIssuerInput(spec=upgraded, issuer_id=nxt.issuer_id))
    env.run(pki.ensure_certificates, certificates.model_copy(update={"spec": upgraded}))
    env.run(pki.publish_trust_bundle, TrustBundleInput(spec=upgraded, issuer_ids=[nxt.issuer_id]))
    signed = env.run(pki.sign_user_csr, SignUserCsrInput(spec=upgraded, csr_pem=_user_csr(), ttl=timedelta(hours=1)))
    facts["user_groups"] = signed.groups

    # --- delete (the teardown's order) ----------------------------------------------------------
    for node in upgraded.node_names():
        env.run(provider.ensure_node_absent, _node(upgraded, node))
    env.run(provider.ensure_endpoint_absent, upgraded_ref)
    facts["revoked"] = env.run(pki.revoke_certificates, upgraded_ref).revoked
    env.run(pki.ensure_certificates_absent, upgraded_ref)
    env.run(provider.ensure_foundation_absent, upgraded_ref)
    env.run(pki.ensure_pki_absent, upgraded_ref)
    facts["left"] = env.run(provider.list_resources, upgraded_ref)
    return facts
