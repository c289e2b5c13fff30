"""Maintenance-window arithmetic: validation, next opening, inside/outside, midnight, DST, deadlines.

Berlin in 2026: clocks jump 02:00 -> 03:00 on Sunday 29 March and fall back 03:00 -> 02:00 on
Sunday 25 October; winter is UTC+1, summer UTC+2.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from models.maintenance import (
    MaintenanceOverride,
    MaintenanceWindow,
    Weekday,
    decide_start,
    leaf_rotation_deadline,
    renewal_deadline,
)
from models.spec import SpecError, parse_spec
from tests.specs import EXAMPLES


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def window(**fields: Any) -> MaintenanceWindow:
    base: dict[str, Any] = {"days": ["sat", "sun"], "start": "02:00", "duration": "4h", "timezone": "Europe/Berlin"}
    return MaintenanceWindow.model_validate({**base, **fields})


def spec_problems(window_fields: dict[str, Any]) -> list[str]:
    data = yaml.safe_load((EXAMPLES / "kvm-cluster.yaml").read_text())
    data["maintenance"] = {"window": window_fields}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.problems


# --- the spec field --------------------------------------------------------------------------------
def test_spec_accepts_a_window_and_keeps_it_across_json() -> None:
    data = yaml.safe_load((EXAMPLES / "kvm-cluster.yaml").read_text())
    data["maintenance"] = {
        "window": {"days": ["sat", "Sunday"], "start": "02:00", "duration": "4h", "timezone": "Europe/Berlin"}
    }
    spec = parse_spec(data)
    assert spec.maintenance is not None and spec.maintenance.window is not None
    assert spec.maintenance.window.days == [Weekday.SAT, Weekday.SUN]
    assert spec.maintenance.window.duration == timedelta(hours=4)
    dumped = spec.model_dump(mode="json")
    assert dumped["maintenance"]["window"]["duration"] == "4h"
    assert parse_spec(dumped) == spec


def test_a_spec_without_maintenance_has_no_window() -> None:
    data = yaml.safe_load((EXAMPLES / "kvm-cluster.yaml").read_text())
    assert parse_spec(data).maintenance is None


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"days": ["sat", "funday"]}, "maintenance.window.days.1", "'funday' is not a day"),
        ({"days": []}, "maintenance.window.days", "at least 1"),
        ({"days": ["sat", "sat"]}, "maintenance.window.days", "sat more than once"),
        ({"start": "2:00"}, "maintenance.window.start", "HH:MM"),
        ({"start": "24:00"}, "maintenance.window.start", "HH:MM"),
        ({"duration": "0s"}, "maintenance.window.duration", "between 1m and 7d"),
        ({"duration": "8d"}, "maintenance.window.duration", "between 1m and 7d"),
        ({"duration": "soon"}, "maintenance.window.duration", ""),
        ({"timezone": "Mars/Olympus_Mons"}, "maintenance.window.timezone", "not an IANA time zone"),
        ({"timezone": "Europe"}, "maintenance.window.timezone", "not an IANA time zone"),
        ({"hours": 3}, "maintenance.window.hours", "unknown field"),
    ],
)
def test_invalid_windows_name_the_field(fields: dict[str, Any], field: str, words: str) -> None:
    base: dict[str, Any] = {"days": ["sat"], "start": "02:00", "duration": "4h", "timezone": "Europe/Berlin"}
    problems = spec_problems({**base, **fields})
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{field}: "), problems
    assert words in problems[0]


def test_start_is_required() -> None:
    assert spec_problems({"days": ["sat"], "duration": "4h"}) == ["maintenance.window.start: required field is missing"]


# --- openings --------------------------------------------------------------------------------------
def test_next_opening_from_a_weekday_is_saturday_at_local_start() -> None:
    # Wednesday 2 December 2026, winter time: 02:00 Berlin is 01:00 UTC.
    assert window().next_opening(utc(2026, 12, 2, 12, 0)) == utc(2026, 12, 5, 1, 0)


def test_an_opening_at_the_instant_itself_counts() -> None:
    w = window()
    assert w.next_opening(utc(2026, 12, 5, 1, 0)) == utc(2026, 12, 5, 1, 0)
    assert w.earliest_start(utc(2026, 12, 5, 1, 0)) == utc(2026, 12, 5, 1, 0)


def test_inside_and_outside() -> None:
    w = window()
    assert not w.is_open(utc(2026, 12, 5, 0, 59))
    assert w.is_open(utc(2026, 12, 5, 1, 0))
    assert w.is_open(utc(2026, 12, 5, 4, 59))
    assert not w.is_open(utc(2026, 12, 5, 5, 0))  # closes at 06:00 local, exclusive
    assert w.is_open(utc(2026, 12, 6, 3, 0))  # Sunday's window
    assert not w.is_open(utc(2026, 12, 7, 3, 0))  # Monday
    # After Saturday's window the next opening is Sunday's, then the next Saturday's.
    assert w.next_opening(utc(2026, 12, 5, 6, 0)) == utc(2026, 12, 6, 1, 0)
    assert w.next_opening(utc(2026, 12, 6, 6, 0)) == utc(2026, 12, 12, 1, 0)


def test_while_open_an_operation_starts_at_once() -> None:
    w = window()
    assert w.earliest_start(utc(2026, 12, 5, 3, 0)) == utc(2026, 12, 5, 3, 0)
    assert w.current_opening(utc(2026, 12, 5, 3, 0)) is not None


def test_a_window_spanning_midnight_belongs_to_the_day_it_opens() -> None:
    w = window(days=["fri"], start="22:00", duration="6h", timezone="UTC")
    assert w.is_open(utc(2026, 12, 4, 23, 0))  # Friday night
    assert w.is_open(utc(2026, 12, 5, 3, 59))  # Saturday morning, still Friday's window
    assert not w.is_open(utc(2026, 12, 5, 4, 0))
    assert not w.is_open(utc(2026, 12, 3, 23, 0))  # Thursday night is not a window
    assert w.next_opening(utc(2026, 12, 5, 4, 0)) == utc(2026, 12, 11, 22, 0)


def test_a_sunday_window_runs_into_monday_across_the_week_boundary() -> None:
    w = window(days=["sun"], start="23:00", duration="2h", timezone="UTC")
    assert w.is_open(utc(2026, 12, 7, 0, 30))  # Monday 00:30
    assert w.next_opening(utc(2026, 12, 7, 1, 0)) == utc(2026, 12, 13, 23, 0)


def test_a_48_hour_window_covers_the_weekend() -> None:
    w = window(days=["sat"], start="00:00", duration="48h", timezone="UTC")
    assert w.is_open(utc(2026, 12, 6, 23, 59))
    assert not w.is_open(utc(2026, 12, 7, 0, 0))
    assert w.next_opening(utc(2026, 12, 7, 0, 0)) == utc(2026, 12, 12, 0, 0)


# --- daylight saving time ----------------------------------------------------------------------------
def test_spring_forward_a_start_in_the_gap_opens_as_late_as_the_clocks_jumped() -> None:
    w = window(days=["sun"], start="02:30")
    # 02:30 does not exist in Berlin on 29 March 2026; the window opens at 03:30 CEST = 01:30 UTC.
    opening = w.opening_on(datetime(2026, 3, 29).date())
    assert opening.opens_at == utc(2026, 3, 29, 1, 30)
    assert opening.closes_at == utc(2026, 3, 29, 5, 30)  # 4 hours of elapsed time
    assert w.next_opening(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 30)
    # The Sundays around it keep their local 02:30: 01:30 UTC in winter, 00:30 UTC in summer.
    assert w.next_opening(utc(2026, 3, 21, 12, 0)) == utc(2026, 3, 22, 1, 30)
    assert w.next_opening(utc(2026, 3, 30, 0, 0)) == utc(2026, 4, 5, 0, 30)


def test_spring_forward_a_start_at_the_jump_opens_at_the_new_time() -> None:
    w = window(days=["sun"], start="02:00")
    assert w.next_opening(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)  # 03:00 CEST


def test_fall_back_a_start_that_happens_twice_opens_at_the_first() -> None:
    w = window(days=["sun"], start="02:30")
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET) on 25 October 2026.
    opening = w.opening_on(datetime(2026, 10, 25).date())
    assert opening.opens_at == utc(2026, 10, 25, 0, 30)
    assert opening.closes_at == utc(2026, 10, 25, 4, 30)
    assert w.is_open(utc(2026, 10, 25, 1, 45))  # the second 02:45 is inside, not a new window
    assert w.next_opening(utc(2026, 10, 25, 5, 0)) == utc(2026, 11, 1, 1, 30)


def test_a_window_across_the_fall_back_night_lasts_its_elapsed_duration() -> None:
    w = window(days=["sat"], start="23:00", duration="6h")
    opening = w.opening_on(datetime(2026, 10, 24).date())  # 23:00 CEST = 21:00 UTC
    assert (opening.opens_at, opening.closes_at) == (utc(2026, 10, 24, 21, 0), utc(2026, 10, 25, 3, 0))


# --- deadlines -------------------------------------------------------------------------------------
def test_without_a_window_an_operation_runs_at_once() -> None:
    decision = decide_start(None, utc(2026, 12, 2, 12, 0))
    assert decision.at == utc(2026, 12, 2, 12, 0)


def test_closed_window_waits_and_says_when_it_opens() -> None:
    decision = decide_start(window(), utc(2026, 12, 2, 12, 0))
    assert decision.at == utc(2026, 12, 5, 1, 0)
    assert decision.reason == "waiting for the maintenance window, opens at 2026-12-05 01:00 UTC"


def test_a_rotation_deadline_before_the_window_runs_on_time() -> None:
    decision = decide_start(window(), utc(2026, 12, 2, 12, 0), deadline=utc(2026, 12, 3, 12, 0))
    assert decision.at == utc(2026, 12, 2, 12, 0)
    assert "runs on time" in decision.reason


def test_a_rotation_deadline_after_the_window_waits_for_it() -> None:
    decision = decide_start(window(), utc(2026, 12, 2, 12, 0), deadline=utc(2026, 12, 6, 0, 0))
    assert decision.at == utc(2026, 12, 5, 1, 0)


def test_the_renewal_deadline_is_one_interval_before_the_first_expiry() -> None:
    assert renewal_deadline(utc(2026, 12, 5, 12, 0), timedelta(hours=24)) == utc(2026, 12, 4, 12, 0)
    assert renewal_deadline(None, timedelta(hours=24)) is None


def test_a_scheduled_rotation_waits_at_most_its_requests_patience() -> None:
    asked, patience = utc(2026, 12, 2, 12, 0), timedelta(hours=11)
    # the renewal deadline (expiry minus one interval) is sooner than the patience: it counts
    assert leaf_rotation_deadline(utc(2026, 12, 3, 6, 0), timedelta(hours=24), asked, patience) == utc(
        2026, 12, 2, 6, 0
    )
    # a far deadline is capped by the patience; no certificates yet: the patience alone
    assert leaf_rotation_deadline(utc(2026, 12, 9, 0, 0), timedelta(hours=24), asked, patience) == asked + patience
    assert leaf_rotation_deadline(None, timedelta(hours=24), asked, patience) == asked + patience


def test_a_deadline_already_past_runs_at_once_even_with_a_window_soon() -> None:
    now = utc(2026, 12, 5, 0, 30)  # the Saturday window opens at 01:00 UTC, the deadline was at 00:00
    decision = decide_start(window(), now, deadline=utc(2026, 12, 5, 0, 0))
    assert decision.at == now and "runs on time" in decision.reason


def test_an_override_needs_a_reason_and_says_who() -> None:
    assert MaintenanceOverride(reason="  CVE fix ", by="frank").describe() == (
        "outside the maintenance window by frank: CVE fix"
    )
    with pytest.raises(ValueError, match="say why"):
        MaintenanceOverride(reason="   ")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        window().next_opening(datetime(2026, 12, 2, 12, 0))
