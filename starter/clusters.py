"""What the CLI asks of Temporal: start the entity, query it, send it updates, list clusters."""

from __future__ import annotations

import asyncio
import getpass
from typing import TYPE_CHECKING, Any

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
from starter import status_reader
from starter.errors import (
    ClusterExists,
    ClusterNotFound,
    RequestRefused,
    UserError,
)
from starter.status_reader import pending_retries, require_worker_on, status_query_error, within_connect_timeout
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

# The query names and timeouts ``tenantctl status`` uses too (it goes through starter.status_reader).
STATUS_QUERY = status_reader.STATUS_QUERY
CONNECT_TIMEOUT_SECONDS = status_reader.CONNECT_TIMEOUT_SECONDS
DESCRIBE_TIMEOUT = status_reader.DESCRIBE_TIMEOUT
QUERY_TIMEOUT = status_reader.QUERY_TIMEOUT


async def connect(settings: Settings, *, need_worker: bool = True) -> Client:
    """A Temporal client; with ``need_worker``, also the check that a worker polls the task queue,
    so a command that needs one says so in seconds instead of waiting for a reply that never comes."""
    client = await within_connect_timeout(settings, connect_temporal(settings))
    if need_worker:
        await require_worker(client, settings.temporal_task_queue)
    return client


async def require_worker(client: Client, task_queue: str) -> None:
    """Raise NoWorkerPolling unless a worker polled ``task_queue`` recently (Temporal's DescribeTaskQueue)."""
    await require_worker_on(client.service_client, client.namespace, task_queue)


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
    """The entity's status, with the running operation as its own workflow reports it.

    Unanswered within QUERY_TIMEOUT: WorkerDidNotAnswer (a worker that has just stopped, or none
    polls). The CLI does not guess sooner from the task queue's pollers: a live worker that holds
    the cluster on its sticky queue and is slow to answer looks the same there as a dead one."""
    handle = entity(client, cluster_id)
    try:
        status: ClusterStatus = await handle.query(STATUS_QUERY, result_type=ClusterStatus, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as exc:
        raise status_query_error(exc, cluster_id, await _task_queue_of(handle)) or exc from None
    if status.current is not None:
        status.current = await live_operation(client, status.current)
    return status


async def _task_queue_of(handle: WorkflowHandle[Any, Any]) -> str:
    try:
        return (await handle.describe(rpc_timeout=DESCRIBE_TIMEOUT)).task_queue
    except RPCError:
        return "of the cluster's workflow"


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


async def retrying_calls(client: Client, operation: OperationStatus | None) -> list[RetryingCall]:
    """The running operation's activities past their first attempt, with the error that failed the
    last one. Empty when nothing retries, nothing runs, or the server cannot be asked now."""
    if operation is None or not operation.workflow_id:
        return []
    try:
        described = await client.get_workflow_handle(operation.workflow_id).describe(rpc_timeout=DESCRIBE_TIMEOUT)
    except RPCError:
        return []  # not started yet, or the server is busy: the status itself is still the news
    return pending_retries(described.raw_description)


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
