"""``tenantctl status``: a cluster's status through Temporal's service API alone.

The command needs a handful of RPCs (is a worker polling, the entity's ``status`` query, and for a
running operation its ``progress`` query and its pending activities) and two JSON payloads. The
high-level ``temporalio.client`` (converters, nexus, activity and workflow machinery) costs about
0.3 s of CPU to import, more than the rest of the command; ``temporalio.service`` and pydantic do it.
The independent calls run side by side on one connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from models.cluster import ClusterStatus, OperationStatus, RetryingCall
from models.naming import entity_workflow_id
from starter.errors import ClusterNotFound, NoWorkerPolling, TemporalUnreachable, WorkerDidNotAnswer

if TYPE_CHECKING:
    from temporalio.api.failure.v1 import Failure
    from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionResponse
    from temporalio.service import RPCError, ServiceClient

    from config.settings import Settings

ModelT = TypeVar("ModelT", bound=BaseModel)
ClientT = TypeVar("ClientT")

STATUS_QUERY = "status"
"""``ClusterWorkflow.get_status``'s query name (a test holds the two equal)."""
PROGRESS_QUERY = "progress"
"""``workflows.names.PROGRESS_QUERY`` (a test holds the two equal; the workflows are not imported here)."""
CONNECT_TIMEOUT_SECONDS = 10.0
"""A Temporal frontend that takes longer than this to accept a connection is reported unreachable."""
DESCRIBE_TIMEOUT = timedelta(seconds=5)
QUERY_TIMEOUT = timedelta(seconds=10)
"""A worker answers a status query in milliseconds; this long means none is there to answer."""
POLLER_STALE_SECONDS = 90.0
"""A live worker's long polls return and renew at least every ~70 s; a poller older than this is gone."""
LAST_ERROR_SHOWN = 200
"""A backend's error can be long (a whole HTTP body): this much of it is shown."""


async def connect_service(settings: Settings) -> ServiceClient:
    """Temporal's service client, with the settings' TLS and API key (as the full client connects)."""
    from temporalio.service import ServiceClient

    from worker.clients import temporal_connect_config

    return await within_connect_timeout(settings, ServiceClient.connect(temporal_connect_config(settings)))


async def within_connect_timeout(settings: Settings, connecting: Awaitable[ClientT]) -> ClientT:
    """``connecting``, or TemporalUnreachable when the frontend does not accept it in time."""
    try:
        return await asyncio.wait_for(connecting, timeout=CONNECT_TIMEOUT_SECONDS)
    except TimeoutError:
        raise TemporalUnreachable(
            settings.temporal_address, f"no answer within {CONNECT_TIMEOUT_SECONDS:.0f}s"
        ) from None
    except RuntimeError as exc:
        raise TemporalUnreachable(settings.temporal_address, str(exc)) from None


def status_query_error(exc: RPCError, cluster_id: str, task_queue: str) -> Exception | None:
    """What a failed status query means to a person, or None when it is none of the known cases."""
    from temporalio.service import RPCStatusCode

    if exc.status is RPCStatusCode.NOT_FOUND:
        return ClusterNotFound(cluster_id)
    if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        return WorkerDidNotAnswer(QUERY_TIMEOUT.total_seconds())
    if exc.status is RPCStatusCode.FAILED_PRECONDITION and "poller" in exc.message:
        # the server's own "no poller seen for task queue recently, worker may be down"
        return NoWorkerPolling(task_queue, f" ({exc.message})")
    return None


