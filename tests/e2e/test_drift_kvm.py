"""Issue 12 (drift) end to end on the real local stack, through the CLI and kubectl as a user runs
them: after a create, ``kubectl delete`` of a node Deployment and of a certificate Secret is
reported by ``tenantctl reconcile --dry-run`` (which changes nothing) and restored by
``tenantctl reconcile``; a second check finds the cluster in sync and restarts nothing. Then a
deleted Vault role and rotation schedule, an extra labelled object, and the periodic check."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import hvac
import pytest
import yaml
from kubernetes import client as k8s
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from activities.providers.key_pairs import CERTIFICATE_LABEL
from models.naming import CLUSTER_LABEL, kvm_namespace, rotation_schedule_id
from models.pki import pki_mount
from starter.clusters import get_status
from tests.e2e.conftest import Stack, WorkerProcess, root_settings, stack_settings
from tests.e2e.test_create_kvm import kube
from tests.specs import small_kvm, unique_id
from worker.clients import connect_temporal, vault_client

pytestmark = pytest.mark.stack

ROLE = "node"


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


async def test_deleted_role_and_schedule_restored_on_demand_and_periodically_extra_reported(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    """The rest of issue 12's list on KVM: a deleted Vault role and a deleted rotation schedule are
    restored by ``reconcile``; a labelled object nothing explains is reported and left alone; then a
    deleted node Deployment, certificate Secret, Vault role and schedule are all restored by the
    entity's own periodic check (every minute here)."""
    spec = small_kvm(id=unique_id("drift"), drift_check={"paused": True})
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))
    namespace = kvm_namespace(spec.id)
    local_stack.cli("create", "-f", str(spec_file), "--watch")
    root: hvac.Client = vault_client(root_settings(local_stack))
    temporal = await connect_temporal(stack_settings(local_stack))
    mount, schedule = pki_mount(spec.id), rotation_schedule_id(spec.id)

    def roles() -> set[str]:
        return set(root.list(f"{mount}/roles")["data"]["keys"])

    async def schedule_exists() -> bool:
        try:
            await temporal.get_schedule_handle(schedule).describe()
        except RPCError as exc:
            assert exc.status is RPCStatusCode.NOT_FOUND
            return False
        return True

    all_roles = roles()
    assert ROLE in all_roles and await schedule_exists()
    root.delete(f"{mount}/roles/{ROLE}")
    await temporal.get_schedule_handle(schedule).delete()
    core = k8s.CoreV1Api(kube(local_stack))
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "stray", "labels": {CLUSTER_LABEL: spec.id}}, "data": {"a": "b"}}
    )
    # a key pair of a node that is gone (what the upgrade leak left): a copy of a live one, renamed
    live = core.read_namespaced_secret("cert-node-worker-0", namespace)
    labels = {**live.metadata.labels, CERTIFICATE_LABEL: "node-worker-9"}
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "cert-node-worker-9", "labels": labels}, "type": live.type, "data": live.data}
    )

    dry = local_stack.cli("reconcile", spec.id, "--dry-run").stdout
    assert f"missing  vault:role/{ROLE}" in dry and f"missing  schedule/{schedule}" in dry, dry
    assert "extra    configmap/stray" in dry, dry
    assert f"extra    secret {namespace}/cert-node-worker-9" in dry, dry
    assert roles() == all_roles - {ROLE} and not await schedule_exists()

    repaired = local_stack.cli("reconcile", spec.id, timeout=600).stdout
    assert "PKI roles" in repaired and "rotation schedule" in repaired, repaired
    assert "2 extra object(s) reported, not deleted" in repaired, repaired
    assert "nodes restarted (one at a time, for re-issued certificates): none" in repaired, repaired
    assert roles() == all_roles and await schedule_exists()
    assert "stray" in names(local_stack, "configmaps", namespace)  # reported, never deleted
    assert "cert-node-worker-9" in names(local_stack, "secrets", namespace)
    core.delete_namespaced_config_map("stray", namespace)
    core.delete_namespaced_secret("cert-node-worker-9", namespace)

    # --- the periodic check, every minute ---------------------------------------------------------------
    previous = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)["last_check"]["at"]
    local_stack.cli("reconcile", spec.id, "--every", "1m")
    started = time.monotonic()
    kubectl(local_stack, "delete", "deployment", "worker-1", "-n", namespace)
    kubectl(local_stack, "delete", "secret", "cert-node-worker-1", "-n", namespace)
    root.delete(f"{mount}/roles/{ROLE}")
    await temporal.get_schedule_handle(schedule).delete()

    deadline = time.monotonic() + 240
    check: dict[str, object] = {}
    while time.monotonic() < deadline:
        check = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout).get("last_check") or {}
        if check.get("at") != previous and check.get("outcome") == "repaired":
            break
        time.sleep(1)
    waited = time.monotonic() - started
    assert check.get("outcome") == "repaired", check
    assert {"node worker-1", "PKI roles", "rotation schedule"} <= set(check["repaired"]), check  # type: ignore[arg-type]
    assert "worker-1" in names(local_stack, "deployments", namespace)
    assert "cert-node-worker-1" in names(local_stack, "secrets", namespace)
    assert roles() == all_roles and await schedule_exists()
    # the next periodic check finds the repaired cluster in sync, in the entity, restarting nothing
    repaired_at, operations = check["at"], (await get_status(temporal, spec.id)).operations_started
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and check.get("at") == repaired_at:
        time.sleep(1)
        check = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout).get("last_check") or {}
    assert check.get("outcome") == "in sync" and not check.get("restarted"), check
    assert (await get_status(temporal, spec.id)).operations_started == operations  # no reconcile child
    entity_history = await temporal.get_workflow_handle(f"cluster/{spec.id}").fetch_history()
    in_sync_seconds = last_in_place_check_seconds(entity_history)
    local_stack.cli("reconcile", spec.id, "--pause-checks")
    assert "in sync: nothing differs" in local_stack.cli("reconcile", spec.id).stdout
    local_stack.cli("delete", spec.id, timeout=600)
    print(  # noqa: T201
        f"\nKVM periodic check (1m) repaired 4 findings {waited:.0f}s after they were made; "
        f"an in-sync periodic check took {in_sync_seconds * 1000:.0f} ms (timer fired -> task completed)"
    )


def last_in_place_check_seconds(history: WorkflowHistory) -> float:
    """How long the entity's last in-sync periodic check took: from its timer firing to the
    workflow task that recorded its three local observes."""
    events = list(history.events)
    for i in range(len(events) - 1, -1, -1):
        if events[i].event_type != EventType.EVENT_TYPE_TIMER_FIRED:
            continue
        after = events[i + 1 :]
        completed = next(e for e in after if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        marker = after[after.index(completed) + 1] if after.index(completed) + 1 < len(after) else None
        if marker is not None and marker.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            return (completed.event_time.ToDatetime() - events[i].event_time.ToDatetime()).total_seconds()
    raise AssertionError("no in-sync periodic check in the entity's history")
