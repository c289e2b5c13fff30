"""Simulated days of 5-minute drift checks plus daily rotations (time-skipping server).

DAYS is 3 here: each check runs its activities in real time (~65 ms), so 30 days (8,640 checks)
take over 10 minutes, past the suite's per-test timeout.

The entity checks on its own durable timer (the spec default, every 5 minutes: 288 checks a
day); once a day the test does what the rotation schedule does (starts ``ScheduledRotation``).
The PKI is simulated on the server's clock and re-issues only what is due. Checked afterwards:
every history of the entity (it continues-as-new on the way) stays under 10,000 events, every
check of the in-sync cluster found nothing and restarted nothing (the only node restarts are the
rotations'), and the figures: events per day in the entity's history, activities per check.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.pki.rotation_schedule import RotationSchedules
from models.drift import CheckOutcome
from models.schedules import ScheduledRotationInput
from tests.fakes_rotation import SimulatedPki
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow
from workflows.scheduled_rotation import ScheduledRotationWorkflow

DAYS, CHECK, ROTATION = 3, timedelta(minutes=5), timedelta(hours=24)
HISTORY_LIMIT = 10_000
STRIDE = timedelta(hours=2)


async def test_days_of_checks_and_rotations_stay_small_and_restart_nothing_extra(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, backend, queue = time_skipping_env, SimulatedPki(), f"q-{uuid.uuid4()}"
    spec = small_kvm(certificates={"ttl": "72h", "rotation_interval": "24h"}, drift_check={})
    assert spec.drift_check.interval == CHECK and not spec.drift_check.paused  # the defaults
    steady = Client(env.client.service_client, namespace=env.client.namespace, data_converter=pydantic_data_converter)
    activities = [*backend.activities(), RotationSchedules(env.client, queue).request_rotation]
    async with build_worker(env.client, queue, activities):
        handle = await start_entity(env.client, spec, queue)
        await wait_settled(handle)
        first_run_id = (await handle.describe()).run_id
        after_create = len(backend.calls)
        for day in range(1, DAYS + 1):
            for _ in range(ROTATION // STRIDE):  # the server's sleep call has a deadline: skip in strides
                await env.sleep(STRIDE)
            await steady.execute_workflow(
                ScheduledRotationWorkflow.run,
                ScheduledRotationInput(cluster_id=spec.id),
                id=f"cert-rotation/{spec.id}-{day}",
                task_queue=queue,
            )
            status = await handle.query(ClusterWorkflow.get_status)
            assert status.last_check is not None and status.last_check.outcome in (
                CheckOutcome.IN_SYNC,
                CheckOutcome.SKIPPED,  # one came due while the rotation ran
            ), f"day {day}: {status.last_check}"
        # its checks would go on without a worker, and pending work stops the shared server's time skipping
        await handle.terminate("the test is over")

    # every run of the entity, first to last, following continue-as-new
    sizes, run_id = [], first_run_id
    while run_id:
        history = await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        sizes.append(len(history.events))
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else ""
        )
    assert max(sizes) < HISTORY_LIMIT, sizes
    assert len(sizes) > 1, "the entity was expected to continue-as-new on the way"

    calls = [name for name, _ in backend.calls[after_create:]]
    checks = calls.count("kvm.observe")
    assert checks >= DAYS * (ROTATION // CHECK) * 0.95, checks
    assert calls.count("pki.observe") == calls.count("schedule.observe") == checks
    # nothing was ever repaired: no ensure besides the rotations' certificates and schedule
    assert calls.count("kvm.ensure_node") == 0 and calls.count("kvm.ensure_foundation") == 0
    assert calls.count("pki.ensure_certificates") == DAYS
    # the only restarts are the rotations': each node once a day
    assert calls.count("kvm.restart_node") == DAYS * len(spec.node_names())
    per_day = sum(sizes) / DAYS
    print(  # noqa: T201
        f"\n{DAYS} days: {checks} drift checks (3 activities each), {DAYS} rotations; entity histories {sizes} "
        f"(max {max(sizes)}), {per_day:.0f} entity events per day"
    )
