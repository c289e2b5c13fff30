"""Issue 12 on AWS (moto on the real local stack): a worker SIGKILLed while a scale-up creates an
instance and while a scale-down terminates one leaves no node doubled or lost. Counted afterwards:
live instances per node tag, Secrets Manager key pairs, tenant Nodes, unrevoked worker leaves."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client as k8s

from models.naming import NODE_LABEL
from models.spec import ClusterSpec
from tests.aws_inventory import everything, tags_of
from tests.e2e.conftest import Stack, WorkerProcess, stack_settings, write_spec
from tests.e2e.test_aws_lifecycle import aws_spec, stack_aws
from tests.e2e.test_scale_kill_kvm import leaves_per_worker, scale_with_a_kill, second_worker
from worker.clients import AwsClients

pytestmark = pytest.mark.stack
__all__ = ["second_worker"]  # the fixture, shared with the KVM test


def counted(stack: Stack, aws: AwsClients, spec: ClusterSpec) -> dict[str, object]:
    found = everything(aws, spec)
    instances = Counter(tags_of(i)[NODE_LABEL] for i in found["instance"])
    prefix = f"tenantctl/{spec.id}/node-worker-"
    tenant = k8s.ApiClient(k8s.Configuration(host=stack_settings(stack).tenant_api_url(spec.id, spec.base_domain)))
    try:
        nodes = [n.metadata.name for n in k8s.CoreV1Api(tenant).list_node().items]
    finally:
        tenant.close()
    return {
        "instances": {n: c for n, c in sorted(instances.items()) if n.startswith("worker-")},
        "nodes": sorted(n for n in nodes if n.startswith("worker-")),
        "secrets": sorted(
            s["Name"].removeprefix(f"tenantctl/{spec.id}/") for s in found["secret"] if s["Name"].startswith(prefix)
        ),
        "leaves": dict(sorted(leaves_per_worker(stack, spec).items())),
    }


def expected(workers: list[str]) -> dict[str, object]:
    return {
        "instances": dict.fromkeys(workers, 1),
        "nodes": workers,
        "secrets": [f"node-{w}" for w in workers],
        "leaves": dict.fromkeys(workers, 1),
    }


async def test_aws_worker_killed_during_scale_up_and_down_leaves_no_node_doubled_or_lost(
    local_stack: Stack, worker_process: WorkerProcess, second_worker: WorkerProcess, tmp_path: Path
) -> None:
    aws = stack_aws(local_stack)
    spec = aws_spec(masters={"count": 1}, workers={"count": 2, "instance_type": "m5.xlarge"})
    local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch")
    assert counted(local_stack, aws, spec) == expected(["worker-0", "worker-1"])
    processes = [worker_process, second_worker]

    up = await scale_with_a_kill(local_stack, spec, 4, "aws.ensure_node", processes)
    assert counted(local_stack, aws, spec) == expected(["worker-0", "worker-1", "worker-2", "worker-3"]), up
    down = await scale_with_a_kill(local_stack, spec, 1, "aws.ensure_node_absent", processes)
    assert counted(local_stack, aws, spec) == expected(["worker-0"]), down
    print(f"\nAWS scale up with a kill: {up}\nAWS scale down with a kill: {down}")  # noqa: T201
    local_stack.cli("delete", spec.id, timeout=600)
