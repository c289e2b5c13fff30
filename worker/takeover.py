"""When a worker takes over a call from a worker that died, the workflows the dead worker had cached
move off its sticky queue at once instead of after the sticky queue timeout (issue 14).

Temporal sends a cached workflow's next workflow task to the sticky queue of the worker that ran its
last one, and to the shared queue only once the sticky schedule-to-start timeout has passed. After
a SIGKILL that is paid by every workflow the dead worker had cached: measured on the local stack, a
killed worker's operation child and its cluster entity each waited about a second after their
retaken call had completed (the server rounds the 0.5 s setting up), two of the five seconds a kill
cost.

The worker that runs the retried attempt knows more than the server does: the attempt before timed
out (heartbeat or start-to-close), so its worker is most likely gone. Before the call runs it asks
Temporal to reset the sticky queue of the call's workflow and of that workflow's parent (the
entity, for an operation): their next tasks go to the shared queue, where a live worker takes them.
A reset of a workflow whose worker is in fact alive costs that worker one replay of the history;
retries that follow errors (not timeouts) reset nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest, ResetStickyTaskQueueRequest
from temporalio.service import RPCError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

if TYPE_CHECKING:
    from temporalio.client import Client

log = logging.getLogger(__name__)

RESET_TIMEOUT_SECONDS: Final = 2.0
"""The most the reset may hold up the retried call; a slower Temporal is left to the sticky timeout."""


class StickyTakeover(Interceptor):
    """Worker interceptor: a retried call whose previous attempt timed out first resets the sticky
    queues of its workflow and that workflow's parent."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self._client)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, client: Client) -> None:
        super().__init__(next)
        self._client = client

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        # (a standalone activity has no workflow whose queue could be reset)
        if info.attempt > 1 and not info.is_local and info.workflow_id and info.workflow_run_id:
            try:
                await asyncio.wait_for(
                    release_sticky_queues(self._client, info.workflow_id, info.workflow_run_id, info.activity_id),
                    RESET_TIMEOUT_SECONDS,
                )
            except (TimeoutError, RPCError) as exc:
                # an optimisation only: the server's sticky timeout still moves the workflows
                log.warning("sticky queues of %s not reset after a takeover: %s", info.workflow_id, exc)
        return await super().execute_activity(input)


async def release_sticky_queues(client: Client, workflow_id: str, run_id: str, activity_id: str) -> list[str]:
    """Reset the sticky queues of ``workflow_id`` and its parent when the pending call
    ``activity_id``'s last attempt timed out; returns the workflow ids reset."""
    service, namespace = client.workflow_service, client.namespace
    execution = WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
    described = await service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(namespace=namespace, execution=execution), retry=True
    )
    pending = next((p for p in described.pending_activities if p.activity_id == activity_id), None)
    if pending is None or not pending.last_failure.HasField("timeout_failure_info"):
        return []  # the attempt before failed with an error: its worker is alive, its cache is good
    targets = [execution]
    if described.workflow_execution_info.HasField("parent_execution"):
        targets.append(described.workflow_execution_info.parent_execution)
    await asyncio.gather(
        *(
            service.reset_sticky_task_queue(
                ResetStickyTaskQueueRequest(namespace=namespace, execution=target), retry=True
            )
            for target in targets
        )
    )
    reset = [target.workflow_id for target in targets]
    log.info("took over %s attempt %d: reset the sticky queues of %s", activity_id, activity.info().attempt, reset)
    return reset