async def require_worker_on(service: ServiceClient, namespace: str, task_queue: str) -> None:
    """Raise NoWorkerPolling unless a worker polled ``task_queue`` recently (Temporal's DescribeTaskQueue)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.service import RPCError, RPCStatusCode

    request = DescribeTaskQueueRequest(
        namespace=namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    try:
        described = await service.workflow_service.describe_task_queue(request, retry=True, timeout=DESCRIBE_TIMEOUT)
    except RPCError as exc:
        if exc.status is RPCStatusCode.UNIMPLEMENTED:
            return  # a server without it (the time-skipping test server): the query timeout still bounds waits
        raise
    now = time.time()
    ages = [now - poller.last_access_time.ToSeconds() for poller in described.pollers]
    if not any(age < POLLER_STALE_SECONDS for age in ages):
        detail = f" (the last poll was {min(ages):.0f}s ago)" if ages else ""
        raise NoWorkerPolling(task_queue, detail)


async def _query(
    service: ServiceClient, namespace: str, workflow_id: str, query: str, result_type: type[ModelT]
) -> ModelT:
    """A workflow query by name, its JSON result read as ``result_type`` (what pydantic_data_converter wrote)."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.query.v1 import WorkflowQuery
    from temporalio.api.workflowservice.v1 import QueryWorkflowRequest

    request = QueryWorkflowRequest(
        namespace=namespace,
        execution=WorkflowExecution(workflow_id=workflow_id),
        query=WorkflowQuery(query_type=query),
    )
    # retry=True: the SDK's own call retries (as WorkflowHandle.query has them), jittered, for at most
    # ~10 s. They ride out RESOURCE_EXHAUSTED "consistent query buffer is full": while a workflow
    # task of the entity is in flight the server holds one query back and refuses the next (a second
    # `status`, the worker's metrics refresh and a watch polling at once). A timeout is not retried.
    response = await service.workflow_service.query_workflow(request, retry=True, timeout=QUERY_TIMEOUT)
    if response.HasField("query_rejected"):
        raise LookupError(f"query {query} of {workflow_id} rejected: workflow status {response.query_rejected.status}")
    return result_type.model_validate_json(response.query_result.payloads[0].data)


async def read_status(settings: Settings, cluster_id: str) -> tuple[ClusterStatus, list[RetryingCall]]:
    """The cluster's status (the running operation as its own workflow reports it) and its retrying calls."""
    from temporalio.service import RPCError

    service = await connect_service(settings)
    namespace = settings.temporal_namespace
    # Both at once: a missing worker is said in the describe's time, not after the query's timeout.
    polling = asyncio.ensure_future(require_worker_on(service, namespace, settings.temporal_task_queue))
    asked = asyncio.ensure_future(
        _query(service, namespace, entity_workflow_id(cluster_id), STATUS_QUERY, ClusterStatus)
    )
    try:
        await polling
        status = await asked
    except RPCError as exc:
        raise status_query_error(exc, cluster_id, settings.temporal_task_queue) or exc from None
    finally:
        if not asked.done():
            asked.cancel()
        elif not asked.cancelled():
            asked.exception()  # retrieved: a failure after a refusal above is not news
    if status.current is None or not status.current.workflow_id:
        return status, []
    live, retrying = await asyncio.gather(
        _live_operation(service, namespace, status.current), _retrying(service, namespace, status.current)
    )
    status.current = live
    return status, retrying


async def _live_operation(service: ServiceClient, namespace: str, recorded: OperationStatus) -> OperationStatus:
    """The running operation as its own workflow reports it (every step and the progress): the
    entity is told only of pauses, resumes and the outcome, so its record lags behind."""
    from temporalio.service import RPCError

    try:
        live = await _query(service, namespace, recorded.workflow_id, PROGRESS_QUERY, OperationStatus)
    except (RPCError, LookupError, ValueError):
        return recorded  # not started yet, or just finished: the entity's record is the news
    return recorded.refreshed(live)


async def _retrying(service: ServiceClient, namespace: str, operation: OperationStatus) -> list[RetryingCall]:
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
    from temporalio.service import RPCError

    request = DescribeWorkflowExecutionRequest(
        namespace=namespace, execution=WorkflowExecution(workflow_id=operation.workflow_id)
    )
    try:
        described = await service.workflow_service.describe_workflow_execution(
            request, retry=True, timeout=DESCRIBE_TIMEOUT
        )
    except RPCError:
        return []  # not started yet, or the server is busy: the status itself is still the news
    return pending_retries(described)


def pending_retries(described: DescribeWorkflowExecutionResponse) -> list[RetryingCall]:
    """A workflow's activities past their first attempt, with the error that failed the last one."""
    calls = []
    for pending in described.pending_activities:
        if pending.attempt <= 1:
            continue
        error = innermost_message_of(pending.last_failure) if pending.HasField("last_failure") else ""
        if len(error) > LAST_ERROR_SHOWN:
            error = error[: LAST_ERROR_SHOWN - 1] + "…"
        calls.append(
            RetryingCall(
                activity=pending.activity_type.name,
                activity_id=pending.activity_id,
                attempt=pending.attempt,
                last_error=error or "(no error recorded)",
                next_retry=pending.next_attempt_schedule_time.ToDatetime(tzinfo=UTC)
                if pending.HasField("next_attempt_schedule_time")
                else None,
            )
        )
    return calls


def innermost_message_of(failure: Failure) -> str:
    """The deepest cause's message of a failure (the activity's own error, not 'activity failed')."""
    while failure.HasField("cause") and failure.cause.message:
        failure = failure.cause
    return str(failure.message)
