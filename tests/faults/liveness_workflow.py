"""A workflow for tests/faults/test_liveness.py: one sync activity with a short heartbeat timeout (the
sandbox imports this module, so it holds nothing but the workflow)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

HEARTBEAT_TIMEOUT = timedelta(seconds=2)


@workflow.defn
class OneSlowCall:
    @workflow.run
    async def run(self, name: str) -> list[str]:
        result: list[str] = await workflow.execute_activity(
            name,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3),
        )
        return result
