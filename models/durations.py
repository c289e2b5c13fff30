"""Human durations such as ``72h``, ``1d12h`` or ``90m`` for specs, accepted alongside ISO 8601 and seconds.

Pydantic alone only reads ISO 8601 (``PT72H``) or numbers; platform people write ``72h``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?[wdhms])+$")


def parse_duration(value: Any) -> Any:
    """Turn ``"72h"``/``"1d12h"``/``"90m"`` into a timedelta; leave other inputs to pydantic."""
    if isinstance(value, str):
        text = value.strip().lower()
        if _WHOLE.match(text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
            return timedelta(seconds=seconds)
    return value


def format_duration(value: timedelta) -> str:
    """Shortest ``1d2h3m4s`` form of a timedelta (the inverse of :func:`parse_duration`)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
