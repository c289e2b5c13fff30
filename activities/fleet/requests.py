"""A fleet rollout's requests to the cluster entities (Temporal itself is the backend, so ``async``).

Workflows cannot send updates to other workflows, so the fleet workflow asks through these: an
entity's ``status`` query, its operation updates (``upgrade``, ``rotate_certificates``,
``rotate_ca``) and ``control_upgrade`` to abort. Each request carries a deterministic update id,
so a retried activity re-attaches to the update already running instead of starting another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

from models.cluster import ClusterStatus, OperationState
from models.errors import innermost_message
from models.fleet import (
    AbortClusterInput,
    AbortClusterResult,
    ClusterOperationOutcome,
    ClusterOperationRequest,
    ClusterSnapshot,
    DescribeClustersInput,
    DescribeClustersResult,
    FleetOperation,
)
from models.naming import entity_workflow_id
from models.operations import (
    RotateCaRequest,
    RotateCaResult,
    RotateCertificatesRequest,
    RotateCertificatesResult,
    UpgradeAction,
    UpgradeControl,
    UpgradeControlResult,
    UpgradeOutcome,
    UpgradeRequest,
    UpgradeResult,
)

HEARTBEAT_EVERY = timedelta(seconds=5)
PAUSE_POLL = timedelta(seconds=2)
"""How often a waiting request looks whether the entity's operation paused (it then waits for people)."""

# The entity's update and query names (workflows/cluster.py).
STATUS_QUERY = "status"
UPDATE_OF_OPERATION = {
    FleetOperation.UPGRADE: "upgrade",
    FleetOperation.ROTATE_CERTIFICATES: "rotate_certificates",
    FleetOperation.ROTATE_CA: "rotate_ca",
}
CONTROL_UPGRADE_UPDATE = "control_upgrade"


class FleetRequests:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name="fleet.describe_clusters")
    async def describe_clusters(self, input: DescribeClustersInput) -> DescribeClustersResult:
        """Each cluster's entity status, as a snapshot the rollout plans with."""
        snapshots = await asyncio.gather(*(self._snapshot(cid) for cid in input.cluster_ids))
        return DescribeClustersResult(clusters=list(snapshots))

    async def _snapshot(self, cluster_id: str) -> ClusterSnapshot:
        handle = self.client.get_workflow_handle(entity_workflow_id(cluster_id))
        try:
            status: ClusterStatus = await handle.query(STATUS_QUERY, result_type=ClusterStatus)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return ClusterSnapshot(cluster_id=cluster_id, found=False)
            raise
        return ClusterSnapshot.from_status(status)

    @activity.defn(name="fleet.request_operation")
    async def request_operation(self, request: ClusterOperationRequest) -> ClusterOperationOutcome:
        """Ask one entity for the operation and wait for its outcome (heartbeating while it runs)."""
        handle = self.client.get_workflow_handle(entity_workflow_id(request.cluster_id))
        update, argument, result_type = _update_of(request)
        async with _heartbeating(f"waiting for {request.cluster_id} to {request.operation}"):
            try:
                # Same id on a retry: the entity hands back the update already running, not a new one.
                running = await handle.start_update(
                    update, argument, id=request.request_id, result_type=result_type,
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                )  # fmt: skip
                paused = await _paused_or_done(handle, running, request.requested_by)
                if paused is not None:
                    # The upgrade waits for an operator (``tenantctl upgrade resume|abort``); for the
                    # rollout it did not succeed, and counts against the failure budget.
                    return ClusterOperationOutcome(
                        cluster_id=request.cluster_id,
                        succeeded=False,
                        paused=True,
                        message=f"upgrade paused, waiting for an operator: {paused}",
                    )
                result: BaseModel = await running.result()
            except WorkflowUpdateFailedError as exc:
                # Refused by the entity or failed while running: the rollout's data, not a retry.
                return ClusterOperationOutcome(
                    cluster_id=request.cluster_id, succeeded=False, message=innermost_message(exc)
                )
            except RPCError as exc:
                if exc.status is RPCStatusCode.NOT_FOUND:
                    return ClusterOperationOutcome(
                        cluster_id=request.cluster_id,
                        succeeded=False,
                        message=f"no cluster entity workflow runs for {request.cluster_id}",
                    )
                raise
        if isinstance(result, UpgradeResult):
            aborted = result.outcome is UpgradeOutcome.ABORTED
            return ClusterOperationOutcome(
                cluster_id=request.cluster_id,
                succeeded=not aborted,
                aborted=aborted,
                message=f"aborted: rolled back to Kubernetes {result.kubernetes_version}" if aborted else "",
                kubernetes_version=result.kubernetes_version,
            )
        return ClusterOperationOutcome(cluster_id=request.cluster_id, succeeded=True)

    @activity.defn(name="fleet.abort_upgrade")
    async def abort_upgrade(self, input: AbortClusterInput) -> AbortClusterResult:
        """Ask a cluster's running upgrade to abort (it rolls back); none running is not an error."""
        handle = self.client.get_workflow_handle(entity_workflow_id(input.cluster_id))
        try:
            await handle.execute_update(
                CONTROL_UPGRADE_UPDATE,
                UpgradeControl(action=UpgradeAction.ABORT, reason=input.reason),
                result_type=UpgradeControlResult,
            )
        except WorkflowUpdateFailedError as exc:
            return AbortClusterResult(cluster_id=input.cluster_id, sent=False, message=innermost_message(exc))
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return AbortClusterResult(cluster_id=input.cluster_id, sent=False, message="no entity workflow")
            raise
        return AbortClusterResult(cluster_id=input.cluster_id, sent=True)


