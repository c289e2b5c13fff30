"""What the CLI asks of Temporal: start the entity, query it, send it updates, list clusters."""

from __future__ import annotations

import asyncio
import getpass
import time
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.failure.v1 import Failure
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from models.cluster import ClusterPhase, ClusterStatus, OperationStatus, RetryingCall
from models.durations import format_duration
from models.errors import innermost_message
from models.naming import entity_workflow_id
from starter.errors import (
    ClusterExists,
    ClusterNotFound,
    NoWorkerPolling,
    RequestRefused,
    TemporalUnreachable,
    UserError,
    WorkerDidNotAnswer,
)
from worker.clients import connect_temporal
from workflows.names import PROGRESS_QUERY

if TYPE_CHECKING:
    from config.settings import Settings
    from models.spec import ClusterSpec

__all__ = [
    "ClusterExists",
    "ClusterNotFound",
    "RequestRefused",
    "RetryingCall",
    "UserError",
    "connect",
    "entity",
    "get_status",
    "list_clusters",
    "require_worker",
    "retrying_calls",
    "start_cluster",
    "update",
    "whoami",
]

STATUS_QUERY = "status"
"""``ClusterWorkflow.get_status``'s query name: ``status`` sends it by name, so that the command does not
import the workflow modules (a test holds the two equal)."""
CONNECT_TIMEOUT_SECONDS = 10.0
"""A Temporal frontend that takes longer than this to accept a connection is reported unreachable."""
DESCRIBE_TIMEOUT = timedelta(seconds=5)
QUERY_TIMEOUT = timedelta(seconds=10)
"""A worker answers a status query in milliseconds; this long means none is there to answer."""
FIRST_LOOK = timedelta(seconds=3)
"""How long a status query waits before the CLI asks Temporal whether any worker took it. A live
worker answers in milliseconds; one that has just stopped still shows in DescribeTaskQueue for a
minute (a poller's last access is when its last long poll began, and an idle worker's polls last up
to ~60 s), so the poller list alone cannot tell it from an idle live one: a poll since the question
was asked can."""
POLL_CLOCK_SLACK_SECONDS = 1.0
"""The server's clock and this machine's may differ a little: a poll this much before the question
still counts as one after it (a false "alive" only means waiting the rest of QUERY_TIMEOUT)."""
POLLER_STALE_SECONDS = 90.0
"""A live worker's long polls return and renew at least every ~70 s; a poller older than this is gone."""


async def connect(settings: Settings, *, need_worker: bool = True) -> Client:
    """A Temporal client; with ``need_worker``, also the check that a worker polls the task queue,
    so a command that needs one says so in seconds instead of waiting for a reply that never comes."""
    try:
        client = await asyncio.wait_for(connect_temporal(settings), timeout=CONNECT_TIMEOUT_SECONDS)
    except TimeoutError:
        raise TemporalUnreachable(
            settings.temporal_address, f"no answer within {CONNECT_TIMEOUT_SECONDS:.0f}s"
        ) from None
    except RuntimeError as exc:
        raise TemporalUnreachable(settings.temporal_address, str(exc)) from None
    if need_worker:
        await require_worker(client, settings.temporal_task_queue)
    return client


async def require_worker(client: Client, task_queue: str) -> None:
    """Raise NoWorkerPolling unless a worker polled ``task_queue`` recently (Temporal's DescribeTaskQueue)."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    try:
        described = await client.workflow_service.describe_task_queue(request, timeout=DESCRIBE_TIMEOUT)
    except RPCError as exc:
        if exc.status is RPCStatusCode.UNIMPLEMENTED:
            return  # a server without it (the time-skipping test server): the query timeout still bounds waits
        raise
    now = time.time()
    ages = [now - poller.last_access_time.ToSeconds() for poller in described.pollers]
    if not any(age < POLLER_STALE_SECONDS for age in ages):
        detail = f" (the last poll was {min(ages):.0f}s ago)" if ages else ""
        raise NoWorkerPolling(task_queue, detail)


def whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def start_cluster(client: Client, spec: ClusterSpec, task_queue: str) -> WorkflowHandle[Any, Any]:
    """Start the cluster's entity workflow; a running one with the same id is an error, not a no-op."""
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from models.operations import ClusterInput
    from workflows import search_attributes as sa
    from workflows.cluster import ClusterWorkflow

    try:
        return await client.start_workflow(
            ClusterWorkflow.run,
            ClusterInput(spec=spec, requested_by=whoami()),
            id=entity_workflow_id(spec.id),
            task_queue=task_queue,
            # A deleted cluster's id may be used again; a live one may not.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=sa.for_cluster(
                spec.id, spec.provider, spec.owner, spec.kubernetes_version, ClusterPhase.PROVISIONING
            ),
            static_summary=f"Tenant cluster {spec.id} ({spec.provider}, Kubernetes {spec.kubernetes_version})",
            static_details=(
                f"owner **{spec.owner}** · API `{spec.api_domain}` · {spec.masters.count} masters, "
                f"{spec.workers.count} workers · certificates: TTL {format_duration(spec.certificates.ttl)}, "
                f"rotated every {format_duration(spec.certificates.rotation_interval)}"
            ),
        )
    except WorkflowAlreadyStartedError:
        raise ClusterExists(spec.id) from None


