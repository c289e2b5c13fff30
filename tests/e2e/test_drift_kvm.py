"""Issue 12 (drift) end to end on the real local stack, through the CLI and kubectl as a user runs
them: after a create, ``kubectl delete`` of a node Deployment and of a certificate Secret is
reported by ``tenantctl reconcile --dry-run`` (which changes nothing) and restored by
``tenantctl reconcile``; a second check finds the cluster in sync and restarts nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from models.naming import kvm_namespace
from tests.e2e.conftest import Stack, WorkerProcess
from tests.specs import small_kvm, unique_id

pytestmark = pytest.mark.stack


def kubectl(stack: Stack, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(stack.state_dir / "kubeconfig"), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout


def names(stack: Stack, kind: str, namespace: str) -> set[str]:
    listed = json.loads(kubectl(stack, "get", kind, "-n", namespace, "-o", "json"))
    return {item["metadata"]["name"] for item in listed["items"]}


async def test_deleted_deployment_and_secret_are_reported_then_restored(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    spec = small_kvm(id=unique_id("drift"), drift_check={"paused": True})  # only the checks asked for here
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))
    namespace = kvm_namespace(spec.id)
    local_stack.cli("create", "-f", str(spec_file), "--watch")

    in_sync = local_stack.cli("reconcile", spec.id).stdout
    assert "in sync: nothing differs" in in_sync, in_sync

    kubectl(local_stack, "delete", "deployment", "worker-0", "-n", namespace)
    kubectl(local_stack, "delete", "secret", "cert-apiserver", "-n", namespace)
    assert "worker-0" not in names(local_stack, "deployments", namespace)

    dry = local_stack.cli("reconcile", spec.id, "--dry-run").stdout
    assert "missing  deployment/worker-0" in dry and f"missing  secret {namespace}/cert-apiserver" in dry, dry
    assert "dry run: nothing changed" in dry
    assert "worker-0" not in names(local_stack, "deployments", namespace)
    assert "cert-apiserver" not in names(local_stack, "secrets", namespace)

    started = time.monotonic()
    repaired = local_stack.cli("reconcile", spec.id, timeout=600).stdout
    repair_seconds = time.monotonic() - started
    assert "repaired:" in repaired and "node worker-0" in repaired, repaired
    assert "worker-0" in names(local_stack, "deployments", namespace)
    assert "cert-apiserver" in names(local_stack, "secrets", namespace)

    started = time.monotonic()
    again = local_stack.cli("reconcile", spec.id).stdout
    check_seconds = time.monotonic() - started
    assert "in sync: nothing differs; nothing changed, no node restarted" in again, again
    status = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)
    assert status["last_check"]["outcome"] == "in sync"
    local_stack.cli("delete", spec.id, timeout=600)
    print(f"\nKVM drift e2e: repair {repair_seconds:.1f}s, in-sync check {check_seconds:.1f}s (CLI round trip)")  # noqa: T201
