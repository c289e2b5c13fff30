"""The product, driven through its own client paths: ``starter.clusters`` as ``tenantctl`` uses them.

Each function returns when the operation is over, as the CLI's ``--watch`` sees it, but without the
CLI's 0.5 s poll: a create waits on its child workflow's result (a long poll), then looks at the
entity's status every ``SETTLE_POLL`` seconds; updates (rotate, upgrade, delete) return with the
update's result.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from models.cluster import ClusterPhase, ClusterStatus, OperationKind
from models.naming import entity_workflow_id, operation_workflow_id
from models.operations import DeleteRequest, RotateCertificatesRequest, UpgradeRequest
from models.spec import ClusterSpec, parse_spec
from starter import clusters
from starter.errors import WorkerDidNotAnswer
from workflows.cluster import ClusterWorkflow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kvm-cluster.yaml"
VERSION, PATCH_VERSION = "1.32.4", "1.32.5"
SETTLE_POLL = 0.02
# Until the entity has started the create's child, looking for it again backs off to this: the
# child runs for seconds, so the long poll on its result still begins well before it ends, and
# the bench's own lookups no longer take the server's CPU from the creates it measures.
CHILD_LOOKUP_MAX = 0.25
CREATE_TIMEOUT = 1800.0  # generous: a bench on a loaded machine is slow, not failed
TRANSIENT_RETRY_SECONDS = 0.5
TRANSIENT_STATUSES = (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.RESOURCE_EXHAUSTED)
REQUESTED_BY = "bench"
SETTLED = (ClusterPhase.READY, ClusterPhase.FAILED)


class OperationFailed(RuntimeError):
    """The product did not finish an operation; the message says which and why."""


def cluster_spec(cluster_id: str) -> ClusterSpec:
    """The shipped KVM example (3 masters + 3 workers) under another id."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    data.update(id=cluster_id, kubernetes_version=VERSION)
    return parse_spec(data, str(EXAMPLE))


@dataclass
class Outcome:
    seconds: float
    events: int | None  # history events the operation added (entity + its child), None if unknown
    workflow_id: str | None = None  # the operation's child workflow (its history drives the raw replay)


async def history_length(client: Client, workflow_id: str) -> int | None:
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return None
    return int(description.raw_description.workflow_execution_info.history_length)


def transient(exc: RPCError) -> bool:
    """An overloaded server or worker (a query or long poll that timed out): worth asking again."""
    return exc.status in TRANSIENT_STATUSES or "timeout" in str(exc).lower()


async def _child_done(client: Client, workflow_id: str, deadline: float) -> None:
    child = client.get_workflow_handle(workflow_id)
    lookup = SETTLE_POLL
    while True:
        try:
            await child.result()
            return
        except WorkflowFailureError:
            return  # the status says how it ended
        except RPCError as exc:
            if time.monotonic() > deadline:
                raise
            if exc.status is RPCStatusCode.NOT_FOUND:
                await asyncio.sleep(lookup)  # the entity has not started it yet
                lookup = min(lookup * 2, CHILD_LOOKUP_MAX)
            elif transient(exc):
                await asyncio.sleep(TRANSIENT_RETRY_SECONDS)
            else:
                raise


async def _status(client: Client, cluster_id: str, deadline: float) -> ClusterStatus:
    while True:
        try:
            return await clusters.get_status(client, cluster_id)
        except RPCError as exc:
            if not transient(exc) or time.monotonic() > deadline:
                raise
        except WorkerDidNotAnswer:
            # 100 creates at once keep one worker busy for a minute: a query queued behind them
            # outlasts the CLI's 10 s. The bench asks again; what it measures is the creates.
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(TRANSIENT_RETRY_SECONDS)


async def status(client: Client, cluster_id: str) -> ClusterStatus:
    """The entity's status, riding out a busy server for up to a minute."""
    return await _status(client, cluster_id, time.monotonic() + 60)


async def wait_created(client: Client, cluster_id: str, timeout: float = CREATE_TIMEOUT) -> ClusterStatus:
    """Wait until the entity says the create is over (Ready, or Failed)."""
    deadline = time.monotonic() + timeout
    await _child_done(client, operation_workflow_id(cluster_id, OperationKind.CREATE, 1), deadline)
    while True:
        status = await _status(client, cluster_id, deadline)
        if status.current is None and status.phase in SETTLED:
            return status
        if time.monotonic() > deadline:
            raise OperationFailed(f"create of {cluster_id} not settled after {timeout:.0f}s: {status.phase}")
        await asyncio.sleep(SETTLE_POLL)


async def _finished(client: Client, cluster_id: str, seconds: float, entity_before: int) -> Outcome:
    """The outcome of the operation that just ended: its events (entity's added + child's) and child."""
    status = await _status(client, cluster_id, time.monotonic() + CREATE_TIMEOUT)
    child_id = status.recent[0].workflow_id if status.recent else None
    entity_after = await history_length(client, entity_workflow_id(cluster_id))
    child = await history_length(client, child_id) if child_id else None
    events = None if entity_after is None or child is None else entity_after - entity_before + child
    return Outcome(seconds, events, child_id)


