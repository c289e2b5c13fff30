"""The entity's periodic drift check as workflow logic (time-skipping server, activities replaced by
name): an in-sync check observes from the entity (its own activities side by side, no child) and
shows as the last check; a drifted one starts the reconcile child, which repairs; an observe that
fails makes the check fail, said in ``status``, and the next check runs as usual."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from models.cluster import OperationKind
from models.drift import CheckOutcome
from models.errors import InvalidInput
from tests.fakes import FakeBackends
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow

OBSERVES = {"kvm.observe", "pki.observe", "schedule.observe"}
WRITES = ("ensure", "restart", "remove", "drain", "revoke")
EVERY = timedelta(minutes=5)


async def test_in_sync_checks_stay_in_the_entity_and_drift_starts_the_child(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, backend, queue = time_skipping_env, FakeBackends(), f"q-{uuid.uuid4()}"
    spec = small_kvm(drift_check={})  # the default interval
    async with build_worker(env.client, queue, backend.activities()):
        handle = await start_entity(env.client, spec, queue)
        try:
            await _in_sync_then_drift(env, backend, handle)
        finally:  # pending checks of a left-over entity would stop the shared server's time skipping
            await handle.terminate("the test is over")


async def _in_sync_then_drift(env: WorkflowEnvironment, backend: FakeBackends, handle: Any) -> None:
    created = await wait_settled(handle)
    mark = len(backend.calls)
    await env.sleep(EVERY * 2 + timedelta(seconds=30))  # two checks
    status = await handle.query(ClusterWorkflow.get_status)
    calls = [n for n, _ in backend.calls[mark:]]
    assert Counter(c for c in calls if c in OBSERVES) == dict.fromkeys(OBSERVES, 2), calls
    assert not [c for c in calls if c.split(".")[1].startswith(WRITES)], calls  # reads only
    assert status.operations_started == created.operations_started  # no child
    assert status.last_check is not None and status.last_check.outcome is CheckOutcome.IN_SYNC
    assert status.next_check is not None and status.next_check > status.last_check.at
    history = await handle.fetch_history()
    scheduled = Counter(
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )
    # the entity's own activities, not local ones (a local activity holds the workflow task that a
    # 'status' query waits for): each check's three observes, and node auto-repair's two looks
    assert {name: scheduled[name] for name in OBSERVES} == dict.fromkeys(OBSERVES, 2), scheduled
    assert scheduled["kvm.list_nodes"] == scheduled["tenant.check_health"] == 2, scheduled
    assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and
                e.marker_recorded_event_attributes.marker_name == "core_local_activity"]  # fmt: skip
    children = [e for e in history.events if e.HasField("start_child_workflow_execution_initiated_event_attributes")]
    assert len(children) == 1, "an in-sync check started a child"  # the create's is the only one

    with backend.lock:
        backend.objects.discard("deployment/worker-0")
    await env.sleep(EVERY)
    status = await handle.query(ClusterWorkflow.get_status)
    assert status.last_check is not None and status.last_check.outcome is CheckOutcome.REPAIRED
    assert status.last_check.repaired == ["node worker-0"] and status.last_check.restarted == []
    assert [op.kind for op in status.recent][:1] == [OperationKind.RECONCILE]
    assert "deployment/worker-0" in backend.objects


async def test_a_failing_observe_fails_the_check_not_the_entity(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend, queue = time_skipping_env, FakeBackends(), f"q-{uuid.uuid4()}"
    spec = small_kvm(drift_check={})
    async with build_worker(env.client, queue, backend.activities()):
        handle = await start_entity(env.client, spec, queue)
        try:
            await _failing_then_fixed(env, backend, handle)
        finally:
            await handle.terminate("the test is over")


async def _failing_then_fixed(env: WorkflowEnvironment, backend: FakeBackends, handle: Any) -> None:
    await wait_settled(handle)
    backend.fail["pki.observe"] = ApplicationError(
        "permission denied on pki/x", type=InvalidInput.__name__, non_retryable=True
    )
    await env.sleep(EVERY + timedelta(seconds=30))
    status = await handle.query(ClusterWorkflow.get_status)
    assert status.last_check is not None and status.last_check.outcome is CheckOutcome.FAILED, status.last_check
    assert "permission denied on pki/x" in status.last_check.message
    assert status.phase.value == "Ready"  # the cluster is not the check

    del backend.fail["pki.observe"]
    await env.sleep(EVERY)
    status = await handle.query(ClusterWorkflow.get_status)
    assert status.last_check is not None and status.last_check.outcome is CheckOutcome.IN_SYNC
