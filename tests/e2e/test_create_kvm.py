"""Issue 4 end to end: ``tenantctl create -f ... --watch`` on the real local stack brings up a
KVM tenant cluster in the host API and in OpenBao, durably, with no private key in history."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.client import Client

from activities.kvm.manifests import cloud_config_name
from models.naming import CLUSTER_LABEL, kvm_namespace
from models.pki import Component, certificate_requests
from models.spec import ClusterSpec
from tests.e2e.conftest import (
    Stack,
    WorkerProcess,
    kill_worker_at_step,
    root_settings,
    slow_host_api,
    stack_settings,
    write_spec,
)
from tests.history_checks import assert_no_private_key
from tests.specs import example, unique_id
from worker.clients import connect_temporal, vault_client

pytestmark = pytest.mark.stack


def kube(stack: Stack) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(stack.state_dir / "kubeconfig"), client_configuration=configuration)
    return k8s.ApiClient(configuration)


async def histories_of(client: Client, cluster_id: str) -> dict[str, Any]:
    found = {}
    async for execution in client.list_workflows(f'ClusterId = "{cluster_id}"'):
        found[execution.id] = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
    return found


def check_certificate(
    pem: str, ca: x509.Certificate, spec: ClusterSpec, cn: str, org: str | None, sans: list[str]
) -> None:
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ([org] if org else [])
    assert cert.issuer == ca.subject
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(lifetime - spec.certificates.ttl) <= dt.timedelta(minutes=1), lifetime
    if sans:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = set(ext.get_values_for_type(x509.DNSName)) | {str(i) for i in ext.get_values_for_type(x509.IPAddress)}
        assert set(sans) <= names, (cn, names)


async def test_create_via_cli_reaches_ready(local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path) -> None:
    spec = example(id=unique_id("e2e"))
    started = time.monotonic()
    result = local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch")
    wall = time.monotonic() - started
    assert "Ready" in result.stdout
    assert f"workflows/cluster%2F{spec.id}" in result.stdout  # the Temporal UI link
    for step in ("pki", "foundation", "certificates", "endpoint", "nodes", "ready", "schedule"):
        assert f"create: {step}" in result.stdout

    settings = stack_settings(local_stack)
    # --- Vault: one mount with one CA, a role per component, the cluster's policy -----------------
    vault: hvac.Client = vault_client(root_settings(local_stack))  # the policy listing needs root
    mount = f"pki/{spec.id}"
    assert f"{mount}/" in vault.sys.list_mounted_secrets_engines()["data"]
    issuers = vault.secrets.pki.list_issuers(mount_point=mount)["data"]["keys"]
    assert len(issuers) == 1
    ca = x509.load_pem_x509_certificate(vault.secrets.pki.read_ca_certificate(mount_point=mount).encode())
    roles = set(vault.secrets.pki.list_roles(mount_point=mount)["data"]["keys"])
    assert roles == {c.value for c in Component}
    assert f"tenantctl-{spec.id}" in vault.sys.list_acl_policies()["data"]["keys"]

    # --- host API: every object, labelled; every certificate right -------------------------------
    api = kube(local_stack)
    core, apps, net = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.NetworkingV1Api(api)
    ns = kvm_namespace(spec.id)
    selector = f"{CLUSTER_LABEL}={spec.id}"
    assert core.read_namespace(ns).metadata.labels[CLUSTER_LABEL] == spec.id
    deployments = {d.metadata.name for d in apps.list_namespaced_deployment(ns, label_selector=selector).items}
    assert deployments == set(spec.node_names())
    assert {s.metadata.name for s in core.list_namespaced_service(ns, label_selector=selector).items} == {"api", "etcd"}
    ingress = net.read_namespaced_ingress("api", ns)
    assert ingress.spec.rules[0].host == spec.api_domain
    assert net.list_namespaced_network_policy(ns, label_selector=selector).items
    configmaps = {c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector=selector).items}
    assert {
        cloud_config_name("master", spec.kubernetes_version),
        cloud_config_name("worker", spec.kubernetes_version),
    } <= configmaps
    secrets = {s.metadata.name: s for s in core.list_namespaced_secret(ns, label_selector=selector).items}
    for request in certificate_requests(spec):
        secret = secrets[f"cert-{request.name}"]
        pem = base64.b64decode(secret.data["tls.crt"]).decode()
        org = {Component.NODE: "system:nodes", Component.ADMIN: "system:masters"}.get(request.component)
        check_certificate(pem, ca, spec, request.common_name, org, [*request.alt_names, *request.ip_sans])
    apiserver_sans = [
        spec.api_domain,
        "kubernetes",
        "kubernetes.default.svc",
        str(ipaddress.ip_network(spec.networking.service_cidr)[1]),
    ]
    check_certificate(
        base64.b64decode(secrets["cert-apiserver"].data["tls.crt"]).decode(),
        ca,
        spec,
        "kube-apiserver",
        None,
        apiserver_sans,
    )

    # --- status and list through the CLI ------------------------------------------------------------
    status = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)
    assert status["phase"] == "Ready"
    assert status["earliest_expiry"] and status["next_rotation"]
    assert len(status["certificates"]) == len(certificate_requests(spec))
    assert spec.id in local_stack.cli("list").stdout

    # --- Temporal: search attributes find every workflow, no private key in any history -----------
    client = await connect_temporal(settings)
    histories = await histories_of(client, spec.id)
    assert f"cluster/{spec.id}" in histories and f"cluster/{spec.id}/create/1" in histories
    for history in histories.values():
        assert_no_private_key(history)
    events = {wid: len(h.events) for wid, h in histories.items()}
    print(f"\ncreate of a 3+3 KVM cluster: wall {wall:.1f}s; history events {events}")  # noqa: T201


async def test_invalid_spec_and_duplicate_id_create_nothing(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    data = example(id=unique_id("bad")).model_dump(mode="json", exclude_none=True)
    data["masters"]["count"] = 2
    data["colour"] = "blue"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    refused = local_stack.cli("create", "-f", str(bad), check=False)
    assert refused.returncode == 2
    assert "masters.count" in refused.stderr and "colour: unknown field" in refused.stderr

    spec = example(
        id=unique_id("dup"),
        masters={"count": 1, "cpu": 2, "memory": "4Gi"},
        workers={"count": 1, "cpu": 2, "memory": "4Gi"},
    )
    path = write_spec(tmp_path, spec)
    local_stack.cli("create", "-f", str(path), "--watch")
    client = await connect_temporal(stack_settings(local_stack))
    before = len((await client.get_workflow_handle(f"cluster/{spec.id}").fetch_history()).events)
    duplicate = local_stack.cli("create", "-f", str(path), check=False)
    assert duplicate.returncode == 1
    assert f"cluster {spec.id} already exists" in duplicate.stderr
    after = len((await client.get_workflow_handle(f"cluster/{spec.id}").fetch_history()).events)
    assert after == before  # the running cluster never heard of the second request
    async for execution in client.list_workflows(f'ClusterId = "{bad.stem}"'):
        raise AssertionError(f"an invalid spec started {execution.id}")


async def test_worker_killed_mid_provisioning_finishes_without_duplicates(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    spec = example(id=unique_id("kill"))
    with slow_host_api(local_stack, 400):
        local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)))
        await kill_worker_at_step(local_stack, worker_process, spec.id, "nodes")
    worker_process.start()
    local_stack.cli("watch", spec.id, timeout=300)

    status = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)
    assert status["phase"] == "Ready"
    vault = vault_client(stack_settings(local_stack))
    assert len(vault.secrets.pki.list_issuers(mount_point=f"pki/{spec.id}")["data"]["keys"]) == 1  # no second CA
    api = kube(local_stack)
    ns = kvm_namespace(spec.id)
    names = [d.metadata.name for d in k8s.AppsV1Api(api).list_namespaced_deployment(ns).items]
    assert sorted(names) == sorted(spec.node_names())  # one Deployment per node, no duplicate
    secrets = [s.metadata.name for s in k8s.CoreV1Api(api).list_namespaced_secret(ns).items]
    assert len(secrets) == len(set(secrets)) == len(certificate_requests(spec))
    assert worker_process.starts == 2
