"""Maintenance windows in the cluster entity, as workflow logic on the time-skipping server.

Upgrades and CA rotations wait for the cluster's window without holding the entity's operation
lock (a drift check runs meanwhile), say so in ``status`` (``queued``), can be aborted while they
wait (for the window or behind another operation), and ``--now --reason`` runs one at once with
who and why on the operation's record. A scheduled leaf rotation runs in a window when one opens
before its renewal deadline, otherwise on time: a window opening later, one spanning midnight, one
on a DST change, and a deadline before the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowHistory, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.pki.rotation_schedule import SCHEDULED_ROTATION_REQUEST
from models.cluster import ClusterPhase, ClusterStatus, OperationKind, OperationState
from models.maintenance import Maintenance, MaintenanceOverride
from models.naming import operation_workflow_id
from models.operations import (
    ConfigureRequest,
    RotateCertificatesRequest,
    UpgradeAction,
    UpgradeControl,
    UpgradeOutcome,
    UpgradeRequest,
    UpgradeResult,
)
from models.reconcile import ReconcileRequest
from models.spec import ClusterSpec
from tests.fakes_rotation import SimulatedPki
from tests.fakes_upgrade import FakeFleet
from tests.history_checks import assert_replays
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import MAINTENANCE_WINDOW_PATCH, ClusterWorkflow, render_status

OLD, PATCH = "1.32.4", "1.32.5"
Handle = WorkflowHandle[Any, Any]
SLACK = timedelta(minutes=1)
"""Simulated time an operation itself takes (activities run in real time; the clock stands meanwhile)."""


# --- helpers ---------------------------------------------------------------------------------------------
async def now_of(env: WorkflowEnvironment) -> datetime:
    return (await env.get_current_time()).astimezone(UTC)


async def skip_to(env: WorkflowEnvironment, moment: datetime) -> None:
    """Move the clock to ``moment`` (it may be there already: the server skips while nothing runs)."""
    now = await now_of(env)
    if moment - now >= timedelta(milliseconds=1):
        await env.sleep(moment - now)


def day_name(moment: datetime) -> str:
    return moment.strftime("%a").lower()


def window(days: list[str], start: str, duration: str, timezone: str = "UTC") -> dict[str, Any]:
    return {"window": {"days": days, "start": start, "duration": duration, "timezone": timezone}}


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    while day.weekday() != 6:
        day -= timedelta(days=1)
    return day


def steady_client(env: WorkflowEnvironment) -> Client:
    """A client on the same server whose waits do not make the clock skip."""
    return Client(env.client.service_client, namespace=env.client.namespace, data_converter=pydantic_data_converter)


async def status_when(handle: Handle, predicate: Callable[[ClusterStatus], bool], what: str) -> ClusterStatus:
    status: ClusterStatus | None = None
    for _ in range(400):
        status = await handle.query(ClusterWorkflow.get_status)
        if predicate(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {status}")


def waiting_for_window(status: ClusterStatus) -> bool:
    return bool(status.queued) and status.queued[0].window_opens_at is not None


@contextlib.asynccontextmanager
async def entity(env: WorkflowEnvironment, spec: ClusterSpec, queue: str) -> AsyncIterator[Handle]:
    """A created entity, terminated when the test ends (a pending window timer must not outlive it)."""
    handle = await start_entity(env.client, spec, queue)
    assert (await wait_settled(handle)).phase is ClusterPhase.READY
    try:
        yield handle
    finally:
        with contextlib.suppress(RPCError):
            await handle.terminate("test over")


async def start_upgrade(handle: Handle, **request: Any) -> Any:
    return await handle.start_update(
        ClusterWorkflow.upgrade,
        UpgradeRequest(version=PATCH, requested_by="apply (alice)", **request),
        id=f"upgrade-{uuid.uuid4().hex[:6]}",
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )


async def upgrade_started_at(env: WorkflowEnvironment, spec: ClusterSpec, sequence: int) -> datetime:
    described = await env.client.get_workflow_handle(
        operation_workflow_id(spec.id, OperationKind.UPGRADE, sequence)
    ).describe()
    return described.start_time.astimezone(UTC)


# --- upgrades ----------------------------------------------------------------------------------------------
async def test_an_upgrade_waits_for_the_window_without_holding_the_lock(time_skipping_env: WorkflowEnvironment) -> None:
    env, fleet, queue = time_skipping_env, FakeFleet(), f"q-{uuid.uuid4()}"
    now = await now_of(env)
    opens = (now + timedelta(days=2)).replace(hour=3, minute=0, second=0, microsecond=0)
    spec = small_kvm(kubernetes_version=OLD, maintenance=window([day_name(opens)], "03:00", "2h"))
    async with build_worker(env.client, queue, fleet.activities()), entity(env, spec, queue) as handle:
        with env.auto_time_skipping_disabled():
            update = await start_upgrade(handle)
            status = await status_when(handle, waiting_for_window, "the upgrade to wait for its window")
            waiting = status.queued[0]
            assert waiting.kind is OperationKind.UPGRADE and waiting.detail == f"to Kubernetes {PATCH}"
            assert waiting.message == f"waiting for the maintenance window, opens at {opens:%Y-%m-%d %H:%M} UTC"
            assert waiting.window_opens_at == opens
            assert status.current is None and status.phase is ClusterPhase.READY
            assert f"queued: upgrade to Kubernetes {PATCH} (requested by apply (alice)): waiting for the " in (
                render_status(status)
            )
            # The wait holds no lock: a drift check runs now, not after the window.
            checked = await handle.execute_update(ClusterWorkflow.reconcile, ReconcileRequest(requested_by="test"))
            assert checked.in_sync and not checked.waited_for
        await skip_to(env, opens)  # (an update's result does not make the test server skip time)
        with env.auto_time_skipping_disabled():
            result: UpgradeResult = await update.result()
        assert result.outcome is UpgradeOutcome.COMPLETED and result.kubernetes_version == PATCH
        started = await upgrade_started_at(env, spec, 3)  # create, the drift check, then the upgrade
        assert opens <= started < opens + SLACK
        final = await handle.query(ClusterWorkflow.get_status)
        assert final.queued == [] and final.recent[0].kind is OperationKind.UPGRADE
        assert final.recent[0].maintenance_override is None


async def test_now_with_a_reason_runs_at_once_on_the_record(time_skipping_env: WorkflowEnvironment) -> None:
    env, fleet, queue = time_skipping_env, FakeFleet(), f"q-{uuid.uuid4()}"
    now = await now_of(env)
    spec = small_kvm(kubernetes_version=OLD, maintenance=window([day_name(now + timedelta(days=3))], "03:00", "1h"))
    override = MaintenanceOverride(reason="CVE-2026-1234 in the kubelet", by="frank")
    async with build_worker(env.client, queue, fleet.activities()), entity(env, spec, queue) as handle:
        with env.auto_time_skipping_disabled():
            update = await start_upgrade(handle, maintenance_override=override)
            result: UpgradeResult = await update.result()
        assert result.outcome is UpgradeOutcome.COMPLETED
        assert await upgrade_started_at(env, spec, 2) - now < SLACK
        record = (await handle.query(ClusterWorkflow.get_status)).recent[0]
        assert record.kind is OperationKind.UPGRADE and record.maintenance_override == override
        assert override.describe() == "outside the maintenance window by frank: CVE-2026-1234 in the kubelet"


async def test_an_upgrade_waiting_for_its_window_can_be_aborted(time_skipping_env: WorkflowEnvironment) -> None:
    env, fleet, queue = time_skipping_env, FakeFleet(), f"q-{uuid.uuid4()}"
    now = await now_of(env)
    spec = small_kvm(kubernetes_version=OLD, maintenance=window([day_name(now + timedelta(days=2))], "03:00", "1h"))
    async with build_worker(env.client, queue, fleet.activities()), entity(env, spec, queue) as handle:
        with env.auto_time_skipping_disabled():
            update = await start_upgrade(handle)
            await status_when(handle, waiting_for_window, "the upgrade to wait for its window")
            aborted = await handle.execute_update(
                ClusterWorkflow.control_upgrade, UpgradeControl(action=UpgradeAction.ABORT, reason="by bob: freeze")
            )
            assert aborted.queued and aborted.action is UpgradeAction.ABORT
            result: UpgradeResult = await update.result()
        assert result.outcome is UpgradeOutcome.ABORTED and result.kubernetes_version == OLD
        status = await handle.query(ClusterWorkflow.get_status)
        assert status.queued == [] and status.operations_started == 1  # no upgrade workflow was started
        assert "aborted before it started: by bob: freeze" in status.message
        assert status.kubernetes_version == OLD and status.phase is ClusterPhase.READY


async def test_an_upgrade_queued_behind_another_operation_can_be_aborted(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, fleet, queue = time_skipping_env, FakeFleet(), f"q-{uuid.uuid4()}"
    spec = small_kvm(kubernetes_version=OLD)  # no window: it waits for the lock only
    async with build_worker(env.client, queue, fleet.activities()), entity(env, spec, queue) as handle:
        with env.auto_time_skipping_disabled():
            held = fleet.hold("kvm.wait_nodes_ready:master-0")
            rotation = await handle.start_update(
                ClusterWorkflow.rotate_certificates,
                RotateCertificatesRequest(force=True, requested_by="test"),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
            await asyncio.to_thread(fleet.reached["kvm.wait_nodes_ready:master-0"].wait, 30)
            update = await start_upgrade(handle)
            status = await status_when(handle, lambda s: bool(s.queued), "the upgrade to queue")
            assert status.queued[0].message.startswith("queued behind the running rotate-certificates")
            assert status.queued[0].window_opens_at is None
            await handle.execute_update(
                ClusterWorkflow.control_upgrade, UpgradeControl(action=UpgradeAction.ABORT, reason="not today")
            )
            held.set()
            await rotation.result()
            result: UpgradeResult = await update.result()
        assert result.outcome is UpgradeOutcome.ABORTED
        status = await wait_settled(handle)
        assert status.operations_started == 2  # the create and the rotation: the upgrade never started
        assert [op.kind for op in status.recent] == [OperationKind.ROTATE_CERTIFICATES, OperationKind.CREATE]
        assert status.recent[0].state is OperationState.SUCCEEDED


# --- scheduled leaf rotations --------------------------------------------------------------------------------
ROTATING = {"ttl": "72h", "rotation_interval": "24h"}
"""Created now, the leaves expire in 72h: the renewal deadline is in 48h."""


async def scheduled_rotation_started_at(env: WorkflowEnvironment, spec: ClusterSpec) -> datetime:
    """Ask the entity as the schedule's workflow does (``SCHEDULED_ROTATION_REQUEST``, by update) and
    say when the rotation started. The test server does not skip time while the schedule's request
    activity is outstanding, so the test sends the update itself and moves the clock to the window
    the entity says it waits for, if it waits for one."""
    handle = env.client.get_workflow_handle(f"cluster/{spec.id}")
    before = (await handle.query(ClusterWorkflow.get_status)).operations_started
    with env.auto_time_skipping_disabled():
        update = await handle.start_update(
            ClusterWorkflow.rotate_certificates,
            SCHEDULED_ROTATION_REQUEST,
            id=f"cert-rotation/{spec.id}-{uuid.uuid4().hex[:6]}",
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        status = await status_when(
            handle, lambda s: waiting_for_window(s) or s.operations_started > before, "the rotation to queue or run"
        )
    if waiting_for_window(status):
        opens = status.queued[0].window_opens_at
        assert opens is not None and status.queued[0].message.startswith("waiting for the maintenance window")
        await skip_to(env, opens)
    with env.auto_time_skipping_disabled():
        await update.result()
    status = await handle.query(ClusterWorkflow.get_status)
    rotation = status.recent[0]
    assert rotation.kind is OperationKind.ROTATE_CERTIFICATES and rotation.state is OperationState.SUCCEEDED
    assert rotation.requested_by == "schedule" and rotation.started_at is not None
    return rotation.started_at.astimezone(UTC)


def rotation_worker(env: WorkflowEnvironment, queue: str) -> Any:
    backend = SimulatedPki()
    return build_worker(env.client, queue, backend.activities())


async def test_a_scheduled_rotation_waits_for_a_window_that_opens_before_the_deadline(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4()}"
    now = await now_of(env)
    opens = (now + timedelta(hours=7)).replace(minute=0, second=0, microsecond=0)  # 6-7h away; deadline in 48h
    spec = small_kvm(certificates=ROTATING, maintenance=window([day_name(opens)], opens.strftime("%H:%M"), "2h"))
    async with rotation_worker(env, queue), entity(env, spec, queue):
        started = await scheduled_rotation_started_at(env, spec)
    assert opens <= started < opens + SLACK


async def test_a_window_spanning_midnight_is_used_after_midnight(time_skipping_env: WorkflowEnvironment) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4()}"
    now = await now_of(env)
    # Every day 23:00 for 4h: at 01:00 the window of the day before is open, and the rotation runs.
    one_am = (now + timedelta(days=1)).replace(hour=1, minute=0, second=0, microsecond=0)
    await skip_to(env, one_am)
    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    spec = small_kvm(certificates=ROTATING, maintenance=window(every_day, "23:00", "4h"))
    async with rotation_worker(env, queue), entity(env, spec, queue):
        assert await scheduled_rotation_started_at(env, spec) - one_am < SLACK
        # Asked after it closed (03:00), at 14:00, a rotation waits for 23:00 the same day: before
        # its deadline, and within the schedule's request's patience (LEAF_ROTATION_WINDOW_WAIT).
        await skip_to(env, one_am + timedelta(hours=13))
        started = await scheduled_rotation_started_at(env, spec)
    eleven_pm = one_am + timedelta(hours=22)
    assert eleven_pm <= started < eleven_pm + SLACK


@pytest.mark.parametrize(("month", "utc_hour"), [(3, 1), (10, 0)], ids=["spring-forward", "fall-back"])
async def test_a_window_on_a_dst_change_opens_at_the_right_instant(
    time_skipping_env: WorkflowEnvironment, month: int, utc_hour: int
) -> None:
    # Sunday 02:30 Berlin on the change's night: in the spring gap it means 03:30 CEST (01:30 UTC);
    # in the autumn 02:30 happens twice and the first (CEST, 00:30 UTC) counts.
    env, queue = time_skipping_env, f"q-{uuid.uuid4()}"
    now = await now_of(env)
    year = now.year if now.date() < last_sunday(now.year, month) - timedelta(days=1) else now.year + 1
    sunday = last_sunday(year, month)
    await skip_to(env, datetime(sunday.year, sunday.month, sunday.day, tzinfo=UTC) - timedelta(hours=8))
    spec = small_kvm(certificates=ROTATING, maintenance=window(["sun"], "02:30", "4h", "Europe/Berlin"))
    async with rotation_worker(env, queue), entity(env, spec, queue):
        started = await scheduled_rotation_started_at(env, spec)
    opens = datetime(sunday.year, sunday.month, sunday.day, utc_hour, 30, tzinfo=UTC)
    assert opens <= started < opens + SLACK


async def test_a_rotation_whose_deadline_comes_before_the_window_runs_on_time(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4()}"
    now = await now_of(env)
    # The window opens in three to four days; the leaves must be renewed within 48h.
    spec = small_kvm(certificates=ROTATING, maintenance=window([day_name(now + timedelta(days=4))], "00:00", "1h"))
    async with rotation_worker(env, queue), entity(env, spec, queue):
        started = await scheduled_rotation_started_at(env, spec)
    assert started - now < SLACK


# --- determinism ---------------------------------------------------------------------------------------------
async def window_wait_scenario(env: WorkflowEnvironment, queue: str, spec: ClusterSpec) -> WorkflowHistory:
    """The recorded scenario (tests/histories/upgrade-window-wait--Cluster.json): a window is
    configured, an upgrade waits for it (two days away), a drift check runs meanwhile, the window
    opens and the upgrade runs."""
    now = await now_of(env)
    opens = (now + timedelta(days=2)).replace(hour=3, minute=0, second=0, microsecond=0)
    handle = await start_entity(env.client, spec.model_copy(update={"maintenance": None}), queue)
    await wait_settled(handle)
    await handle.execute_update(
        ClusterWorkflow.configure,
        ConfigureRequest(maintenance=Maintenance.model_validate(window([day_name(opens)], "03:00", "2h"))),
    )
    with env.auto_time_skipping_disabled():
        update = await start_upgrade(handle)
        await status_when(handle, waiting_for_window, "the upgrade to wait for its window")
        await handle.execute_update(ClusterWorkflow.reconcile, ReconcileRequest(requested_by="recorder"))
    await skip_to(env, opens)
    with env.auto_time_skipping_disabled():
        result: UpgradeResult = await update.result()
    assert result.outcome is UpgradeOutcome.COMPLETED
    history = await handle.fetch_history()
    await handle.terminate("recorded")
    return history


async def test_an_entity_waiting_for_its_window_replays(time_skipping_env: WorkflowEnvironment) -> None:
    env, fleet, queue = time_skipping_env, FakeFleet(), f"q-{uuid.uuid4()}"
    async with build_worker(env.client, queue, fleet.activities()):
        history = await window_wait_scenario(env, queue, small_kvm(kubernetes_version=OLD))
    await assert_replays(history)
    markers = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert any(MAINTENANCE_WINDOW_PATCH.encode() in m for m in markers)
    assert any(e.HasField("timer_started_event_attributes") for e in history.events)


async def record_history() -> None:
    """``python -m tests.workflows.test_maintenance_windows``: record the scenario for tests/replay."""
    import json
    from pathlib import Path

    from tests.servers import start_time_skipping

    env = await start_time_skipping()
    try:
        name, fleet = "upgrade-window-wait", FakeFleet()
        async with build_worker(env.client, name, fleet.activities()):
            history = await window_wait_scenario(env, name, small_kvm(id="replay-window", kubernetes_version=OLD))
        path = Path(__file__).resolve().parents[1] / "histories" / f"{name}--Cluster.json"
        recorded = {
            "workflow_id": history.workflow_id,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "scenario": name,
            "history": json.loads(history.to_json()),
        }
        path.write_text(json.dumps(recorded, indent=1))
        print(f"recorded {path.name}: {len(history.events)} events")  # noqa: T201
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record_history())
