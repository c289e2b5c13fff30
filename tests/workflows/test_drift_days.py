"""30 simulated days of drift checks plus daily rotations (time-skipping server).

The entity checks on its own durable timer, every 30 minutes (48 checks a day, 1,440 in all; the
default is 5 minutes, but each check's five activities run for real through the test server and
8,640 of them take too long for CI; every entity run is bounded by continue-as-new whatever the
interval, and the events a check adds are the same, so the figure per day at the default
interval is computed from them); once a day the test does what the rotation schedule does (starts
``ScheduledRotation``, which asks the entity, which runs a ``RotateCertificates`` child). The PKI is
simulated on the server's clock and re-issues only what is due. On day 15 a worker's VM is deleted
behind the product's back: the next check runs a reconcile child that recreates it.

Checked afterwards, on every history the 30 days made (each run of the entity, following
continue-as-new; every rotation and reconcile child; every scheduled rotation): under 10,000
events. Every check of the in-sync cluster found nothing and restarted nothing: the only node
restarts are the rotations' (each node once a day), the only repair is day 15's. Printed: the
events an in-sync check adds to the entity's history, events per day, the largest histories, and
the wall time (each check's activities run for real, so the 30 days take a few minutes).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.pki.rotation_schedule import RotationSchedules
from models.cluster import OperationKind, OperationState
from models.drift import CheckOutcome
from models.schedules import ScheduledRotationInput
from tests.fakes_rotation import SimulatedPki
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow
from workflows.scheduled_rotation import ScheduledRotationWorkflow

DAYS, CHECK, ROTATION = 30, timedelta(minutes=30), timedelta(hours=24)
DEFAULT_CHECK = timedelta(minutes=5)
DRIFT_DAY, DRIFTED = 15, "deployment/worker-1"
HISTORY_LIMIT = 10_000
STRIDE = timedelta(hours=2)


def _continued_to(history: WorkflowHistory) -> str:
    last = history.events[-1]
    if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
        return last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return ""


def _children(history: WorkflowHistory) -> list[str]:
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]


def _kind(workflow_id: str) -> str:
    if " run " in workflow_id:
        return "entity run"
    if workflow_id.startswith("cert-rotation/"):
        return "scheduled rotation"
    return workflow_id.split("/")[2]  # cluster/<id>/<operation>/<n>


def _events_per_in_sync_check(histories: list[WorkflowHistory]) -> int:
    """The most common distance between two drift-check timers: what one in-sync check adds."""
    gaps: Counter[int] = Counter()
    for history in histories:
        timers = [e.event_id for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
        gaps.update(b - a for a, b in itertools.pairwise(timers))
    return gaps.most_common(1)[0][0]


@pytest.mark.timeout(1500)
async def test_30_days_of_checks_and_rotations_stay_small_and_restart_nothing_extra(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, backend, queue = time_skipping_env, SimulatedPki(), f"q-{uuid.uuid4()}"
    spec = small_kvm(certificates={"ttl": "72h", "rotation_interval": "24h"}, drift_check={"interval": "30m"})
    assert spec.drift_check.interval == CHECK and not spec.drift_check.paused
    steady = Client(env.client.service_client, namespace=env.client.namespace, data_converter=pydantic_data_converter)
    activities = [*backend.activities(), RotationSchedules(env.client, queue).request_rotation]
    started = time.monotonic()
    scheduled: list[str] = []
    async with build_worker(env.client, queue, activities):
        handle = await start_entity(env.client, spec, queue)
        try:
            await wait_settled(handle)
            first_run_id = (await handle.describe()).run_id
            after_create = len(backend.calls)
            for day in range(1, DAYS + 1):
                for _ in range(ROTATION // STRIDE):  # the server's sleep call has a deadline: skip in strides
                    await env.sleep(STRIDE)
                scheduled.append(f"cert-rotation/{spec.id}-{day}")
                await steady.execute_workflow(
                    ScheduledRotationWorkflow.run,
                    ScheduledRotationInput(cluster_id=spec.id),
                    id=scheduled[-1],
                    task_queue=queue,
                )
                status = await handle.query(ClusterWorkflow.get_status)
                assert status.last_check is not None, f"day {day}: no check yet"
                # a check may come due while the rotation runs: it is skipped, and says so
                outcomes = (CheckOutcome.IN_SYNC, CheckOutcome.SKIPPED)
                assert status.last_check.outcome in outcomes, f"day {day}: {status.last_check}"
                if day == DRIFT_DAY + 1:  # the day's first check repaired it, as an operation of its own
                    repairs = [op for op in status.recent if op.kind is OperationKind.RECONCILE]
                    assert [op.state for op in repairs] == [OperationState.SUCCEEDED], status.recent
                if day == DRIFT_DAY:  # behind the product's back, as 'kubectl delete deployment' would
                    with backend.lock:
                        backend.objects.discard(DRIFTED)
        finally:  # its checks would go on without a worker, and pending work stops the shared server's time skipping
            await handle.terminate("the test is over")
    wall = time.monotonic() - started

    runs, run_id = [], first_run_id
    while run_id:  # every run of the entity, first to last, following continue-as-new
        runs.append(await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history())
        run_id = _continued_to(runs[-1])
    children = [c for run in runs for c in _children(run)]
    others = {
        workflow_id: await env.client.get_workflow_handle(workflow_id).fetch_history()
        for workflow_id in [*children, *scheduled]
    }
    sizes = {f"{handle.id} run {i + 1}": len(h.events) for i, h in enumerate(runs)}
    sizes |= {workflow_id: len(h.events) for workflow_id, h in others.items()}
    assert max(sizes.values()) < HISTORY_LIMIT, sizes
    assert len(runs) > 1, "the entity was expected to continue-as-new on the way"
    kinds = Counter(c.split("/")[2] for c in children)
    assert kinds == {"create": 1, "rotate-certificates": DAYS, "reconcile": 1}, kinds  # one repair, day 15's

    calls = [name for name, _ in backend.calls[after_create:]]
    checks = calls.count("kvm.observe")
    assert checks >= DAYS * (ROTATION // CHECK) * 0.95, checks
    assert calls.count("pki.observe") == calls.count("schedule.observe") == checks
    # one repair, day 15's: no other ensure besides the rotations' certificates and schedule
    assert calls.count("kvm.ensure_node") == 1 and calls.count("kvm.ensure_foundation") == 0
    assert DRIFTED in backend.objects
    assert calls.count("pki.ensure_certificates") == DAYS
    # the only restarts are the rotations': each node once a day
    assert calls.count("kvm.restart_node") == DAYS * len(spec.node_names())

    per_check = _events_per_in_sync_check(runs)
    entity_events = sum(len(h.events) for h in runs)
    largest: dict[str, int] = {}  # the largest history of each kind: entity runs, children, scheduled runs
    for workflow_id, size in sizes.items():
        largest[_kind(workflow_id)] = max(largest.get(_kind(workflow_id), 0), size)
    print(  # noqa: T201
        f"\n{DAYS} days in {wall:.0f}s wall: {checks} drift checks ({wall / checks * 1000:.0f} ms each incl. the "
        f"day's rotation), {DAYS} rotations, 1 repair; an in-sync check adds {per_check} events to the entity's "
        f"history ({per_check * ROTATION // DEFAULT_CHECK}/day of checks at the default 5-minute interval); "
        f"entity {entity_events / DAYS:.0f} events/day "
        f"over {len(runs)} runs; largest histories {largest}"
    )
    # a timer (2), its workflow task (3), five activities side by side (three drift observes, two
    # node-health looks: 3 events each) and the workflow tasks that take their results as they come
    assert per_check <= 32, per_check
