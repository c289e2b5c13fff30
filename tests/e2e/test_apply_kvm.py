"""``tenantctl apply`` end to end on the real local stack (KVM): 3 -> 5 -> 2 workers, counted in the
host API (Deployments, certificate Secrets) and in OpenBao (unrevoked node leaves) before and
after; ``--dry-run``, an unchanged file and an immutable field change nothing; a version change
runs an upgrade whose replaced workers leave no Secret and no unrevoked leaf."""

from __future__ import annotations

from pathlib import Path

import hvac
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s

from models.naming import CLUSTER_LABEL, kvm_namespace
from models.pki import pki_mount
from models.spec import ClusterSpec
from tests.e2e.conftest import Stack, WorkerProcess, stack_settings, write_spec
from tests.e2e.test_create_kvm import kube
from tests.specs import example, unique_id
from worker.clients import vault_client

pytestmark = pytest.mark.stack


def counted(stack: Stack, spec: ClusterSpec) -> tuple[set[str], set[str], set[str]]:
    """Worker Deployments, node certificate Secrets, and CNs of unrevoked node leaves in Vault."""
    api = kube(stack)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    ns, selector = kvm_namespace(spec.id), f"{CLUSTER_LABEL}={spec.id}"
    deployments = {d.metadata.name for d in apps.list_namespaced_deployment(ns, label_selector=selector).items}
    secrets = {s.metadata.name for s in core.list_namespaced_secret(ns, label_selector=selector).items}
    workers = {d for d in deployments if d.startswith("worker-")}
    return workers, {s for s in secrets if s.startswith("cert-node-worker-")}, valid_worker_leaves(stack, spec)


def valid_worker_leaves(stack: Stack, spec: ClusterSpec) -> set[str]:
    """CNs (``system:node:worker-N``) of the worker leaves the cluster's mount has not revoked."""
    vault: hvac.Client = vault_client(stack_settings(stack))
    mount, valid = pki_mount(spec.id), set()
    for serial in vault.list(f"{mount}/certs")["data"]["keys"]:
        data = vault.read(f"{mount}/cert/{serial}")["data"]
        if int(data.get("revocation_time") or 0):
            continue
        names = x509.load_pem_x509_certificate(data["certificate"].encode()).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
        if names and str(names[0].value).startswith("system:node:worker-"):
            valid.add(str(names[0].value))
    return valid


def with_workers(spec: ClusterSpec, count: int) -> ClusterSpec:
    return spec.model_copy(update={"workers": spec.workers.model_copy(update={"count": count})})


async def test_apply_scales_3_5_2_and_dry_run_changes_nothing(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    spec = with_workers(example(id=unique_id("apply"), masters={"count": 1, "cpu": 2, "memory": "4Gi"}), 3)
    created = local_stack.cli("apply", "-f", str(write_spec(tmp_path, spec)), "--watch")
    assert "creating cluster" in created.stdout
    three = counted(local_stack, spec)
    assert three[0] == {"worker-0", "worker-1", "worker-2"}
    assert three[1] == {f"cert-node-worker-{i}" for i in range(3)}
    assert three[2] == {f"system:node:worker-{i}" for i in range(3)}

    unchanged = local_stack.cli("apply", "-f", str(write_spec(tmp_path, spec)))
    assert "no changes" in unchanged.stdout and counted(local_stack, spec) == three
    five = with_workers(spec, 5)
    dry = local_stack.cli("apply", "-f", str(write_spec(tmp_path, five)), "--dry-run")
    assert "workers.count: 3 -> 5" in dry.stdout and counted(local_stack, spec) == three

    local_stack.cli("apply", "-f", str(write_spec(tmp_path, five)))
    after_five = counted(local_stack, spec)
    assert after_five[0] == {f"worker-{i}" for i in range(5)}
    assert after_five[1] == {f"cert-node-worker-{i}" for i in range(5)}
    assert after_five[2] == {f"system:node:worker-{i}" for i in range(5)}

    local_stack.cli("apply", "-f", str(write_spec(tmp_path, with_workers(spec, 2))))
    after_two = counted(local_stack, spec)
    assert after_two[0] == {"worker-0", "worker-1"}  # the newest went first
    assert after_two[1] == {"cert-node-worker-0", "cert-node-worker-1"}
    assert after_two[2] == {"system:node:worker-0", "system:node:worker-1"}  # the others revoked

    refused = local_stack.cli(
        "apply", "-f", str(write_spec(tmp_path, spec.model_copy(update={"base_domain": "other.example"}))), check=False
    )
    assert refused.returncode != 0 and f"base_domain: {spec.base_domain} -> other.example" in refused.stderr
    assert counted(local_stack, spec) == after_two

    # a version change in the file runs an upgrade: the workers are replaced, nothing of the old stays valid
    newer = with_workers(spec, 2).model_copy(update={"kubernetes_version": "1.32.5"})
    upgraded = local_stack.cli("apply", "-f", str(write_spec(tmp_path, newer)), timeout=600)
    assert f"kubernetes_version: {spec.kubernetes_version} -> 1.32.5" in upgraded.stdout
    assert "upgraded" in upgraded.stdout and "1.32.5" in upgraded.stdout, upgraded.stdout
    workers, secrets, valid = counted(local_stack, spec)
    assert len(workers) == 2 and not workers & {"worker-0", "worker-1"}, workers
    assert secrets == {f"cert-node-{w}" for w in workers}  # the upgrade leak: replaced workers' Secrets gone
    assert valid == {f"system:node:{w}" for w in workers}  # and their leaves revoked
    assert "no changes" in local_stack.cli("apply", "-f", str(write_spec(tmp_path, newer))).stdout
