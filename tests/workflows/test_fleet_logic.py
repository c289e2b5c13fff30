"""Fleet rollouts as workflow logic, on the time-skipping server.

The rollout talks to stand-in cluster entities (tests/workflows/fleet_entity.py, registered as
``Cluster``) through its real request activities, over the real update and query names. What is
checked: the concurrency cap (the entities' own record of when each ran), the failure budget, the
canary and approval gate (approve, reject, timeout), pause/resume, abort asking in-flight upgrades
to roll back, the plan's skipped clusters, and maintenance-window waits (opens later, spans
midnight, both DST changes, the rotation deadline, the ``--now`` override).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.fleet.requests import FleetRequests
from models.cluster import ClusterPhase
from models.fleet import (
    ApprovalDecision,
    ApprovalRequest,
    FleetAction,
    FleetControl,
    FleetOperation,
    FleetRolloutInput,
    FleetRolloutResult,
    FleetState,
    FleetStatus,
    RolloutClusterState,
)
from models.maintenance import MaintenanceOverride
from tests.history_checks import assert_replays
from tests.specs import small_kvm
from tests.workflows.fleet_entity import FakeClusterInput, FakeClusterWorkflow, FakeLog
from worker.registry import activities_of, build_worker
from workflows import search_attributes as sa
from workflows.fleet import FleetRolloutWorkflow

OLD = "1.32.4"
TARGET = "1.32.5"

Cluster = WorkflowHandle[Any, Any]
STARTED: dict[str, list[Cluster]] = {}
"""Stand-in entities started per task queue, terminated when their test ends."""


@pytest.fixture
async def queue(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[str]:
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    worker: Worker = build_worker(
        time_skipping_env.client,
        name,
        activities_of(FleetRequests(time_skipping_env.client)),
        workflows=[FleetRolloutWorkflow, FakeClusterWorkflow],
    )
    STARTED[name] = []
    async with worker:
        yield name
        # A stand-in left running keeps a timer (its run timeout) the clock could skip to later.
        for handle in STARTED.pop(name):
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


async def clusters(env: WorkflowEnvironment, queue: str, count: int, **options: Any) -> tuple[list[str], list[Cluster]]:
    ids, handles = [], []
    spec_changes = options.pop("spec", {})
    for _ in range(count):
        spec = small_kvm(**{"kubernetes_version": OLD, **spec_changes})
        handle = await env.client.start_workflow(
            "Cluster", FakeClusterInput(spec=spec, **options), id=f"cluster/{spec.id}", task_queue=queue
        )
        ids.append(spec.id)
        handles.append(handle)
        STARTED[queue].append(handle)
    return ids, handles


async def start_fleet(env: WorkflowEnvironment, queue: str, ids: list[str], **options: Any) -> Cluster:
    options.setdefault("operation", FleetOperation.UPGRADE)
    if options["operation"] is FleetOperation.UPGRADE:
        options.setdefault("version", TARGET)
    return await env.client.start_workflow(
        FleetRolloutWorkflow.run,
        FleetRolloutInput(cluster_ids=ids, requested_by="test", **options),
        id=f"fleet/test-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )


async def log_of(handle: Cluster) -> FakeLog:
    log: FakeLog = await handle.query("fake_log", result_type=FakeLog)
    return log


async def fleet_status(fleet: Cluster) -> FleetStatus:
    status: FleetStatus = await fleet.query(FleetRolloutWorkflow.get_status)
    return status


async def until(fleet: Cluster, predicate: Callable[[FleetStatus], bool], what: str) -> FleetStatus:
    status: FleetStatus | None = None
    for _ in range(400):
        status = await fleet_status(fleet)
        if predicate(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {status}")


def running(status: FleetStatus) -> set[str]:
    return {c.cluster_id for c in status.in_state(RolloutClusterState.RUNNING)}


def states(status: FleetStatus) -> dict[str, RolloutClusterState]:
    return {c.cluster_id: c.state for c in status.clusters}


async def held_operations(handles: list[Cluster]) -> list[int]:
    """Operations each entity has begun (held ones included)."""
    return [len((await log_of(h)).operations) for h in handles]


async def max_overlap(handles: list[Cluster]) -> int:
    """Most operations running at once, from the entities' own start/finish times."""
    edges: list[tuple[datetime, int]] = []
    for handle in handles:
        for op in (await log_of(handle)).operations:
            assert op.finished_at is not None
            edges += [(op.started_at, 1), (op.finished_at, -1)]
    # At equal times a finish counts before a start: the rollout starts the next after one ends.
    edges.sort(key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, delta in edges:
        current += delta
        peak = max(peak, current)
    return peak


async def result_of(fleet: Cluster, env: WorkflowEnvironment | None = None) -> FleetStatus:
    """The rollout's result; with ``env``, without letting the clock skip.

    The test server skips to the next timer whenever no workflow task is outstanding, even while
    an activity waits on an entity's update: tests that need no timer keep the clock still.
    """
    if env is None:
        result: FleetRolloutResult = await fleet.result()
        return result.status
    with env.auto_time_skipping_disabled():
        result = await fleet.result()
    return result.status


# --- concurrency, failures, plan ---------------------------------------------------------------------
async def test_never_more_than_parallel_clusters_in_flight(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 5, hold=True)
    fleet = await start_fleet(time_skipping_env, queue, ids, parallel=2)
    for released in range(5):
        expected = min(2, 5 - released)
        status = await until(fleet, lambda s, n=expected: len(running(s)) == n, f"{expected} in flight")
        assert sum(await held_operations(handles)) == min(released + 2, 5)  # nobody else began
        # Release the first one of those in flight (plan order).
        first = next(i for i, cid in enumerate(ids) if cid in running(status))
        await handles[first].signal("release")
        await until(fleet, lambda s, done=ids[first]: done not in running(s), f"{ids[first]} done")
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.SUCCEEDED
    assert final.max_in_flight == 2
    assert await max_overlap(handles) == 2
    assert [len((await log_of(h)).operations) for h in handles] == [1] * 5  # each upgraded once
    assert all(c.kubernetes_version == TARGET for c in final.clusters)
    # The entity learnt who asked: the rollout, on behalf of the person.
    assert (await log_of(handles[0])).operations[0].requested_by == f"fleet {fleet.id} (test)"
    described = await fleet.describe()
    assert described.typed_search_attributes.get(sa.FLEET_ROLLOUT_STATE) == "succeeded"
    assert described.typed_search_attributes.get(sa.OPERATION) == "fleet-upgrade"


async def test_failure_budget_stops_new_starts_and_says_which_failed(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    good, good_handles = await clusters(time_skipping_env, queue, 1)
    bad, _ = await clusters(time_skipping_env, queue, 1, fail_message="node worker-1 never became ready")
    rest, rest_handles = await clusters(time_skipping_env, queue, 3)
    fleet = await start_fleet(time_skipping_env, queue, good + bad + rest, parallel=1, max_failures=1)
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.FAILED
    by_id = {c.cluster_id: c for c in final.clusters}
    assert by_id[good[0]].state is RolloutClusterState.SUCCEEDED
    assert by_id[bad[0]].state is RolloutClusterState.FAILED
    assert "worker-1 never became ready" in by_id[bad[0]].reason
    for cid in rest:
        assert by_id[cid].state is RolloutClusterState.NOT_STARTED
        assert bad[0] in by_id[cid].reason and "failure budget spent" in by_id[cid].reason
    assert await held_operations(rest_handles) == [0, 0, 0]
    assert bad[0] in final.message
    assert await held_operations(good_handles) == [1]


async def test_a_paused_upgrade_counts_as_a_failure_and_stays_for_an_operator(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    paused, paused_handles = await clusters(time_skipping_env, queue, 1, pause_message="master-0 not ready in 5s")
    rest, rest_handles = await clusters(time_skipping_env, queue, 2)
    fleet = await start_fleet(
        time_skipping_env, queue, paused + rest, parallel=1, max_failures=1, node_ready_timeout=timedelta(seconds=5)
    )
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.FAILED
    first = final.clusters[0]
    assert first.state is RolloutClusterState.FAILED
    assert first.reason == "upgrade paused, waiting for an operator: master-0 not ready in 5s"
    assert [states(final)[c] for c in rest] == [RolloutClusterState.NOT_STARTED] * 2
    assert await held_operations(rest_handles) == [0, 0]
    op = (await log_of(paused_handles[0])).operations[0]
    assert op.finished_at is None  # still paused in the entity, for 'tenantctl upgrade resume|abort'
    assert op.node_ready_timeout == timedelta(seconds=5)


async def test_a_larger_budget_goes_on_after_one_failure(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    bad, _ = await clusters(time_skipping_env, queue, 1, fail_message="health gate failed")
    rest, rest_handles = await clusters(time_skipping_env, queue, 2)
    final = await result_of(
        await start_fleet(time_skipping_env, queue, bad + rest, parallel=1, max_failures=2), time_skipping_env
    )
    assert final.state is FleetState.FAILED  # a cluster failed, but the others were upgraded
    assert [states(final)[c] for c in rest] == [RolloutClusterState.SUCCEEDED] * 2
    assert await held_operations(rest_handles) == [1, 1]


async def test_the_plan_skips_what_cannot_take_the_operation(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    ready, ready_handles = await clusters(time_skipping_env, queue, 1)
    current, _ = await clusters(time_skipping_env, queue, 1, spec={"kubernetes_version": TARGET})
    failed, failed_handles = await clusters(time_skipping_env, queue, 1, phase=ClusterPhase.FAILED)
    deleting, _ = await clusters(time_skipping_env, queue, 1, phase=ClusterPhase.DELETING)
    missing = [f"gone-{uuid.uuid4().hex[:6]}"]
    fleet = await start_fleet(time_skipping_env, queue, missing + current + failed + deleting + ready)
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.SUCCEEDED
    reasons = {c.cluster_id: c.reason for c in final.clusters if c.state is RolloutClusterState.SKIPPED}
    assert reasons == {
        missing[0]: "no cluster entity workflow runs under this id",
        current[0]: f"the cluster already runs Kubernetes {TARGET}",
        failed[0]: "cluster is Failed",
        deleting[0]: "cluster is Deleting",
    }
    assert final.clusters[0].cluster_id == ready[0]  # eligible first, in the caller's order
    assert await held_operations(ready_handles + failed_handles) == [1, 0]


async def test_a_minor_skip_is_skipped_with_the_reason(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 1)
    final = await result_of(await start_fleet(time_skipping_env, queue, ids, version="1.34.0"), time_skipping_env)
    assert final.clusters[0].state is RolloutClusterState.SKIPPED
    assert "one minor at a time" in final.clusters[0].reason
    assert await held_operations(handles) == [0]


# --- canaries and approval ------------------------------------------------------------------------------
async def test_canary_first_then_approval_then_the_rest(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 3)
    fleet = await start_fleet(time_skipping_env, queue, ids, parallel=2, canary=1, approve_after_canary=True)
    status = await until(fleet, lambda s: s.state is FleetState.WAITING_APPROVAL, "approval wait")
    assert states(status) == {
        ids[0]: RolloutClusterState.SUCCEEDED,
        ids[1]: RolloutClusterState.PENDING,
        ids[2]: RolloutClusterState.PENDING,
    }
    assert status.clusters[0].canary and not status.clusters[1].canary
    assert await held_operations(handles) == [1, 0, 0]
    assert "fleet approve" in status.message
    record = await fleet.execute_update(
        FleetRolloutWorkflow.approve, ApprovalRequest(by="  alice ", comment="canary looks healthy")
    )
    assert (record.decision, record.by, record.comment) == (ApprovalDecision.APPROVED, "alice", "canary looks healthy")
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.SUCCEEDED
    assert final.approval == record
    assert any("approved by alice: canary looks healthy" in line for line in final.log)
    canary_done = final.clusters[0].finished_at
    assert canary_done is not None
    assert all(c.started_at is not None and c.started_at >= canary_done for c in final.clusters[1:])
    assert await held_operations(handles) == [1, 1, 1]


async def test_approval_is_refused_while_canaries_run(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 2, hold=True)
    fleet = await start_fleet(time_skipping_env, queue, ids, canary=1, approve_after_canary=True)
    await until(fleet, lambda s: running(s) == {ids[0]}, "canary running")
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await fleet.execute_update(FleetRolloutWorkflow.approve, ApprovalRequest(by="alice"))
    assert "not waiting for approval" in str(info.value.cause)
    assert (await fleet_status(fleet)).approval is None
    await fleet.execute_update(FleetRolloutWorkflow.control, FleetControl(action=FleetAction.ABORT, by="test"))
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.ABORTED
    assert (await log_of(handles[0])).abort_requests == 1


async def test_reject_aborts_the_rest(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 3)
    fleet = await start_fleet(time_skipping_env, queue, ids, canary=1, approve_after_canary=True)
    await until(fleet, lambda s: s.state is FleetState.WAITING_APPROVAL, "approval wait")
    record = await fleet.execute_update(
        FleetRolloutWorkflow.reject, ApprovalRequest(by="carol", comment="p99 latency doubled")
    )
    assert record.decision is ApprovalDecision.REJECTED
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.ABORTED
    assert "rejected by carol: p99 latency doubled" in final.message
    assert [c.state for c in final.clusters[1:]] == [RolloutClusterState.NOT_STARTED] * 2
    assert await held_operations(handles) == [1, 0, 0]


async def test_no_approval_within_the_timeout_aborts(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 2)
    fleet = await start_fleet(
        time_skipping_env, queue, ids, canary=1, approve_after_canary=True, approval_timeout=timedelta(hours=8)
    )
    await until(fleet, lambda s: s.state is FleetState.WAITING_APPROVAL, "approval wait")
    final = await result_of(fleet)  # the clock skips through the eight hours
    assert final.state is FleetState.ABORTED
    assert "no approval" in final.message
    assert final.clusters[1].state is RolloutClusterState.NOT_STARTED
    assert final.finished_at is not None and final.started_at is not None
    assert final.finished_at - final.started_at >= timedelta(hours=8)
    assert await held_operations(handles) == [1, 0]


# --- pause, resume, abort ---------------------------------------------------------------------------------
async def test_pause_starts_no_new_cluster_until_resumed(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 3, hold=True)
    fleet = await start_fleet(time_skipping_env, queue, ids, parallel=1)
    await until(fleet, lambda s: running(s) == {ids[0]}, "first running")
    result = await fleet.execute_update(
        FleetRolloutWorkflow.control, FleetControl(action=FleetAction.PAUSE, by="dave", reason="incident")
    )
    assert result.state is FleetState.PAUSED
    with pytest.raises(WorkflowUpdateFailedError):  # already paused
        await fleet.execute_update(FleetRolloutWorkflow.control, FleetControl(action=FleetAction.PAUSE))
    await handles[0].signal("release")
    status = await until(fleet, lambda s: not running(s), "first done")
    await asyncio.sleep(0.5)  # room for a wrong start
    status = await fleet_status(fleet)
    assert status.state is FleetState.PAUSED and not running(status)
    assert await held_operations(handles) == [1, 0, 0]
    await fleet.execute_update(FleetRolloutWorkflow.control, FleetControl(action=FleetAction.RESUME, by="dave"))
    await until(fleet, lambda s: running(s) == {ids[1]}, "second running")
    await handles[1].signal("release")
    await until(fleet, lambda s: running(s) == {ids[2]}, "third running")
    await handles[2].signal("release")
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.SUCCEEDED
    assert any("paused by dave: incident" in line for line in final.log)
    assert any("resumed by dave" in line for line in final.log)


async def test_abort_asks_in_flight_upgrades_to_roll_back(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 4, hold=True)
    fleet = await start_fleet(time_skipping_env, queue, ids, parallel=2)
    await until(fleet, lambda s: running(s) == set(ids[:2]), "two running")
    await fleet.execute_update(
        FleetRolloutWorkflow.control, FleetControl(action=FleetAction.ABORT, by="erin", reason="bad image")
    )
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.ABORTED
    assert [c.state for c in final.clusters] == [RolloutClusterState.ABORTED] * 2 + [
        RolloutClusterState.NOT_STARTED
    ] * 2
    assert "rolled back to Kubernetes 1.32.4" in final.clusters[0].reason
    assert [(await log_of(h)).abort_requests for h in handles] == [1, 1, 0, 0]


# --- maintenance windows -----------------------------------------------------------------------------------
async def now_of(env: WorkflowEnvironment) -> datetime:
    return (await env.get_current_time()).astimezone(UTC)


async def skip_to(env: WorkflowEnvironment, moment: datetime) -> None:
    """Move the test server's clock forward to ``moment``."""
    now = await now_of(env)
    assert moment > now, f"cannot go back from {now} to {moment}"
    await env.sleep(moment - now)


def next_weekday_at(after: datetime, weekday: int, hour: int) -> datetime:
    """The first ``weekday`` (0 = Monday) at ``hour``:00 UTC more than an hour after ``after``."""
    moment = datetime(after.year, after.month, after.day, hour, tzinfo=UTC)
    while moment.weekday() != weekday or moment <= after + timedelta(hours=1):
        moment += timedelta(days=1)
    return moment


def closed_window_day(now: datetime, hour: int) -> datetime:
    """``hour``:00 UTC two days from ``now``: a window opening then (for under a day) is never open now,
    whatever the day and hour these tests run at."""
    return next_weekday_at(now, (now.weekday() + 2) % 7, hour)


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    while day.weekday() != 6:
        day -= timedelta(days=1)
    return day


def window(days: list[str], start: str, duration: str, timezone: str = "UTC") -> dict[str, Any]:
    return {"maintenance": {"window": {"days": days, "start": start, "duration": duration, "timezone": timezone}}}


async def run_waiting(env: WorkflowEnvironment, queue: str, ids: list[str], **options: Any) -> FleetStatus:
    """Start a rollout, see it waiting for the window, then let the clock run to the end."""
    fleet = await start_fleet(env, queue, ids, **options)
    waiting = await until(fleet, lambda s: any(c.window_opens_at for c in s.clusters), "window wait")
    assert waiting.clusters[0].state is RolloutClusterState.WAITING_WINDOW
    assert waiting.clusters[0].reason.startswith("waiting for the maintenance window, opens at ")
    assert waiting.message.startswith(f"{ids[0]}: waiting for the maintenance window, opens at ")
    return await result_of(fleet)


async def test_a_closed_window_waits_for_it_to_open(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    now = await now_of(time_skipping_env)
    opens = closed_window_day(now, 3)
    ids, handles = await clusters(
        time_skipping_env, queue, 1, spec=window([opens.strftime("%a").lower()], "03:00", "2h")
    )
    final = await run_waiting(time_skipping_env, queue, ids)
    assert final.state is FleetState.SUCCEEDED
    started = final.clusters[0].started_at
    assert started is not None and opens <= started < opens + timedelta(minutes=1)
    assert (await log_of(handles[0])).operations[0].started_at >= opens


async def test_a_window_spanning_midnight_is_open_after_midnight(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    # Friday 22:00 for 6h: at Saturday 01:00 the window (Friday's) is open, and a cluster starts.
    saturday_night = next_weekday_at(await now_of(time_skipping_env), 5, 1)
    await skip_to(time_skipping_env, saturday_night)
    ids, _ = await clusters(time_skipping_env, queue, 1, spec=window(["fri"], "22:00", "6h"))
    final = await result_of(await start_fleet(time_skipping_env, queue, ids), time_skipping_env)
    started = final.clusters[0].started_at
    assert started is not None and started - saturday_night < timedelta(minutes=1)
    # After it closes (Saturday 04:00), the next cluster waits for the next Friday 22:00.
    await skip_to(time_skipping_env, saturday_night + timedelta(hours=3))
    later, _ = await clusters(time_skipping_env, queue, 1, spec=window(["fri"], "22:00", "6h"))
    final = await run_waiting(time_skipping_env, queue, later)
    started = final.clusters[0].started_at
    friday = saturday_night + timedelta(days=6, hours=21)
    assert started is not None and friday <= started < friday + timedelta(minutes=1)


@pytest.mark.parametrize(("month", "utc_hour"), [(3, 1), (10, 0)], ids=["spring-forward", "fall-back"])
async def test_a_window_on_a_dst_change_opens_at_the_right_instant(
    time_skipping_env: WorkflowEnvironment, queue: str, month: int, utc_hour: int
) -> None:
    # 02:30 Berlin on the change's Sunday: in the spring gap it means 03:30 CEST (01:30 UTC); in the
    # autumn it happens twice and the first (CEST, 00:30 UTC) counts.
    now = await now_of(time_skipping_env)
    year = now.year if now.date() < last_sunday(now.year, month) - timedelta(days=1) else now.year + 1
    sunday = last_sunday(year, month)
    await skip_to(time_skipping_env, datetime(sunday.year, sunday.month, sunday.day, tzinfo=UTC) - timedelta(hours=12))
    ids, _ = await clusters(time_skipping_env, queue, 1, spec=window(["sun"], "02:30", "4h", "Europe/Berlin"))
    final = await run_waiting(time_skipping_env, queue, ids)
    opens = datetime(sunday.year, sunday.month, sunday.day, utc_hour, 30, tzinfo=UTC)
    started = final.clusters[0].started_at
    assert started is not None and opens <= started < opens + timedelta(minutes=1)


async def test_a_rotation_due_before_the_window_runs_on_time(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    now = await now_of(time_skipping_env)
    # The window is days away; the leaves expire in 30h and rotate every 24h: deadline in 6h.
    spec = window([closed_window_day(now, 2).strftime("%a").lower()], "02:00", "2h")
    ids, handles = await clusters(time_skipping_env, queue, 1, spec=spec, earliest_expiry=now + timedelta(hours=30))
    final = await result_of(
        await start_fleet(time_skipping_env, queue, ids, operation=FleetOperation.ROTATE_CERTIFICATES),
        time_skipping_env,
    )
    started = final.clusters[0].started_at
    assert final.state is FleetState.SUCCEEDED
    assert started is not None and started - now < timedelta(minutes=1)
    assert [op.kind for op in (await log_of(handles[0])).operations] == ["rotate-certificates"]


async def test_a_rotation_with_time_to_spare_waits_for_the_window(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    now = await now_of(time_skipping_env)
    opens = closed_window_day(now, 2)
    spec = window([opens.strftime("%a").lower()], "02:00", "2h")
    ids, _ = await clusters(time_skipping_env, queue, 1, spec=spec, earliest_expiry=opens + timedelta(days=3))
    final = await run_waiting(time_skipping_env, queue, ids, operation=FleetOperation.ROTATE_CERTIFICATES)
    started = final.clusters[0].started_at
    assert started is not None and opens <= started < opens + timedelta(minutes=1)


async def test_now_with_a_reason_overrides_the_window_on_the_record(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    now = await now_of(time_skipping_env)
    spec = window([closed_window_day(now, 2).strftime("%a").lower()], "02:00", "2h")
    ids, _ = await clusters(time_skipping_env, queue, 1, spec=spec)
    override = MaintenanceOverride(reason="CVE-2026-1234 hotfix", by="frank")
    final = await result_of(
        await start_fleet(
            time_skipping_env, queue, ids, operation=FleetOperation.ROTATE_CA, maintenance_override=override
        ),
        time_skipping_env,
    )
    started = final.clusters[0].started_at
    assert started is not None and started - now < timedelta(minutes=1)
    assert final.maintenance_override == override


async def test_a_waiting_cluster_does_not_hold_back_one_whose_window_is_open(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    now = await now_of(time_skipping_env)
    opens = closed_window_day(now, 5)
    closed, _ = await clusters(time_skipping_env, queue, 1, spec=window([opens.strftime("%a").lower()], "05:00", "1h"))
    anytime, _ = await clusters(time_skipping_env, queue, 1)
    final = await result_of(await start_fleet(time_skipping_env, queue, closed + anytime, parallel=1))
    by_id = {c.cluster_id: c for c in final.clusters}
    first, second = by_id[anytime[0]].started_at, by_id[closed[0]].started_at
    assert first is not None and second is not None
    assert first - now < timedelta(minutes=1) and opens <= second < opens + timedelta(minutes=1)


# --- continue-as-new ---------------------------------------------------------------------------------------
async def test_a_big_rollout_continues_as_new_and_asks_no_cluster_twice(
    time_skipping_env: WorkflowEnvironment, queue: str
) -> None:
    ids, handles = await clusters(time_skipping_env, queue, 7)
    fleet = await start_fleet(
        time_skipping_env, queue, ids, parallel=2, canary=1, approve_after_canary=True, max_history_events=20
    )
    await until(fleet, lambda s: s.state is FleetState.WAITING_APPROVAL, "approval wait")
    await fleet.execute_update(FleetRolloutWorkflow.approve, ApprovalRequest(by="alice"))
    final = await result_of(fleet, time_skipping_env)
    assert final.state is FleetState.SUCCEEDED
    assert [c.state for c in final.clusters] == [RolloutClusterState.SUCCEEDED] * 7
    assert all(c.kubernetes_version == TARGET for c in final.clusters)
    assert await held_operations(handles) == [1] * 7  # each entity was asked once, across the runs
    assert final.approval is not None and final.approval.by == "alice"  # carried into the later runs
    continued = [line for line in final.log if "continuing as new" in line]
    assert len(continued) >= 2, final.log
    # The first run ended by continuing as new, the last one is a different run with a short history.
    first = time_skipping_env.client.get_workflow_handle(fleet.id, run_id=fleet.result_run_id)
    assert (await first.describe()).status is WorkflowExecutionStatus.CONTINUED_AS_NEW
    last = time_skipping_env.client.get_workflow_handle(fleet.id)
    assert (await last.describe()).run_id != fleet.result_run_id
    assert len((await last.fetch_history()).events) < 80
    assert final.max_in_flight <= 2


# --- determinism ---------------------------------------------------------------------------------------------
async def test_a_rollout_with_every_kind_of_wait_replays(time_skipping_env: WorkflowEnvironment, queue: str) -> None:
    """Canary, approval, pause/resume and a window wait, replayed from history without a server."""
    history = await scenario_history(time_skipping_env, queue)
    await assert_replays(history)
    kinds = {e.WhichOneof("attributes") for e in history.events}
    assert {"timer_started_event_attributes", "workflow_execution_update_accepted_event_attributes"} <= kinds


async def scenario_history(env: WorkflowEnvironment, queue: str) -> WorkflowHistory:
    """The recorded scenario (tests/histories/fleet-canary-approve-window--FleetRollout.json)."""
    now = await now_of(env)
    opens = closed_window_day(now, 2)
    plain, plain_handles = await clusters(env, queue, 2, hold=True)
    windowed, _ = await clusters(env, queue, 1, spec=window([opens.strftime("%a").lower()], "02:00", "2h"))
    fleet = await start_fleet(env, queue, plain + windowed, parallel=2, canary=1, approve_after_canary=True)
    await until(fleet, lambda s: running(s) == {plain[0]}, "canary running")
    await plain_handles[0].signal("release")
    await until(fleet, lambda s: s.state is FleetState.WAITING_APPROVAL, "approval wait")
    await fleet.execute_update(FleetRolloutWorkflow.approve, ApprovalRequest(by="alice", comment="ok"))
    await until(fleet, lambda s: running(s) == {plain[1]}, "second running")
    await fleet.execute_update(FleetRolloutWorkflow.control, FleetControl(action=FleetAction.PAUSE, by="bob"))
    await fleet.execute_update(FleetRolloutWorkflow.control, FleetControl(action=FleetAction.RESUME, by="bob"))
    await plain_handles[1].signal("release")
    await until(fleet, lambda s: s.clusters[2].state is RolloutClusterState.WAITING_WINDOW, "window wait")
    final = await result_of(fleet)
    assert final.state is FleetState.SUCCEEDED
    return await fleet.fetch_history()


async def record_history() -> None:
    """``python -m tests.workflows.test_fleet_logic``: record the scenario for tests/replay."""
    import json

    from tests.servers import start_time_skipping

    env = await start_time_skipping()
    try:
        name = "fleet-canary-approve-window"
        STARTED[name] = []
        worker = build_worker(
            env.client,
            name,
            activities_of(FleetRequests(env.client)),
            workflows=[FleetRolloutWorkflow, FakeClusterWorkflow],
        )
        async with worker:
            history = await scenario_history(env, name)
        path = Path(__file__).resolve().parents[1] / "histories" / f"{name}--FleetRollout.json"
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
