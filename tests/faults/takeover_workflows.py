"""Workflows for tests/faults/test_sticky_takeover.py: a parent whose child makes one call (the
sandbox imports this module, so it holds nothing but the workflows)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

CALL = "test.takeover_call"
HEARTBEAT_TIMEOUT = timedelta(seconds=2)


@workflow.defn
class CallingChild:
    @workflow.run
    async def run(self) -> str:
        result: str = await workflow.execute_activity(
            CALL,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3),
        )
        return result


@workflow.defn
class TakeoverParent:
    @workflow.run
    async def run(self) -> str:
        result: str = await workflow.execute_child_workflow(CallingChild.run, id=f"{workflow.info().workflow_id}/child")
        return result
