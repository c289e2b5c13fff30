"""Issue 12 (node auto-repair) end to end on AWS (moto) through the local stack: a worker made
NotReady through the tenant API is replaced, surge first, by the same workflows as on KVM; the old
worker's instance is terminated and its Secrets Manager key pair deleted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.aws_inventory import everything, instance_ids, tags_of
from tests.e2e.conftest import Stack, WorkerProcess, write_spec
from tests.e2e.test_aws_lifecycle import assert_nothing_left, aws_spec, stack_aws
from tests.e2e.test_node_repair_kvm import FAST, set_ready, status, wait_until

pytestmark = pytest.mark.stack


async def test_aws_notready_worker_is_replaced(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    aws = stack_aws(local_stack)
    spec = aws_spec(masters={"count": 1}, workers={"count": 2, "instance_type": "m5.large"}, **FAST)
    local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch", timeout=600)
    old_instance = instance_ids(aws, spec)["worker-1"]

    went_bad = time.monotonic()
    set_ready(local_stack, spec.id, "worker-1", False)

    def replaced() -> dict[str, Any] | None:
        now = status(local_stack, spec.id)
        return now if now["current"] is None and sorted(now["nodes"]) == ["master-0", "worker-0", "worker-2"] else None

    after = wait_until(replaced, "worker-1 replaced", timeout=300)
    took = time.monotonic() - went_bad
    assert after["recent"][0]["kind"] == "repair-node" and after["recent"][0]["state"] == "succeeded"
    assert after["recent"][0]["message"] == "worker-1 replaced by worker-2"
    found = everything(aws, spec)
    live = {tags_of(i)["tenantctl.io/node"]: i["InstanceId"] for i in found["instance"]}
    assert sorted(live) == ["master-0", "worker-0", "worker-2"] and old_instance not in live.values(), live
    secrets = {s["Name"] for s in found["secret"]}
    assert f"tenantctl/{spec.id}/node-worker-2" in secrets and f"tenantctl/{spec.id}/node-worker-1" not in secrets
    local_stack.cli("delete", spec.id, timeout=600)
    assert_nothing_left(aws, spec)
    print(f"\nAWS node repair e2e: NotReady -> replaced in {took:.1f}s")  # noqa: T201
