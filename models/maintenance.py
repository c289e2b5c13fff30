"""Maintenance windows: when a customer lets its cluster be disrupted (upgrades, CA rotations).

``maintenance: {window: {days: [sat, sun], start: "02:00", duration: 4h, timezone: Europe/Berlin}}``
opens a window at 02:00 local time on every listed day, for 4 hours of elapsed time.

Pure arithmetic on aware datetimes; the rules for the two daylight-saving transitions are
deliberate, because a window is a promise to a customer:

- spring forward (the local start time does not exist that day, e.g. 02:30 in Berlin on the last
  Sunday of March): the window opens as many minutes later as the clocks jumped (03:30 local),
  the way cron and most schedulers resolve a time in the gap;
- fall back (the local start time happens twice): the window opens at the first occurrence;
- ``duration`` is elapsed time, so a 4h window is 4 hours long on a 23- or 25-hour day too.

A window may run past midnight (``start: "22:00", duration: 6h`` closes at 04:00 the next day); it
belongs to the day it opens on.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from models.base import FrozenModel, Model
from models.durations import Duration, format_duration

MAX_WINDOW_DURATION = timedelta(days=7)
MIN_WINDOW_DURATION = timedelta(minutes=1)
_START = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def number(self) -> int:
        """Monday is 0, as ``date.weekday()`` counts."""
        return list(Weekday).index(self)


_DAY_NAMES = {
    **{day.value: day.value for day in Weekday},
    **{
        name: day.value
        for day, name in zip(
            Weekday, ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"), strict=True
        )
    },
}


def _day(value: Any) -> Any:
    if isinstance(value, str):
        key = value.strip().lower()
        if key not in _DAY_NAMES:
            raise ValueError(f"'{value}' is not a day; use mon, tue, wed, thu, fri, sat or sun")
        return _DAY_NAMES[key]
    return value


def _start(value: str) -> str:
    if not _START.match(value):
        raise ValueError(f"must be a 24-hour local time HH:MM such as '02:00' (got '{value}')")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"'{value}' is not an IANA time zone such as 'Europe/Berlin' or 'UTC'") from None
    return value


Day = Annotated[Weekday, BeforeValidator(_day)]
StartTime = Annotated[str, AfterValidator(_start)]
TimeZoneName = Annotated[str, AfterValidator(_timezone)]


class Opening(FrozenModel):
    """One occurrence of a window, in UTC."""

    opens_at: datetime
    closes_at: datetime

    def contains(self, instant: datetime) -> bool:
        return self.opens_at <= instant < self.closes_at


class MaintenanceWindow(Model):
    """A weekly window: ``days`` at local ``start`` in ``timezone``, open for ``duration``."""

    days: list[Day] = Field(min_length=1, description="days the window opens on: mon..sun")
    start: StartTime = Field(description="local opening time HH:MM (24-hour)")
    duration: Duration = Field(description="how long the window stays open, e.g. 4h")
    timezone: TimeZoneName = Field(default="UTC", description="IANA time zone of 'start', e.g. Europe/Berlin")

    @field_validator("days")
    @classmethod
    def _distinct_days(cls, days: list[Weekday]) -> list[Weekday]:
        repeated = sorted({d.value for d in days if days.count(d) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once")
        return days

    @field_validator("duration")
    @classmethod
    def _duration_range(cls, duration: timedelta) -> timedelta:
        if not MIN_WINDOW_DURATION <= duration <= MAX_WINDOW_DURATION:
            raise ValueError(
                f"must be between {format_duration(MIN_WINDOW_DURATION)} and "
                f"{format_duration(MAX_WINDOW_DURATION)} (got {format_duration(duration)})"
            )
        return duration

    # --- arithmetic -------------------------------------------------------------------------------
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def opening_on(self, day: date) -> Opening:
        """The occurrence that opens on local ``day`` (whether or not ``day`` is one of ``days``)."""
        hour, minute = (int(part) for part in self.start.split(":"))
        # fold=0: a time in the spring-forward gap resolves with the offset before the jump (so it
        # lands as far after the jump as it was meant to be into the gap), and a time that happens
        # twice in the fall-back overlap resolves to its first occurrence.
        local = datetime.combine(day, time(hour, minute), tzinfo=self.zone)
        opens = local.astimezone(UTC)
        return Opening(opens_at=opens, closes_at=opens + self.duration)

    def openings_from(self, instant: datetime, count: int) -> list[Opening]:
        """The first ``count`` occurrences that are open at or after ``instant``, in order.

        Includes the occurrence ``instant`` is inside of, if any (it may have opened days ago).
        """
        moment = _aware(instant)
        wanted = {d.number for d in self.days}
        # Start far enough back to find an occurrence still open at ``instant`` (durations up to 7d).
        day = moment.astimezone(self.zone).date() - timedelta(days=self.duration.days + 1)
        found: list[Opening] = []
        while len(found) < count:
            if day.weekday() in wanted:
                opening = self.opening_on(day)
                if opening.closes_at > moment:
                    found.append(opening)
            day += timedelta(days=1)
        return found

    def current_opening(self, instant: datetime) -> Opening | None:
        """The occurrence ``instant`` is inside of, or None when the window is closed."""
        moment = _aware(instant)
        # Occurrences of long windows can overlap (mon 00:00 for 48h and tue 00:00): any will do.
        for opening in self.openings_from(moment, len(self.days) + 1):
            if opening.contains(moment):
                return opening
        return None

    def is_open(self, instant: datetime) -> bool:
        return self.current_opening(instant) is not None

    def next_opening(self, instant: datetime) -> datetime:
        """When a window next opens at or after ``instant`` (``instant`` itself if one opens then)."""
        moment = _aware(instant)
        return next(o.opens_at for o in self.openings_from(moment, len(self.days) + 1) if o.opens_at >= moment)

    def earliest_start(self, instant: datetime) -> datetime:
        """When a disruptive operation asked for at ``instant`` may start: now if open, else the next opening."""
        moment = _aware(instant)
        return moment if self.is_open(moment) else self.next_opening(moment)

    def describe(self) -> str:
        days = ", ".join(d.value for d in self.days)
        return f"{days} {self.start} {self.timezone} for {format_duration(self.duration)}"


class Maintenance(Model):
    """When disruptive operations may run on a cluster (no window: any time)."""

    window: MaintenanceWindow | None = None


class StartDecision(FrozenModel):
    """When an operation may start, and why then."""

    at: datetime
    reason: str


def decide_start(
    window: MaintenanceWindow | None,
    instant: datetime,
    deadline: datetime | None = None,
) -> StartDecision:
    """When an operation asked for at ``instant`` starts.

    ``deadline`` is the latest moment it may start (a leaf rotation's renewal deadline): it runs in
    a window when one opens before the deadline, otherwise on time, so no certificate expires while
    it waits for a window.
    """
    moment = _aware(instant)
    if window is None:
        return StartDecision(at=moment, reason="no maintenance window")
    if window.is_open(moment):
        return StartDecision(at=moment, reason="inside the maintenance window")
    opens = window.next_opening(moment)
    if deadline is not None and opens > _aware(deadline):
        return StartDecision(
            at=moment,
            reason=f"the next maintenance window opens at {format_instant(opens)}, after the deadline "
            f"{format_instant(_aware(deadline))}: runs on time",
        )
    return StartDecision(at=opens, reason=f"waiting for the maintenance window, opens at {format_instant(opens)}")


class MaintenanceOverride(FrozenModel):
    """``--now --reason TEXT``: run outside the maintenance window, on the record (who and why)."""

    reason: str = Field(min_length=1, max_length=500, description="why the window is overridden")
    by: str = Field(default="", description="who overrode it")

    @field_validator("reason")
    @classmethod
    def _reason_text(cls, reason: str) -> str:
        text = reason.strip()
        if not text:
            raise ValueError("must not be empty: say why the maintenance window is overridden")
        return text

    def describe(self) -> str:
        return f"outside the maintenance window{f' by {self.by}' if self.by else ''}: {self.reason}"


def renewal_deadline(earliest_expiry: datetime | None, rotation_interval: timedelta) -> datetime | None:
    """The latest moment a leaf rotation may start: one rotation interval before the first expiry.

    Waiting past it would leave less than an interval of life on a certificate, so a missed or
    failed rotation could let it expire before the next one.
    """
    return None if earliest_expiry is None else _aware(earliest_expiry) - rotation_interval


def leaf_rotation_deadline(
    earliest_expiry: datetime | None, rotation_interval: timedelta, asked_at: datetime, max_wait: timedelta
) -> datetime:
    """How long a scheduled leaf rotation asked for at ``asked_at`` may wait for a window: until
    the renewal deadline, and never longer than ``max_wait`` (what its requester waits for)."""
    latest = _aware(asked_at) + max_wait
    deadline = renewal_deadline(earliest_expiry, rotation_interval)
    return latest if deadline is None else min(deadline, latest)


def format_instant(instant: datetime) -> str:
    return _aware(instant).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant.isoformat()} has no time zone; window arithmetic needs aware datetimes")
    return instant.astimezone(UTC)
