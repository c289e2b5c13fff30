"""A refused request never prints "accepted": a second ``upgrade`` while one runs (or waits paused)
is refused by the CLI at once, naming the running one, and nothing changes.

The CLI runs in-process against a Temporal dev server and a worker with the in-memory fleet of
the workflow-logic tests (tests/fakes_upgrade.py), whose node master-1 never comes back ready.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from models.cluster import ClusterPhase, ClusterStatus, OperationKind, OperationState
from starter.cli import app
from tests.fakes_upgrade import FakeFleet
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow


def cli(env: WorkflowEnvironment, queue: str, state_dir: Path, *args: str) -> Result:
    settings_env = {
        "TENANTCTL_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TENANTCTL_TEMPORAL_TASK_QUEUE": queue,
        "TENANTCTL_STATE_DIR": str(state_dir),
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, list(args), env=settings_env)


async def status_when(handle: Any, predicate: Any) -> ClusterStatus:
    for _ in range(600):
        status: ClusterStatus = await handle.query(ClusterWorkflow.get_status)
        if predicate(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_second_upgrade_is_refused_not_accepted(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    fleet, queue = FakeFleet(), f"refusals-{uuid.uuid4().hex[:8]}"
    spec = small_kvm(masters={"count": 3, "cpu": 2, "memory": "4Gi"})
    async with build_worker(temporal_env.client, queue, fleet.activities()):
        handle = await start_entity(temporal_env.client, spec, queue)
        assert (await wait_settled(handle)).phase is ClusterPhase.READY
        fleet.break_on_roll.add("master-1")  # the first upgrade pauses there

        first = await asyncio.to_thread(
            cli, temporal_env, queue, tmp_path, "upgrade", spec.id, "--version", "1.33.0", "--node-ready-timeout", "3s"
        )
        assert first.exit_code == 0 and "accepted: starting" in first.output, first.output
        paused = await status_when(handle, lambda s: s.current is not None and s.current.state is OperationState.PAUSED)
        assert paused.current is not None and paused.current.kind is OperationKind.UPGRADE

        second = await asyncio.to_thread(cli, temporal_env, queue, tmp_path, "upgrade", spec.id, "--version", "1.33.1")
        text = " ".join(second.output.split())
        assert second.exit_code == 1, second.output
        assert "accepted" not in text and "already paused" in text and "nothing was changed" in text, text
        assert f"tenantctl upgrade abort {spec.id}" in text
        after: ClusterStatus = await handle.query(ClusterWorkflow.get_status)
        assert after.operations_started == paused.operations_started  # nothing queued

        fleet.break_on_roll.clear()
        fleet.never_ready.clear()
        aborted = await asyncio.to_thread(cli, temporal_env, queue, tmp_path, "upgrade", "abort", spec.id)
        assert aborted.exit_code == 0, aborted.output
        await status_when(handle, lambda s: s.current is None)
    await handle.terminate("test done")
