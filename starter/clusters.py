"""What the CLI asks of Temporal: start the entity, query it, send it updates, list clusters."""

from __future__ import annotations

import getpass
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from models.cluster import ClusterPhase, ClusterStatus, OperationStatus
from models.durations import format_duration
from models.errors import innermost_message
from models.naming import entity_workflow_id
from models.operations import ClusterInput
from models.spec import ClusterSpec
from workflows import search_attributes as sa
from workflows.cluster import ClusterWorkflow
from workflows.names import PROGRESS_QUERY


class UserError(Exception):
    """An error the user can act on: printed as one line, exit code 1, no traceback."""


class ClusterNotFound(UserError, LookupError):
    def __init__(self, cluster_id: str) -> None:
        super().__init__(f"cluster {cluster_id} not found (no workflow {entity_workflow_id(cluster_id)})")


class ClusterExists(UserError):
    def __init__(self, cluster_id: str) -> None:
        super().__init__(
            f"cluster {cluster_id} already exists (workflow {entity_workflow_id(cluster_id)} is running); "
            f"nothing was created. See 'tenantctl status {cluster_id}'."
        )


class RequestRefused(UserError):
    """The entity refused an update; the message says why (and nothing changed)."""


def whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def start_cluster(client: Client, spec: ClusterSpec, task_queue: str) -> WorkflowHandle[Any, Any]:
    """Start the cluster's entity workflow; a running one with the same id is an error, not a no-op."""
    from temporalio.exceptions import WorkflowAlreadyStartedError

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
    handle = entity(client, cluster_id)
    try:
        status: ClusterStatus = await handle.query(ClusterWorkflow.get_status)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ClusterNotFound(cluster_id) from None
        raise
    if status.current is not None:
        status.current = await live_operation(client, status.current)
    return status


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


async def list_clusters(client: Client, include_closed: bool = False) -> list[dict[str, str]]:
    """One row per cluster, from search attributes alone (no query per cluster)."""
    query = 'WorkflowType = "Cluster"'
    if not include_closed:
        query += ' AND ExecutionStatus = "Running"'
    rows: list[dict[str, str]] = []
    async for execution in client.list_workflows(query):
        attrs = execution.typed_search_attributes
        rows.append(
            {
                "id": attrs.get(sa.CLUSTER_ID) or execution.id.removeprefix("cluster/"),
                "owner": attrs.get(sa.CLUSTER_OWNER) or "",
                "provider": attrs.get(sa.CLUSTER_PROVIDER) or "",
                "version": attrs.get(sa.KUBERNETES_VERSION) or "",
                "phase": attrs.get(sa.CLUSTER_PHASE) or "",
                "workflow": execution.id,
                "running": "yes" if execution.status is WorkflowExecutionStatus.RUNNING else "no",
                "started": execution.start_time.isoformat(timespec="seconds"),
            }
        )
    return sorted(rows, key=lambda r: (r["id"], r["started"]))
