"""Helpers for workflow-logic tests: start an entity, wait for it to settle, run the CLI against it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from models.cluster import ClusterPhase, ClusterStatus
from models.naming import entity_workflow_id
from models.operations import ClusterInput
from models.spec import ClusterSpec
from workflows.cluster import ClusterWorkflow


async def start_entity(client: Client, spec: ClusterSpec, task_queue: str, **input: Any) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        ClusterWorkflow.run,
        ClusterInput(spec=spec, **input),
        id=entity_workflow_id(spec.id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def wait_settled(handle: WorkflowHandle[Any, Any], attempts: int = 600) -> ClusterStatus:
    status: ClusterStatus | None = None
    for _ in range(attempts):
        status = await handle.query(ClusterWorkflow.get_status)
        if status.current is None and status.phase in (ClusterPhase.READY, ClusterPhase.FAILED):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"cluster did not settle: {status}")


def run_cli(env: WorkflowEnvironment, queue: str, state_dir: Path, args: list[str], **extra_env: str) -> Any:
    """``tenantctl ARGS`` in this process (typer's runner), against ``env``'s server and ``queue``."""
    from starter.cli import app

    settings_env = {
        "TENANTCTL_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TENANTCTL_TEMPORAL_TASK_QUEUE": queue,
        "TENANTCTL_STATE_DIR": str(state_dir),
        "COLUMNS": "200",
        **extra_env,
    }
    return CliRunner().invoke(app, args, env=settings_env)