async def _paused_or_done(
    handle: WorkflowHandle[Any, Any], running: WorkflowUpdateHandle[Any], requested_by: str
) -> str | None:
    """Wait for the update; the pause message if the operation it started pauses first."""
    outcome = asyncio.ensure_future(running.result())
    try:
        while True:
            done, _ = await asyncio.wait({outcome}, timeout=PAUSE_POLL.total_seconds())
            if done:
                return None
            status: ClusterStatus = await handle.query(STATUS_QUERY, result_type=ClusterStatus)
            op = status.current
            if op is not None and op.state is OperationState.PAUSED and op.requested_by == requested_by:
                return op.message or "paused"
    finally:
        if not outcome.done():
            outcome.cancel()
            with contextlib.suppress(asyncio.CancelledError, WorkflowUpdateRPCTimeoutOrCancelledError):
                await outcome
        else:
            # Retrieve the outcome so a failure is not reported as never retrieved; the caller
            # reads it again from the handle.
            with contextlib.suppress(Exception):
                outcome.result()


def _update_of(request: ClusterOperationRequest) -> tuple[str, Any, type[BaseModel]]:
    """The entity's update for the request. The rollout asks once the cluster's window is open;
    the entity checks again (its spec may have changed) and waits if it closed meanwhile."""
    by, override = request.requested_by, request.maintenance_override
    if request.operation is FleetOperation.UPGRADE:
        if request.version is None:
            raise ValueError("an upgrade request needs a version")
        upgrade = UpgradeRequest(
            version=request.version,
            requested_by=by,
            node_ready_timeout=request.node_ready_timeout,
            maintenance_override=override,
        )
        return UPDATE_OF_OPERATION[request.operation], upgrade, UpgradeResult
    if request.operation is FleetOperation.ROTATE_CA:
        rotate_ca = RotateCaRequest(requested_by=by, maintenance_override=override)
        return UPDATE_OF_OPERATION[request.operation], rotate_ca, RotateCaResult
    return (
        UPDATE_OF_OPERATION[request.operation],
        RotateCertificatesRequest(force=request.force, requested_by=by, in_window=override is None),
        RotateCertificatesResult,
    )


@contextlib.asynccontextmanager
async def _heartbeating(detail: str) -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            activity.heartbeat(detail)
            await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
