"""Issue 12: a worker SIGKILLed during a scale-up and during a scale-down (KVM, the real local stack,
two worker processes on one task queue) leaves no node doubled or lost. The worker that runs the
scale's VM creation (up) or VM deletion (down) at that moment is the one killed (its pid is the
activity's worker identity, as in ``make takeover``); the other takes over, and the killed one is
started again. Counted afterwards in the host API (worker Deployments, node certificate Secrets),
in the tenant API (Nodes) and in OpenBao (unrevoked worker leaves, per node)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from models.naming import CLUSTER_LABEL, kvm_namespace
from models.pki import pki_mount
from models.spec import ClusterSpec
from starter import clusters
from tests.e2e.conftest import Stack, WorkerProcess, slow_host_api, stack_settings, wait_for, write_spec
from tests.e2e.test_create_kvm import kube
from tests.specs import small_kvm, unique_id
from worker.clients import connect_temporal, vault_client

pytestmark = pytest.mark.stack

HOST_API_LATENCY_MS = 250
"""Each host-API request this late during the scale: its steps last long enough to be caught mid-call."""


@pytest.fixture
def second_worker(local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(env=worker_process.env, log=tmp_path / "worker-b")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def leaves_per_worker(stack: Stack, spec: ClusterSpec) -> Counter[str]:
    """Unrevoked worker leaves in the cluster's mount, per CN: a doubled node would show twice."""
    vault: hvac.Client = vault_client(stack_settings(stack))
    mount, found = pki_mount(spec.id), Counter[str]()
    for serial in vault.list(f"{mount}/certs")["data"]["keys"]:
        data = vault.read(f"{mount}/cert/{serial}")["data"]
        if int(data.get("revocation_time") or 0):
            continue
        cn = x509.load_pem_x509_certificate(data["certificate"].encode()).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
        if cn and str(cn[0].value).startswith("system:node:worker-"):
            found[str(cn[0].value).removeprefix("system:node:")] += 1
    return found


def counted(stack: Stack, spec: ClusterSpec) -> dict[str, object]:
    host = kube(stack)
    ns, selector = kvm_namespace(spec.id), f"{CLUSTER_LABEL}={spec.id}"
    deployments = [d.metadata.name for d in k8s.AppsV1Api(host).list_namespaced_deployment(ns).items]
    secrets = [s.metadata.name for s in k8s.CoreV1Api(host).list_namespaced_secret(ns, label_selector=selector).items]
    tenant = k8s.ApiClient(k8s.Configuration(host=stack_settings(stack).tenant_api_url(spec.id, spec.base_domain)))
    try:
        nodes = [n.metadata.name for n in k8s.CoreV1Api(tenant).list_node().items]
    finally:
        tenant.close()
    return {
        "deployments": sorted(d for d in deployments if d.startswith("worker-")),
        "nodes": sorted(n for n in nodes if n.startswith("worker-")),
        "secrets": sorted(s for s in secrets if s.startswith("cert-node-worker-")),
        "leaves": dict(sorted(leaves_per_worker(stack, spec).items())),
    }


def expected(workers: list[str]) -> dict[str, object]:
    return {
        "deployments": workers,
        "nodes": workers,
        "secrets": [f"cert-node-{w}" for w in workers],
        "leaves": dict.fromkeys(workers, 1),
    }


async def kill_in(client: Client, workflow_id: str, activity: str, processes: list[WorkerProcess]) -> str:
    """SIGKILL the worker process running ``activity`` of ``workflow_id`` (its pid is the pending
    activity's worker identity), as soon as one is seen running it; says which."""
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pending in (await handle.describe()).raw_description.pending_activities:
            if pending.activity_type.name != activity:
                continue
            if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                continue
            pid = pending.last_worker_identity.split("@", 1)[0]
            victim = next((p for p in processes if p.proc is not None and str(p.proc.pid) == pid), None)
            if victim is not None:
                victim.kill()
                return f"killed pid {pid} in {activity} (attempt {pending.attempt})"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{activity} of {workflow_id} was not seen running")


async def scale_with_a_kill(
    stack: Stack, spec: ClusterSpec, workers: int, activity: str, processes: list[WorkerProcess]
) -> str:
    """``tenantctl scale`` as a user runs it; the worker running the scale's ``activity`` is
    SIGKILLed mid-call, then started again once the scale has ended."""
    client = await connect_temporal(stack_settings(stack))
    with slow_host_api(stack, HOST_API_LATENCY_MS):
        scaling = asyncio.create_task(
            asyncio.to_thread(stack.cli, "scale", spec.id, "--workers", str(workers), "--watch")
        )
        before = (await clusters.get_status(client, spec.id)).operations_started

        async def scale_started() -> bool:
            status = await clusters.get_status(client, spec.id)
            return status.operations_started > before and status.current is not None

        await wait_for(scale_started, f"the scale of {spec.id} to start", timeout=60)
        operation = (await clusters.get_status(client, spec.id)).current
        assert operation is not None
        killed = await kill_in(client, operation.workflow_id, activity, processes)
        result = await scaling
    for process in processes:
        if process.proc is not None and process.proc.poll() is not None:
            process.start()
    status = await clusters.get_status(client, spec.id)
    assert status.current is None and status.phase.value == "Ready", status
    assert status.spec.workers.count == workers
    return f"{killed}; {result.stdout.strip().splitlines()[-1]}"


async def test_worker_killed_during_scale_up_and_down_leaves_no_node_doubled_or_lost(
    local_stack: Stack, worker_process: WorkerProcess, second_worker: WorkerProcess, tmp_path: Path
) -> None:
    spec = small_kvm(id=unique_id("scalekill"))  # 1 master, 2 workers, drift checks paused
    local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch")
    assert counted(local_stack, spec) == expected(["worker-0", "worker-1"])
    processes = [worker_process, second_worker]

    up = await scale_with_a_kill(local_stack, spec, 4, "kvm.ensure_node", processes)  # creating a VM
    assert "killed pid" in up, up
    assert counted(local_stack, spec) == expected(["worker-0", "worker-1", "worker-2", "worker-3"]), up

    down = await scale_with_a_kill(local_stack, spec, 1, "kvm.ensure_node_absent", processes)  # deleting one
    assert "killed pid" in down, down
    assert counted(local_stack, spec) == expected(["worker-0"]), down
    print(f"\nscale up with a kill: {up}\nscale down with a kill: {down}")  # noqa: T201
    local_stack.cli("delete", spec.id, timeout=600)
