"""Helpers for workflow-logic tests: start an entity, wait for it to settle."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

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
