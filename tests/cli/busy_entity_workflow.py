"""A stand-in cluster entity for tests/cli/test_status_query_buffer.py: it answers the ``status``
query with the status it was started with, and on a ``hold`` signal keeps its workflow task in
flight for a while (a local activity runs inside the task), as a real entity's task is while a busy
worker replays it (the sandbox imports this module, so it holds nothing but the workflow)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from models.cluster import ClusterStatus

HOLD_ACTIVITY = "hold_workflow_task"


@workflow.defn
class BusyEntity:
    def __init__(self) -> None:
        self._status: ClusterStatus | None = None
        self._holds = 0
        self._held = 0

    @workflow.run
    async def run(self, status: ClusterStatus) -> None:
        self._status = status
        while True:
            await workflow.wait_condition(lambda: self._holds > self._held)
            self._held += 1
            await workflow.execute_local_activity(HOLD_ACTIVITY, start_to_close_timeout=timedelta(seconds=30))

    @workflow.signal
    def hold(self) -> None:
        self._holds += 1

    @workflow.query(name="status")
    def get_status(self) -> ClusterStatus:
        assert self._status is not None
        return self._status
