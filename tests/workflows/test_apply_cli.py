"""``tenantctl apply`` through the CLI on the dev server with an in-memory fleet: create when
absent, "no changes" for an unchanged file, --dry-run prints the plan and changes nothing, an
immutable field is refused naming it with old and new value, a changed worker count runs a scale."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import yaml
from click.testing import Result
from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase
from models.spec import ClusterSpec
from tests.fakes_upgrade import FakeFleet
from tests.specs import small_kvm
from tests.workflows.helpers import run_cli, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow


def write(path: Path, spec: ClusterSpec, **changes: object) -> Path:
    data = spec.model_dump(mode="json", exclude_none=True)
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


async def test_apply_creates_plans_refuses_and_scales(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    fleet, queue = FakeFleet(), f"q-{uuid.uuid4()}"
    spec = small_kvm(workers={"count": 2, "cpu": 2, "memory": "4Gi"})
    file = write(tmp_path / "c.yaml", spec)

    async def run(*args: str) -> Result:
        result: Result = await asyncio.to_thread(run_cli, temporal_env, queue, tmp_path, list(args))
        return result

    async with build_worker(temporal_env.client, queue, fleet.activities()):
        created = await run("apply", "-f", str(file))
        assert created.exit_code == 0, created.output
        handle = temporal_env.client.get_workflow_handle(f"cluster/{spec.id}")
        assert (await wait_settled(handle)).phase is ClusterPhase.READY
        mark = len(fleet.calls)

        same = await run("apply", "-f", str(file))
        assert same.exit_code == 0 and "no changes" in same.output

        three = write(tmp_path / "three.yaml", spec, workers={"count": 3, "cpu": 2, "memory": "4Gi"})
        dry = await run("apply", "-f", str(three), "--dry-run")
        assert dry.exit_code == 0 and "workers.count: 2 -> 3" in dry.output
        assert "scale workers 2 -> 3" in dry.output

        moved = write(tmp_path / "moved.yaml", spec, base_domain="elsewhere.example", workers=spec.workers.model_dump())
        refused = await run("apply", "-f", str(moved))
        assert refused.exit_code != 0
        assert f"base_domain: {spec.base_domain} -> elsewhere.example" in refused.output
        assert "Traceback" not in refused.output
        assert fleet.calls[mark:] == []  # nothing started by no-change, dry-run or refusal

        scaled = await run("apply", "-f", str(three))
        assert scaled.exit_code == 0, scaled.output
        status = await handle.query(ClusterWorkflow.get_status)
    assert status.spec.workers.count == 3 and "worker-2" in status.nodes
