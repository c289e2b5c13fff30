"""The rotation schedule's activities against a real Temporal dev server (Schedules are not in
the time-skipping server): created once, converged on interval changes, removed twice safely."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.testing import ActivityEnvironment

from activities.pki.rotation_schedule import RotationSchedules
from models.naming import rotation_schedule_id
from models.provider import ResourceChange
from models.schedules import RotationScheduleInput, ScheduleRef
from tests.specs import small_kvm


async def test_schedule_is_created_once_and_converged(temporal_client: Client) -> None:
    schedules = RotationSchedules(temporal_client, task_queue="rotation-test")
    env = ActivityEnvironment()
    spec = small_kvm()

    first = await env.run(schedules.ensure_rotation_schedule, RotationScheduleInput(spec=spec))
    again = await env.run(schedules.ensure_rotation_schedule, RotationScheduleInput(spec=spec))
    assert first.changed and not again.changed
    assert first.schedule_id == again.schedule_id == rotation_schedule_id(spec.id)
    assert again.interval == timedelta(hours=24)
    assert again.next_runs and not again.paused

    desc = await temporal_client.get_schedule_handle(first.schedule_id).describe()
    assert desc.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
    assert desc.schedule.policy.catchup_window == timedelta(hours=24)

    # a new interval in the spec updates the schedule in place
    faster = spec.model_copy(
        update={"certificates": spec.certificates.model_copy(update={"rotation_interval": timedelta(hours=12)})}
    )
    changed = await env.run(schedules.ensure_rotation_schedule, RotationScheduleInput(spec=faster))
    assert changed.changed and changed.interval == timedelta(hours=12)

    paused = await env.run(schedules.ensure_rotation_schedule, RotationScheduleInput(spec=faster, paused=True))
    assert paused.paused and paused.changed
    # None leaves the pause state alone
    kept = await env.run(schedules.ensure_rotation_schedule, RotationScheduleInput(spec=faster))
    assert kept.paused and not kept.changed

    gone = await env.run(schedules.ensure_rotation_schedule_absent, ScheduleRef(cluster_id=spec.id))
    gone_again = await env.run(schedules.ensure_rotation_schedule_absent, ScheduleRef(cluster_id=spec.id))
    assert gone.outcomes[0].change is ResourceChange.DELETED
    assert gone_again.outcomes[0].change is ResourceChange.ABSENT
    described = await env.run(schedules.describe_rotation_schedule, ScheduleRef(cluster_id=spec.id))
    assert not described.exists
