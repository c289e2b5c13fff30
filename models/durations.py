"""Human durations such as ``72h``, ``1d12h`` or ``90m`` for specs, accepted alongside ISO 8601 and seconds.

Pydantic alone only reads ISO 8601 (``PT72H``) or numbers; platform people write ``72h``.

Every duration is bounded (:data:`MAX_DURATION`) *before* any arithmetic: ``99999999999999h`` is
refused with a message, never an ``OverflowError`` from ``timedelta`` or from a later comparison.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([wdhms])")
_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[wdhms])+")
MAX_DURATION = timedelta(days=36500)
"""100 years: longer than any certificate or timeout means, and far below ``timedelta``'s limit,
so doubling or tripling a bounded duration in a rule can never overflow."""
MAX_DURATION_TEXT = 64
"""A duration written by hand is a few characters; anything longer is refused unread."""


def _bounded(seconds: float) -> timedelta:
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION.total_seconds():
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)} (100 years)")
    return timedelta(seconds=seconds)


def parse_duration(value: Any) -> Any:
    """Turn ``"72h"``/``"1d12h"``/``"90m"`` or a number of seconds into a bounded timedelta.

    Other strings (ISO 8601) are left to pydantic; :func:`check_duration` bounds the result.
    Raises ``ValueError`` (which pydantic reports against the field) for a value out of range.
    """
    if isinstance(value, bool):
        return value  # pydantic refuses it as "not a duration"; True is not one second
    if isinstance(value, int | float):
        return _bounded(float(value))
    if isinstance(value, str):
        if len(value) > MAX_DURATION_TEXT:
            raise ValueError(f"is not a duration such as 72h, 1d12h or 90m (got {len(value)} characters)")
        text = value.strip().lower()
        if _WHOLE.fullmatch(text):
            return _bounded(sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text)))
    return value


def check_duration(value: timedelta) -> timedelta:
    """The bound again, for values pydantic parsed itself (ISO 8601 such as ``P99999D``)."""
    if abs(value) > MAX_DURATION:
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)} (100 years)")
    return value


def format_duration(value: timedelta) -> str:
    """Shortest ``1d2h3m4s`` form of a timedelta (the inverse of :func:`parse_duration`)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(check_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
