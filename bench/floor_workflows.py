"""The floor: bare workflows that run an operation's waves of activities that do nothing.

``FloorOperation`` (the parent, like the cluster entity) starts one ``FloorRunbook`` child (like a
provision, rotation, upgrade or teardown child) and waits for it; the child runs the waves one after
another, the activities of a wave at once. Imports: temporalio and the stdlib only (sandboxed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

NOOP_ACTIVITY = "floor.noop"
NOOP_TIMEOUT = timedelta(seconds=30)
NOOP_RETRY = RetryPolicy(maximum_attempts=3)


@dataclass
class FloorInput:
    operation: str
    waves: list[int] = field(default_factory=list)


@workflow.defn(name="FloorRunbook")
class FloorRunbookWorkflow:
    @workflow.run
    async def run(self, shape: FloorInput) -> int:
        done = 0
        for width in shape.waves:
            await asyncio.gather(
                *(
                    workflow.execute_activity(
                        NOOP_ACTIVITY, start_to_close_timeout=NOOP_TIMEOUT, retry_policy=NOOP_RETRY
                    )
                    for _ in range(width)
                )
            )
            done += width
        return done


@workflow.defn(name="FloorOperation")
class FloorOperationWorkflow:
    @workflow.run
    async def run(self, shape: FloorInput) -> int:
        done: int = await workflow.execute_child_workflow(
            FloorRunbookWorkflow.run, shape, id=f"{workflow.info().workflow_id}/runbook"
        )
        return done
