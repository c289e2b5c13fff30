"""Running the floor's operations from the bench (the floor worker runs them)."""

from __future__ import annotations

import time

from temporalio.client import Client

from bench.floor_workflows import FloorInput, FloorOperationWorkflow
from bench.product import Outcome, history_length
from bench.shapes import Shape


async def run(client: Client, shape: Shape, workflow_id: str, task_queue: str, count_events: bool = True) -> Outcome:
    """Run the floor of an operation; ``count_events=False`` skips the two describes that count its
    events (as ``product.create`` skips its bookkeeping when K creates run at once)."""
    began = time.monotonic()
    await client.execute_workflow(
        FloorOperationWorkflow.run,
        FloorInput(operation=shape.operation, waves=list(shape.waves)),
        id=workflow_id,
        task_queue=task_queue,
    )
    seconds = time.monotonic() - began
    if not count_events:
        return Outcome(seconds, None, None)
    parent = await history_length(client, workflow_id)
    child = await history_length(client, f"{workflow_id}/runbook")
    return Outcome(seconds, None if parent is None or child is None else parent + child)