def entity(client: Client, cluster_id: str) -> WorkflowHandle[Any, Any]:
    return client.get_workflow_handle(entity_workflow_id(cluster_id))


async def get_status(client: Client, cluster_id: str) -> ClusterStatus:
    """The entity's status (its ``status`` query), with the running operation's live progress.

    When no worker answers within FIRST_LOOK and none has polled the entity's task queue since the
    question was asked, raises NoWorkerPolling (a worker that just stopped, or none at all) instead
    of waiting the whole QUERY_TIMEOUT."""
    handle = entity(client, cluster_id)
    asked_at = time.time()
    try:
        status = await _query_status(handle, cluster_id, FIRST_LOOK)
    except WorkerDidNotAnswer:
        await _require_poll_since(client, handle, asked_at)
        status = await _query_status(handle, cluster_id, QUERY_TIMEOUT - FIRST_LOOK)
    if status.current is not None:
        status.current = await live_operation(client, status.current)
    return status


async def _query_status(handle: WorkflowHandle[Any, Any], cluster_id: str, timeout: timedelta) -> ClusterStatus:
    try:
        status: ClusterStatus = await handle.query(STATUS_QUERY, result_type=ClusterStatus, rpc_timeout=timeout)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ClusterNotFound(cluster_id) from None
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            raise WorkerDidNotAnswer(QUERY_TIMEOUT.total_seconds()) from None
        raise
    return status


async def _require_poll_since(client: Client, handle: WorkflowHandle[Any, Any], asked_at: float) -> None:
    """Raise NoWorkerPolling unless a worker polled the entity's task queue after ``asked_at``.

    A live worker handed the query polls again at once (a new long poll, a fresh last access);
    a dead one does not. Unanswered after FIRST_LOOK with no poll since: nobody is there."""
    try:
        task_queue = (await handle.describe(rpc_timeout=DESCRIBE_TIMEOUT)).task_queue
        request = DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        described = await client.workflow_service.describe_task_queue(request, timeout=DESCRIBE_TIMEOUT)
    except RPCError as exc:
        if exc.status is RPCStatusCode.UNIMPLEMENTED:
            return  # a server without it (the time-skipping test server): wait for the query
        raise
    last_polls = [poller.last_access_time.ToSeconds() for poller in described.pollers]
    if any(last >= asked_at - POLL_CLOCK_SLACK_SECONDS for last in last_polls):
        return  # a worker took it and is slow to answer: wait the rest
    waited = time.time() - asked_at
    detail = f" (no worker took a status query within {waited:.0f}s"
    detail += f"; the last poll was {time.time() - max(last_polls):.0f}s ago)" if last_polls else ")"
    raise NoWorkerPolling(task_queue, detail)


async def live_operation(client: Client, recorded: OperationStatus) -> OperationStatus:
    """The running operation as its own workflow reports it (every step and the progress): the
    entity is told only of pauses, resumes and the outcome, so its record lags behind."""
    try:
        live: OperationStatus = await client.get_workflow_handle(recorded.workflow_id).query(
            PROGRESS_QUERY, result_type=OperationStatus
        )
    except (RPCError, WorkflowQueryFailedError):
        return recorded  # not started yet, or just finished: the entity's record is the news
    return recorded.refreshed(live)


LAST_ERROR_SHOWN = 200
"""A backend's error can be long (a whole HTTP body): this much of it is shown."""


