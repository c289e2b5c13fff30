"""The one wait budget of every provider wait (activities.common.waits), inside a real activity context."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from activities.common.waits import FIRST_POLL_SECONDS, WaitBudget
from models.errors import NotReady


def environment(start_to_close: float = 600, heartbeat_details: tuple[object, ...] = ()) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        start_to_close_timeout=timedelta(seconds=start_to_close),
        started_time=datetime.now(UTC),
        heartbeat_details=list(heartbeat_details),
    )
    return env


def test_it_looks_again_soon_then_backs_off_to_the_cap_and_starts_over_on_progress() -> None:
    def intervals() -> list[float]:
        budget = WaitBudget(3600, max_poll=2.0)
        first = [round(budget.next_interval(), 3) for _ in range(7)]
        budget.progressed()
        return [*first, round(budget.next_interval(), 3)]

    assert environment().run(intervals) == [FIRST_POLL_SECONDS, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, FIRST_POLL_SECONDS]


def test_a_retried_attempt_keeps_the_first_attempts_start_and_a_fresh_wait_does_not() -> None:
    an_hour_ago = time.time() - 3600
    env = environment(heartbeat_details=({"started_at": an_hour_ago, "pending": ["worker-0: booting"]},))
    resumed = env.run(lambda: WaitBudget(600, max_poll=1.0))
    assert resumed.started == an_hour_ago and resumed.expired
    fresh = env.run(lambda: WaitBudget(600, max_poll=1.0, resume=False))
    assert fresh.started > an_hour_ago and not fresh.expired


def test_it_never_outlasts_the_attempt_and_never_sleeps_past_its_deadline() -> None:
    def bounded() -> tuple[float, float]:
        budget = WaitBudget(3600, max_poll=30.0)
        for _ in range(10):
            budget.next_interval()
        return budget.deadline - time.time(), budget.next_interval()

    left, interval = environment(start_to_close=20).run(bounded)
    assert 0 < left <= 18  # 20 s start-to-close less a tenth kept back to say what it waited for
    assert interval <= left


def test_a_wait_cut_short_by_its_attempt_is_retryable_and_one_past_its_deadline_is_not() -> None:
    env = environment(start_to_close=2)
    env.info = dataclasses.replace(env.info, started_time=datetime.now(UTC) - timedelta(seconds=10))

    def cut_short() -> None:
        budget = WaitBudget(3600, max_poll=1.0)
        assert budget.expired  # the attempt's 2 s are long gone, the wait's hour is not
        budget.end_of_attempt("worker-0")

    with pytest.raises(NotReady, match=r"still waiting for worker-0 .* the next attempt resumes the wait"):
        env.run(cut_short)

    spent = environment(heartbeat_details=({"started_at": time.time() - 3600},))
    budget = spent.run(lambda: WaitBudget(60, max_poll=1.0))
    assert budget.expired
    budget.end_of_attempt("worker-0")  # the wait itself is over: the caller fails it for good


def test_heartbeats_carry_the_start_and_a_cancel_wakes_the_sleep() -> None:
    env = environment()
    seen: list[object] = []
    env.on_heartbeat = lambda *details: seen.append(details[0])

    def wait() -> None:
        budget = WaitBudget(3600, max_poll=3600)
        budget.heartbeat(pending=["master-0"])
        budget._next = 3600  # a long sleep that only a cancel ends
        budget.sleep("waiting for master-0")

    threading.Timer(0.3, env.cancel).start()
    with pytest.raises(CancelledError):  # not after an hour: the cancel ends the sleep
        env.run(wait)
    assert seen and isinstance(seen[0], dict) and seen[0]["pending"] == ["master-0"] and "started_at" in seen[0]
