"""Thirty simulated days of scheduled rotation (TTL 72h, every 24h) on the time-skipping server.

The test server has no Schedules, so the test does what the schedule ``cert-rotation/<id>`` does:
once per simulated interval it starts the schedule's workflow (``ScheduledRotation``), whose real
``entity.request_rotation`` activity asks the cluster entity by update and waits. The PKI is
simulated on the server's clock (``SimulatedPki``): it re-issues only what is due, like the real one.

Checked at every rotation: no certificate had expired, every certificate was re-issued within
that interval (new serial, issued at the rotation), and afterwards from the histories: exactly one
completed scheduled run and one rotation per interval. The entity is made to continue-as-new
several times on the way, as a long-lived one does.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.pki.rotation_schedule import RotationSchedules
from models.cluster import OperationKind
from models.naming import operation_workflow_id
from models.pki import certificate_requests
from models.schedules import ScheduledRotationInput
from tests.fakes_rotation import SimulatedPki, remaining
from tests.history_checks import assert_no_private_key
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow
from workflows.scheduled_rotation import ScheduledRotationWorkflow

TTL, INTERVAL, DAYS = timedelta(hours=72), timedelta(hours=24), 30
SLACK = timedelta(minutes=1)
"""Simulated time a rotation itself takes (activities run in real time; the clock stands meanwhile)."""


async def test_thirty_days_of_rotation_never_let_a_certificate_expire(time_skipping_env: WorkflowEnvironment) -> None:
    env, backend, queue = time_skipping_env, SimulatedPki(), f"q-{uuid.uuid4()}"
    # Rotation alone: this test counts the entity's operations (drift checks: test_drift_30_days.py).
    spec = small_kvm(certificates={"ttl": "72h", "rotation_interval": "24h"}, drift_check={"paused": True})
    names = sorted(r.name for r in certificate_requests(spec))
    activities = [*backend.activities(), RotationSchedules(env.client, queue).request_rotation]
    # The environment's own client lets the server skip time while it waits for a result, and the
    # test server then fires the leftover timeouts of finished activities (minutes to hours): the
    # clock would drift off the 24h grid. A plain client on the same server waits without skipping.
    steady = Client(env.client.service_client, namespace=env.client.namespace, data_converter=pydantic_data_converter)
    runs: list[str] = []
    rotation_times: list[datetime] = []
    min_left = TTL

    async with build_worker(env.client, queue, activities):
        # A low history limit makes the entity continue-as-new every few rotations.
        handle = await start_entity(env.client, spec, queue, max_history_events=150)
        await wait_settled(handle)
        previous = dict(backend.leaves)
        first_run_id = (await handle.describe()).run_id

        for day in range(1, DAYS + 1):
            await env.sleep(INTERVAL)
            now = await env.get_current_time()
            # what the schedule's run finds: nothing expired, the status knows the earliest expiry
            left = remaining(backend.leaves, now)
            assert left > timedelta(0), f"day {day}: a certificate expired {-left} ago"
            min_left = min(min_left, left)
            status = await handle.query(ClusterWorkflow.get_status)
            assert status.earliest_expiry is not None and status.earliest_expiry > now
            assert status.next_rotation is not None and abs(status.next_rotation - now) < SLACK

            run_id = f"cert-rotation/{spec.id}-{day}"
            result = await steady.execute_workflow(
                ScheduledRotationWorkflow.run, ScheduledRotationInput(cluster_id=spec.id), id=run_id, task_queue=queue
            )
            done = await env.get_current_time()
            runs.append(run_id)
            rotation_times.append(now)

            # every certificate re-issued on time: a new serial, issued during this rotation
            assert sorted(result.reissued) == names, f"day {day}: only {result.reissued} re-issued"
            for name in names:
                record = backend.leaves[name]
                assert record.serial != previous[name].serial
                assert now <= record.not_before <= done, f"day {day}: {name} issued at {record.not_before}"
                assert record.not_after - record.not_before == TTL
            assert result.restarted_nodes == spec.node_names()
            previous = dict(backend.leaves)

        status = await handle.query(ClusterWorkflow.get_status)
        last_run_id = (await handle.describe()).run_id

    # the schedule's workflows: one run per interval, each completed after exactly one request
    for index, run_id in enumerate(runs):
        history = await env.client.get_workflow_handle(run_id).fetch_history()
        types = [e.event_type for e in history.events]
        assert types[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, run_id
        assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
        assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED) == 1  # no retry: asked once
        started = history.events[0].event_time.ToDatetime().replace(tzinfo=rotation_times[index].tzinfo)
        assert abs(started - rotation_times[index]) < SLACK
        assert_no_private_key(history)
    # and the rotations they asked for: one per interval, one interval apart
    rotations = [operation_workflow_id(spec.id, OperationKind.ROTATE_CERTIFICATES, n) for n in range(2, DAYS + 2)]
    starts = []
    for workflow_id in rotations:
        described = await env.client.get_workflow_handle(workflow_id).describe()
        assert described.status is WorkflowExecutionStatus.COMPLETED
        starts.append(described.start_time)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(abs(gap - INTERVAL) < SLACK for gap in gaps), gaps
    assert status.operations_started == DAYS + 1  # the create, then exactly one rotation a day
    assert [op.requested_by for op in status.recent] == ["schedule"] * len(status.recent)
    assert last_run_id != first_run_id, "the entity was expected to continue-as-new on the way"
    assert backend.violations == []
    # each leaf was issued once at create and once a day, never more (no churn)
    assert {len(backend.issued_at[name]) for name in names} == {DAYS + 1}
    # the figure for the record: the least lifetime any certificate had left when it was rotated
    assert min_left >= TTL - INTERVAL - SLACK
    print(f"\n30-day rotation: {DAYS} rotations, min remaining lifetime at rotation {min_left}")  # noqa: T201