async def _start(client: Client, spec: ClusterSpec, task_queue: str, deadline: float) -> None:
    retried = False
    while True:
        try:
            await clusters.start_cluster(client, spec, task_queue)
            return
        except clusters.ClusterExists:
            if retried:  # the attempt that timed out did start it
                return
            raise
        except RPCError as exc:
            if not transient(exc) or time.monotonic() > deadline:
                raise
            retried = True
            await asyncio.sleep(TRANSIENT_RETRY_SECONDS)


async def create(client: Client, cluster_id: str, task_queue: str, count_events: bool = True) -> Outcome:
    """Start a create and wait until the entity says Ready. ``count_events=False`` (K creates at once)
    returns then, without the status query and describes that count its events and find its child:
    bookkeeping of the bench, not part of a create, that would run inside the measured window."""
    began = time.monotonic()
    await _start(client, cluster_spec(cluster_id), task_queue, began + CREATE_TIMEOUT)
    status = await wait_created(client, cluster_id)
    seconds = time.monotonic() - began
    if status.phase is not ClusterPhase.READY:
        raise OperationFailed(f"create of {cluster_id} ended {status.phase}: {status.message}")
    if not count_events:
        return Outcome(seconds, None, None)
    return await _finished(client, cluster_id, seconds, 0)


async def _update(client: Client, cluster_id: str, method: Any, request: Any) -> Outcome:
    before = await history_length(client, entity_workflow_id(cluster_id)) or 0
    began = time.monotonic()
    try:
        await clusters.update(client, cluster_id, method, request)
    except clusters.UserError as exc:
        raise OperationFailed(f"{cluster_id}: {exc}") from None
    seconds = time.monotonic() - began
    return await _finished(client, cluster_id, seconds, before)


async def forced_rotation(client: Client, cluster_id: str) -> Outcome:
    request = RotateCertificatesRequest(force=True, requested_by=REQUESTED_BY)
    return await _update(client, cluster_id, ClusterWorkflow.rotate_certificates, request)


async def patch_upgrade(client: Client, cluster_id: str) -> Outcome:
    request = UpgradeRequest(version=PATCH_VERSION, requested_by=REQUESTED_BY)
    return await _update(client, cluster_id, ClusterWorkflow.upgrade, request)


async def teardown(client: Client, cluster_id: str) -> Outcome:
    return await _update(client, cluster_id, ClusterWorkflow.delete, DeleteRequest(requested_by=REQUESTED_BY))


# --- drift check and fleet rollout ----------------------------------------------------------------------
@dataclass
class CheckOutcome:
    """One on-demand drift check (the entity's ``reconcile`` update) of a cluster."""

    seconds: float
    entity_events: int | None  # events the check added to the entity's history
    child_events: int | None  # the check's own (child) workflow history
    activities: int | None  # activities the check scheduled
    in_sync: bool


async def activities_of(client: Client, workflow_id: str) -> int | None:
    """How many activities a workflow's history scheduled."""
    from temporalio.api.enums.v1 import EventType

    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError:
        return None
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)


async def drift_check(client: Client, cluster_id: str) -> CheckOutcome:
    """A drift check of a cluster, as ``tenantctl reconcile`` asks for it (waits behind a running operation)."""
    from models.reconcile import ReconcileRequest, ReconcileResult

    entity_id = entity_workflow_id(cluster_id)
    before = await history_length(client, entity_id)
    began = time.monotonic()
    try:
        result: ReconcileResult = await clusters.update(
            client, cluster_id, ClusterWorkflow.reconcile, ReconcileRequest(requested_by=REQUESTED_BY)
        )
    except clusters.UserError as exc:
        raise OperationFailed(f"drift check of {cluster_id}: {exc}") from None
    seconds = time.monotonic() - began
    after = await history_length(client, entity_id)
    child_id = result.operation.workflow_id if result.operation else None
    child = await history_length(client, child_id) if child_id else None
    activities = await activities_of(client, child_id) if child_id else None
    added = None if before is None or after is None else after - before
    return CheckOutcome(seconds, added, child, activities, result.in_sync)


@dataclass
class RolloutOutcome:
    seconds: float
    events: int | None  # the fleet workflow's own history
    succeeded: int
    failures: list[str]


async def fleet_upgrade(
    client: Client, cluster_ids: list[str], task_queue: str, workflow_id: str, parallel: int
) -> RolloutOutcome:
    """A fleet rollout of the patch upgrade over ``cluster_ids``, started as ``tenantctl fleet upgrade`` does."""
    from models.fleet import FleetOperation, FleetRolloutInput, FleetRolloutResult, RolloutClusterState
    from workflows.fleet import FleetRolloutWorkflow

    rollout = FleetRolloutInput(
        operation=FleetOperation.UPGRADE,
        version=PATCH_VERSION,
        cluster_ids=cluster_ids,
        selection="bench",
        parallel=parallel,
        max_failures=len(cluster_ids),
        requested_by=REQUESTED_BY,
    )
    began = time.monotonic()
    result: FleetRolloutResult = await client.execute_workflow(
        FleetRolloutWorkflow.run, rollout, id=workflow_id, task_queue=task_queue
    )
    seconds = time.monotonic() - began
    events = await history_length(client, workflow_id)
    done = result.status.in_state(RolloutClusterState.SUCCEEDED)
    failures = [
        f"fleet upgrade of {c.cluster_id}: {c.state}: {c.reason}"
        for c in result.status.clusters
        if c.state is not RolloutClusterState.SUCCEEDED
    ]
    return RolloutOutcome(seconds, events, len(done), failures)
