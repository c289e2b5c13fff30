"""Issue 5 end to end on the real local stack, through the CLI as a user runs it: a 3-master/3-worker
KVM cluster's schedule, an idle and a forced rotation (timed), a CA rotation, and a user kubeconfig.

The worker is ``python -m worker`` with the stack's settings (production wiring, including the KVM
provider's 2 s poll), so the timings are those of the local stack.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.kvm.key_pairs import TRUST_BUNDLE_SECRET
from activities.pki.vault import verifies
from models.naming import kvm_namespace
from models.pki import certificate_requests
from tests.e2e.conftest import Stack, WorkerProcess
from tests.history_checks import assert_no_private_key
from tests.specs import example, unique_id

pytestmark = pytest.mark.stack


def status_of(stack: Stack, cluster_id: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(stack.cli("status", cluster_id, "-o", "json").stdout)
    return result


def wait_for_schedule(stack: Stack, cluster_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = status_of(stack, cluster_id)
        if status["next_rotation"]:
            return status
        time.sleep(0.5)
    raise AssertionError(f"no rotation schedule for {cluster_id} after {timeout}s")


def stored_pairs(stack: Stack, cluster_id: str) -> dict[str, tuple[x509.Certificate | None, list[x509.Certificate]]]:
    """Every Secret of the cluster: its leaf (None for the trust bundle) and the CAs it trusts."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(stack.state_dir / "kubeconfig"), client_configuration=configuration
    )
    with k8s.ApiClient(configuration) as api:
        secrets = k8s.CoreV1Api(api).list_namespaced_secret(kvm_namespace(cluster_id)).items
    pairs: dict[str, tuple[x509.Certificate | None, list[x509.Certificate]]] = {}
    for secret in secrets:
        name = secret.metadata.name if secret.metadata and secret.metadata.name else ""
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        leaf = x509.load_pem_x509_certificate(data["tls.crt"]) if "tls.crt" in data else None
        pairs[name] = (leaf, x509.load_pem_x509_certificates(data["ca.crt"]))
    return pairs


async def test_rotations_of_a_three_plus_three_cluster_through_the_cli(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    spec = example(id=unique_id("rot"))
    assert (spec.masters.count, spec.workers.count) == (3, 3)
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))
    certificates = len(certificate_requests(spec))

    local_stack.cli("create", "-f", str(spec_file), "--watch")
    created = wait_for_schedule(local_stack, spec.id)

    shown = json.loads(local_stack.cli("schedule", "show", spec.id, "-o", "json").stdout)
    assert (shown["interval"], shown["paused"], shown["overlap"], shown["catchup_window"]) == (
        "1d",
        False,
        "skip",
        "1d",
    )

    idle = local_stack.cli("rotate", spec.id).stdout
    assert f"0 of {certificates} certificates re-issued" in idle and "none (nothing was due)" in idle

    started = time.monotonic()
    forced = local_stack.cli("rotate", spec.id, "--force").stdout
    forced_seconds = time.monotonic() - started
    assert f"{certificates} of {certificates} certificates re-issued" in forced
    assert "master-0, master-1, master-2, worker-0, worker-1, worker-2" in forced
    after_forced = status_of(local_stack, spec.id)
    assert after_forced["earliest_expiry"] > created["earliest_expiry"]  # type: ignore[operator]

    local_stack.cli("schedule", "pause", spec.id, "--reason", "e2e")
    assert status_of(local_stack, spec.id)["next_rotation"] is None
    assert json.loads(local_stack.cli("schedule", "show", spec.id, "-o", "json").stdout)["paused"] is True
    local_stack.cli("schedule", "resume", spec.id)
    assert status_of(local_stack, spec.id)["next_rotation"] is not None

    started = time.monotonic()
    rotated_ca = local_stack.cli("rotate", spec.id, "--ca", "--watch", timeout=600).stdout
    ca_seconds = time.monotonic() - started
    for phase in ("new-ca", "publish-bundle", "roll-trust", "reissue", "roll-leaves", "drop-old-ca", "roll-final"):
        assert f"rotate-ca: {phase}" in rotated_ca
    after_ca = status_of(local_stack, spec.id)
    new_issuer = after_ca["ca_issuer_id"]
    assert new_issuer != created["ca_issuer_id"]
    pairs = stored_pairs(local_stack, spec.id)
    bundle = pairs.pop(TRUST_BUNDLE_SECRET)[1]
    assert len(bundle) == 1 and len(pairs) == certificates
    for leaf, trust in pairs.values():
        assert leaf is not None and trust == bundle and verifies(leaf, bundle)

    kubeconfig = tmp_path / "alice.kubeconfig"
    local_stack.cli("kubeconfig", spec.id, "--user", "alice", "--group", "devs", "-o", str(kubeconfig))
    assert stat.S_IMODE(os.stat(kubeconfig).st_mode) == 0o600
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    certificate = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    key = serialization.load_pem_private_key(base64.b64decode(user["client-key-data"]), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "devs"
    assert verifies(certificate, bundle)

    client = await Client.connect(local_stack.env["TENANTCTL_TEMPORAL_ADDRESS"], data_converter=pydantic_data_converter)
    ids = [w.id async for w in client.list_workflows(f'ClusterId = "{spec.id}"')]
    assert f"cluster/{spec.id}" in ids
    for workflow_id in ids:
        assert_no_private_key(await client.get_workflow_handle(workflow_id).fetch_history())
    print(  # noqa: T201
        f"\nlocal stack, 3+3 cluster: 'tenantctl rotate --force' {forced_seconds:.1f}s "
        f"({certificates} certificates, 6 node restarts); 'tenantctl rotate --ca' {ca_seconds:.1f}s"
    )