async def retrying_calls(client: Client, operation: OperationStatus | None) -> list[RetryingCall]:
    """The running operation's activities past their first attempt, with the error that failed the
    last one. Empty when nothing retries, nothing runs, or the server cannot be asked now."""
    if operation is None or not operation.workflow_id:
        return []
    try:
        described = await client.get_workflow_handle(operation.workflow_id).describe(rpc_timeout=DESCRIBE_TIMEOUT)
    except RPCError:
        return []  # not started yet, or the server is busy: the status itself is still the news
    calls = []
    for pending in described.raw_description.pending_activities:
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


async def update(client: Client, cluster_id: str, method: Any, request: Any) -> Any:
    """Run an update on the entity and wait for its result; refusals become RequestRefused."""
    try:
        return await entity(client, cluster_id).execute_update(method, request)
    except WorkflowUpdateFailedError as exc:
        raise RequestRefused(innermost_message(exc)) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ClusterNotFound(cluster_id) from None
        raise


LIST_QUERIES_AT_ONCE = 16
"""Entities without the list memo (started before it) are asked by query, this many at a time."""


async def list_clusters(client: Client, include_closed: bool = False, where: str | None = None) -> list[dict[str, str]]:
    """One row per cluster, from its visibility row: search attributes and the entity's memo
    (current operation, earliest expiry, last drift check). Only an entity without that memo (from
    before it) is asked by query. ``where`` narrows the list (the Temporal UI's query language)."""
    from workflows import search_attributes as sa

    query = 'WorkflowType = "Cluster"'
    if not include_closed:
        query += ' AND ExecutionStatus = "Running"'
    if where and where.strip():
        query += f" AND ({where.strip()})"
    rows: list[dict[str, str]] = []
    unremembered: list[dict[str, str]] = []
    try:
        async for execution in client.list_workflows(query):
            attrs = execution.typed_search_attributes
            memo = await execution.memo()
            running = execution.status is WorkflowExecutionStatus.RUNNING
            row = {
                "id": attrs.get(sa.CLUSTER_ID) or execution.id.removeprefix("cluster/"),
                "owner": attrs.get(sa.CLUSTER_OWNER) or "",
                "provider": attrs.get(sa.CLUSTER_PROVIDER) or "",
                "version": attrs.get(sa.KUBERNETES_VERSION) or "",
                "phase": attrs.get(sa.CLUSTER_PHASE) or "",
                "operation": str(memo.get("operation", "")),
                "earliest_expiry": str(memo.get("earliest_expiry", "")),
                "last_check": str(memo.get("last_check", "")),
                "last_check_outcome": str(memo.get("last_check_outcome", "") or attrs.get(sa.DRIFT_CHECK) or ""),
                "workflow": execution.id,
                "running": "yes" if running else "no",
                "started": execution.start_time.isoformat(timespec="seconds"),
            }
            rows.append(row)
            if running and "earliest_expiry" not in memo:
                unremembered.append(row)
    except RPCError as exc:
        if exc.status is RPCStatusCode.INVALID_ARGUMENT:
            raise UserError(f"--where is not a valid visibility query: {exc.message}") from None
        raise
    await _fill_from_status(client, unremembered)
    return sorted(rows, key=lambda r: (r["id"], r["started"]))


async def _fill_from_status(client: Client, rows: list[dict[str, str]]) -> None:
    """Ask the entities that keep no list memo (started before it) for what the memo would say."""
    gate = asyncio.Semaphore(LIST_QUERIES_AT_ONCE)

    async def fill(row: dict[str, str]) -> None:
        async with gate:
            try:
                status = await entity(client, row["id"]).query(
                    STATUS_QUERY, result_type=ClusterStatus, rpc_timeout=DESCRIBE_TIMEOUT
                )
            except (RPCError, WorkflowQueryFailedError):
                return  # no worker answers now: the row keeps what visibility has
        current, check = status.current, status.last_check
        row["operation"] = f"{current.kind} ({current.state})" if current else ""
        row["earliest_expiry"] = status.earliest_expiry.isoformat() if status.earliest_expiry else ""
        row["last_check"] = check.at.isoformat() if check else ""
        row["last_check_outcome"] = str(check.outcome) if check else row["last_check_outcome"]

    await asyncio.gather(*(fill(r) for r in rows))
