"""``tenantctl scale`` end to end through the CLI, on the dev server with an in-memory fleet: an
accepted scale runs and reports what it added; a refused one exits non-zero, says why and changes
nothing."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase
from tests.fakes_upgrade import FakeFleet
from tests.specs import small_kvm
from tests.workflows.helpers import run_cli, start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow


async def test_scale_through_the_cli(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    fleet, queue = FakeFleet(), f"q-{uuid.uuid4()}"
    spec = small_kvm(workers={"count": 2, "cpu": 2, "memory": "4Gi"})
    async with build_worker(temporal_env.client, queue, fleet.activities()):
        handle = await start_entity(temporal_env.client, spec, queue)
        assert (await wait_settled(handle)).phase is ClusterPhase.READY

        refused = await asyncio.to_thread(run_cli, temporal_env, queue, tmp_path, ["scale", spec.id, "--workers", "0"])
        assert refused.exit_code != 0
        assert "workers.count" in refused.output and "nothing was changed" in refused.output
        assert "Traceback" not in refused.output
        assert (await handle.query(ClusterWorkflow.get_status)).spec.workers.count == 2

        grown = await asyncio.to_thread(
            run_cli, temporal_env, queue, tmp_path, ["scale", spec.id, "--workers", "3", "--watch"]
        )
        assert grown.exit_code == 0, grown.output
        assert "added worker-2" in grown.output
        status = await wait_settled(handle)
    assert status.spec.workers.count == 3 and "worker-2" in status.nodes
