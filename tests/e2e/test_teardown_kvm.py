"""Issue 7 end to end: teardown leaves nothing behind, whatever state create or an earlier
teardown died in; protection refuses it until turned off."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from models.naming import CLUSTER_LABEL, entity_workflow_id, rotation_schedule_id
from models.operations import ClusterReport, TeardownInput
from models.spec import ClusterSpec
from tests.e2e.conftest import (
    TENANTCTL,
    Stack,
    WorkerProcess,
    kill_worker_at_step,
    root_settings,
    slow_host_api,
    stack_settings,
    write_spec,
)
from tests.e2e.test_create_kvm import kube
from tests.history_checks import assert_replays
from tests.specs import example, unique_id
from worker.clients import connect_temporal, vault_client
from workflows.cluster import ClusterWorkflow
from workflows.teardown import TeardownWorkflow

pytestmark = pytest.mark.stack

# Each step of the create runbook, in order; create is stopped right there in turn.
CREATE_STEPS = [
    "pki.ensure_roles",
    "kvm.ensure_foundation",
    "pki.ensure_certificates",
    "kvm.ensure_endpoint",
    "kvm.ensure_node",
    "kvm.wait_nodes_ready",
    "schedule.ensure_rotation_schedule",
]


def small(**changes: object) -> ClusterSpec:
    return example(
        id=unique_id("td"),
        masters={"count": 1, "cpu": 2, "memory": "4Gi"},
        workers={"count": 2, "cpu": 2, "memory": "4Gi"},
        **changes,
    )


async def leftovers(stack: Stack, cluster_id: str) -> list[str]:
    """Everything of the cluster still anywhere: host API (by label), Vault, Temporal."""
    found: list[str] = []
    api = kube(stack)
    core, apps, net = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.NetworkingV1Api(api)
    selector = f"{CLUSTER_LABEL}={cluster_id}"
    listings = {
        "namespace": core.list_namespace,
        "deployment": apps.list_deployment_for_all_namespaces,
        "service": core.list_service_for_all_namespaces,
        "configmap": core.list_config_map_for_all_namespaces,
        "secret": core.list_secret_for_all_namespaces,
        "serviceaccount": core.list_service_account_for_all_namespaces,
        "ingress": net.list_ingress_for_all_namespaces,
        "networkpolicy": net.list_network_policy_for_all_namespaces,
    }
    for kind, list_all in listings.items():
        found += [f"host {kind}/{o.metadata.name}" for o in list_all(label_selector=selector).items]
    settings = stack_settings(stack)
    vault = vault_client(root_settings(stack))  # the policy listing: root only
    if f"pki/{cluster_id}/" in vault.sys.list_mounted_secrets_engines()["data"]:
        found.append(f"vault mount pki/{cluster_id}")
    if f"tenantctl-{cluster_id}" in vault.sys.list_acl_policies()["data"]["keys"]:
        found.append(f"vault policy tenantctl-{cluster_id}")
    client = await connect_temporal(settings)
    try:
        await client.get_schedule_handle(rotation_schedule_id(cluster_id)).describe()
        found.append(f"temporal schedule {rotation_schedule_id(cluster_id)}")
    except RPCError as exc:
        assert exc.status is RPCStatusCode.NOT_FOUND
    return found


async def assert_deleted(stack: Stack, client: Client, cluster_id: str) -> ClusterReport:
    assert await leftovers(stack, cluster_id) == []
    handle = client.get_workflow_handle_for(ClusterWorkflow.run, entity_workflow_id(cluster_id))
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED
    report = await handle.result()
    assert report.phase == "Deleted"
    await assert_replays(await handle.fetch_history())
    return report


@pytest.mark.parametrize("fail_at", CREATE_STEPS)
async def test_teardown_after_create_stopped_at_each_step(local_stack: Stack, tmp_path: Path, fail_at: str) -> None:
    spec = small()
    faulty = WorkerProcess(
        env={**local_stack.env, "TENANTCTL_TEST_FAIL_ACTIVITIES": fail_at},
        log=tmp_path / "faulty-worker",
        module="tests.e2e.faulty_worker",
    )
    faulty.start()
    try:
        created = local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch", check=False)
    finally:
        faulty.stop()
    assert f"injected permanent failure of {fail_at}" in created.stdout + created.stderr
    if fail_at != "schedule.ensure_rotation_schedule":
        assert created.returncode == 1  # the create failed, and said why
        assert await leftovers(local_stack, spec.id)  # something was half-created

    worker = WorkerProcess(env=local_stack.env, log=tmp_path / "worker")
    worker.start()
    try:
        local_stack.cli("delete", spec.id)
        client = await connect_temporal(stack_settings(local_stack))
        await assert_deleted(local_stack, client, spec.id)
    finally:
        worker.stop()


async def test_teardown_report_twice_and_protection(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    spec = example(id=unique_id("prot"), deletion_protection=True)  # 3 masters, 3 workers
    local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch")

    refused = local_stack.cli("delete", spec.id, check=False)
    assert refused.returncode == 1
    assert "deletion protection" in refused.stderr and f"tenantctl protect {spec.id} --off" in refused.stderr
    assert await leftovers(local_stack, spec.id)  # nothing was touched

    assert "now off" in local_stack.cli("protect", spec.id, "--off").stdout
    started = time.monotonic()
    deleted = local_stack.cli("delete", spec.id)
    wall = time.monotonic() - started
    assert "deleted" in deleted.stdout
    client = await connect_temporal(stack_settings(local_stack))
    report = await assert_deleted(local_stack, client, spec.id)
    assert report.teardown is not None
    removed = set(report.teardown.removed)
    assert {f"deployment/{n}" for n in spec.node_names()} <= {
        r.split("/", 1)[0] + "/" + r.rsplit("/", 1)[-1] for r in removed
    }
    assert report.teardown.revoked_certificates > 0
    print(f"\nteardown of a 3+3 KVM cluster: wall {wall:.1f}s, workflow {report.teardown.duration_seconds:.1f}s")  # noqa: T201

    # A second teardown over the remains finds everything absent and ends clean.
    again = await client.execute_workflow(
        TeardownWorkflow.run,
        TeardownInput(spec=spec),
        id=f"teardown-again-{spec.id}",
        task_queue=local_stack.env["TENANTCTL_TEMPORAL_TASK_QUEUE"],
    )
    assert again.removed == []
    assert await leftovers(local_stack, spec.id) == []

    # The id can be used again.
    local_stack.cli(
        "create", "-f", str(write_spec(tmp_path, spec.model_copy(update={"deletion_protection": False}))), "--watch"
    )
    local_stack.cli("delete", spec.id)


async def test_teardown_killed_halfway_finishes_clean(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    spec = small()
    local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch")
    client = await connect_temporal(stack_settings(local_stack))
    with slow_host_api(local_stack, 400):
        deleting = subprocess.Popen(
            [TENANTCTL, "delete", spec.id], env=local_stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        await kill_worker_at_step(local_stack, worker_process, spec.id, "nodes")
    worker_process.start()
    output, _ = deleting.communicate(timeout=300)
    assert deleting.returncode == 0, output.decode()
    await assert_deleted(local_stack, client, spec.id)


async def test_delete_cancels_a_create_killed_midway(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    """A worker dies mid-create; the operator deletes with --cancel-running: nothing remains."""
    spec = small()
    # slow until the delete is done: the create is still running when the delete is sent (a restarted
    # worker on a fast host API could finish it first, and then there is no create to cancel or show)
    with slow_host_api(local_stack, 400):
        local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)))
        await kill_worker_at_step(local_stack, worker_process, spec.id, "nodes")
        worker_process.start()
        deleted = local_stack.cli("delete", spec.id, "--cancel-running")
    assert "create cancelled" in deleted.stdout or "create succeeded" in deleted.stdout, deleted.stdout + deleted.stderr
    await assert_deleted(local_stack, await connect_temporal(stack_settings(local_stack)), spec.id)
