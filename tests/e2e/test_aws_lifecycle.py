"""Issue 8 end to end: the same workflows drive AWS (moto) clusters through create, re-create,
worker kill, rotation, upgrade and teardown, side by side with a KVM cluster."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from config.settings import Settings
from models.operations import ProvisionInput
from models.spec import ClusterSpec
from tests.aws_inventory import counts, everything, expected_counts, instance_ids, tags_of
from tests.e2e.conftest import Stack, WorkerProcess, kill_worker_at_step, slow_host_api, stack_settings, write_spec
from tests.e2e.test_create_kvm import kube
from tests.e2e.test_teardown_kvm import leftovers
from tests.history_checks import assert_no_private_key
from tests.specs import example, unique_id
from worker.clients import AwsClients, aws_clients, connect_temporal
from workflows.provision import ProvisionWorkflow

pytestmark = pytest.mark.stack


def aws_spec(**changes: Any) -> ClusterSpec:
    return example("aws-cluster.yaml", id=unique_id("aws"), deletion_protection=False, **changes)


def stack_aws(stack: Stack) -> AwsClients:
    settings = stack_settings(stack)
    return aws_clients(
        Settings(
            aws_endpoint_url=settings.aws_endpoint_url,
            aws_region=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key or SecretStr("testing"),
        )
    )


def assert_one_of_each(aws: AwsClients, spec: ClusterSpec) -> dict[str, list[dict[str, Any]]]:
    found = everything(aws, spec)
    expected = expected_counts(spec)
    got = {kind: n for kind, n in counts(found).items() if kind in expected}
    assert got == expected
    for kind in ("vpc", "subnet", "security-group", "instance", "nat-gateway"):
        for item in found[kind]:
            assert tags_of(item)["tenantctl.io/cluster"] == spec.id, (kind, item)
    secrets = {s["Name"] for s in found["secret"]}
    assert f"tenantctl/{spec.id}/apiserver" in secrets and f"tenantctl/{spec.id}/node-worker-0" in secrets
    return found


def assert_nothing_left(aws: AwsClients, spec: ClusterSpec) -> None:
    found = everything(aws, spec)
    left = {kind: n for kind, n in counts(found).items() if kind != "tagging-api"}
    assert left == {}, left
    assert found["tagging-api"] == []


async def test_aws_create_twice_rotate_and_teardown(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    aws = stack_aws(local_stack)
    spec = aws_spec()
    started = time.monotonic()
    created = local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch")
    create_wall = time.monotonic() - started
    assert "Ready" in created.stdout
    first = assert_one_of_each(aws, spec)

    # The create runbook run again over the live cluster converges: nothing new, same instances.
    client = await connect_temporal(stack_settings(local_stack))
    await client.execute_workflow(
        ProvisionWorkflow.run,
        ProvisionInput(spec=spec),
        id=f"provision-again-{spec.id}",
        task_queue=local_stack.env["TENANTCTL_TEMPORAL_TASK_QUEUE"],
    )
    again = assert_one_of_each(aws, spec)
    assert {i["InstanceId"] for i in again["instance"]} == {i["InstanceId"] for i in first["instance"]}

    # Rotation writes new key pairs to Secrets Manager and reboots each node (same instances).
    rotated = local_stack.cli("rotate", spec.id, "--force")
    assert rotated.returncode == 0
    assert instance_ids(aws, spec) == {tags_of(i)["tenantctl.io/node"]: i["InstanceId"] for i in first["instance"]}

    started = time.monotonic()
    local_stack.cli("delete", spec.id)
    delete_wall = time.monotonic() - started
    assert_nothing_left(aws, spec)
    assert await leftovers(local_stack, spec.id) == []
    async for execution in client.list_workflows(f'ClusterId = "{spec.id}"'):
        assert_no_private_key(await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history())
    print(f"\nAWS 3+3 on moto: create {create_wall:.1f}s, teardown {delete_wall:.1f}s")  # noqa: T201


async def test_aws_create_survives_a_worker_kill(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    aws = stack_aws(local_stack)
    spec = aws_spec()
    # The tenant API (simulated kubelets) is slowed, so the kill lands among the node activities.
    with slow_host_api(local_stack, 300):
        local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)))
        await kill_worker_at_step(local_stack, worker_process, spec.id, "nodes")
    worker_process.start()
    local_stack.cli("watch", spec.id, timeout=300)
    assert_one_of_each(aws, spec)
    local_stack.cli("delete", spec.id)
    assert_nothing_left(aws, spec)


async def test_kvm_and_aws_side_by_side(local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path) -> None:
    """One workflow code, two providers, at the same time."""
    kvm = example(id=unique_id("kvm"), masters={"count": 1, "cpu": 2, "memory": "4Gi"})
    aws = aws_spec(masters={"count": 1})
    files = [write_spec(tmp_path, s) for s in (kvm, aws)]
    results = await asyncio.gather(
        *(asyncio.to_thread(local_stack.cli, "create", "-f", str(f), "--watch") for f in files)
    )
    assert all("Ready" in r.stdout for r in results)
    listed = local_stack.cli("list", "-o", "json").stdout
    assert kvm.id in listed and aws.id in listed
    clients = stack_aws(local_stack)
    assert_one_of_each(clients, aws)
    from kubernetes import client as k8s

    assert len(k8s.AppsV1Api(kube(local_stack)).list_namespaced_deployment(f"tenant-{kvm.id}").items) == 4

    await asyncio.gather(*(asyncio.to_thread(local_stack.cli, "delete", s.id) for s in (kvm, aws)))
    assert_nothing_left(clients, aws)
    assert await leftovers(local_stack, kvm.id) == []
    assert await leftovers(local_stack, aws.id) == []
