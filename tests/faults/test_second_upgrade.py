"""A second ``tenantctl upgrade`` while one runs or waits in the queue is refused at once, by the
entity's validator, and the CLI says why and exits non-zero; it never prints "accepted" (issue 14).

On the time-skipping server with an in-memory fleet: a scale holds the entity (its new worker's VM
call waits for the test), an upgrade queues behind it, and a second upgrade — through the CLI and
straight to the entity — is refused naming the queued one. Once the first upgrade runs, another is
refused naming the running one. Only one upgrade ever starts, and it completes.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase, ClusterStatus, OperationKind, OperationState
from models.operations import ScaleRequest, UpgradeOutcome, UpgradeRequest, UpgradeResult
from tests.fakes_upgrade import FakeFleet
from tests.specs import small_kvm
from tests.workflows.helpers import run_cli, start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow

OLD, PATCH, NEXT_PATCH = "1.32.4", "1.32.5", "1.32.6"


async def status_when(handle: WorkflowHandle[Any, Any], what: str, predicate: Any) -> ClusterStatus:
    for _ in range(600):
        status: ClusterStatus = await handle.query(ClusterWorkflow.get_status)
        if predicate(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_second_upgrade_is_refused_while_one_is_queued_or_running(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client, fleet, queue = time_skipping_env.client, FakeFleet(), f"q-{uuid.uuid4()}"
    spec = small_kvm(workers={"count": 1, "cpu": 2, "memory": "4Gi"})
    async with build_worker(client, queue, fleet.activities()):
        handle = await start_entity(client, spec, queue)
        assert (await wait_settled(handle)).phase is ClusterPhase.READY

        scale_held = fleet.hold("kvm.ensure_node:worker-1")
        scaling = await handle.start_update(
            ClusterWorkflow.scale,
            ScaleRequest(workers=2, requested_by="test"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await asyncio.to_thread(fleet.reached["kvm.ensure_node:worker-1"].wait, 30)
        first = await handle.start_update(
            ClusterWorkflow.upgrade,
            UpgradeRequest(version=PATCH, requested_by="test"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )

        # Queued: the CLI is refused by the validator (its own look sees a scale, not an upgrade).
        queued = await asyncio.to_thread(
            run_cli, time_skipping_env, queue, tmp_path, ["upgrade", spec.id, "--version", NEXT_PATCH], NO_COLOR="1"
        )
        assert queued.exit_code == 1, queued.output
        assert f"queued behind the running {OperationKind.SCALE}" in queued.output
        assert PATCH in queued.output and "nothing was changed" in queued.output
        assert "accepted" not in queued.output and "Traceback" not in queued.output
        with pytest.raises(WorkflowUpdateFailedError) as same_target:
            await handle.execute_update(ClusterWorkflow.upgrade, UpgradeRequest(version=PATCH, requested_by="test"))
        assert "already queued" in str(same_target.value.cause)

        # Running: the upgrade holds the entity now (its first master's drain waits for the test).
        drain_held = fleet.hold("tenant.drain_node:master-0")
        scale_held.set()
        await scaling.result()
        await asyncio.to_thread(fleet.reached["tenant.drain_node:master-0"].wait, 30)
        with pytest.raises(WorkflowUpdateFailedError) as running:
            await handle.execute_update(
                ClusterWorkflow.upgrade, UpgradeRequest(version=NEXT_PATCH, requested_by="test")
            )
        assert "already running" in str(running.value.cause)
        assert f"tenantctl upgrade abort {spec.id}" in str(running.value.cause)
        again = await asyncio.to_thread(
            run_cli, time_skipping_env, queue, tmp_path, ["upgrade", spec.id, "--version", NEXT_PATCH], NO_COLOR="1"
        )
        assert again.exit_code == 1 and "already running" in again.output and "accepted" not in again.output

        drain_held.set()
        result: UpgradeResult = await first.result()
        status = await status_when(handle, "the upgrade to finish", lambda s: s.current is None)

        # Once it is over, the next upgrade is accepted again (the record of pending targets is empty).
        assert result.outcome is UpgradeOutcome.COMPLETED and status.kubernetes_version == PATCH
        upgrades = [op for op in status.recent if op.kind is OperationKind.UPGRADE]
        assert [op.state for op in upgrades] == [OperationState.SUCCEEDED]
        assert status.operations_started == 3  # create, scale, one upgrade
        follow_up = await handle.start_update(
            ClusterWorkflow.upgrade,
            UpgradeRequest(version=NEXT_PATCH, requested_by="test"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        assert (await follow_up.result()).kubernetes_version == NEXT_PATCH
