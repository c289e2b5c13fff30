"""CPU time and memory of a process, from ``/proc`` (Linux): parsers are pure, readers are thin."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_ticks_from_stat(text: str) -> int:
    """utime + stime (fields 14 and 15) of a ``/proc/<pid>/stat`` line, in clock ticks.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself, so the
    fields are counted from the last ``)``.
    """
    after_name = text[text.rindex(")") + 2 :].split()
    # after_name[0] is field 3 (state): field N is after_name[N - 3]
    return int(after_name[14 - 3]) + int(after_name[15 - 3])


def memory_from_status(text: str) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (peak RSS) and friends of a ``/proc/<pid>/status`` text, in bytes."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if key.startswith("Vm") and len(parts) == 2 and parts[1] == "kB":
            found[key] = int(parts[0]) * 1024
    return found


@dataclass
class ProcessMeter:
    """One process's CPU seconds and RSS; ``None`` once it is gone."""

    pid: int
    name: str

    def cpu_seconds(self) -> float | None:
        try:
            return cpu_ticks_from_stat(Path(f"/proc/{self.pid}/stat").read_text()) / CLOCK_TICKS
        except (OSError, ValueError, IndexError):
            return None

    def memory(self) -> dict[str, int]:
        try:
            return memory_from_status(Path(f"/proc/{self.pid}/status").read_text())
        except OSError:
            return {}

    def rss(self) -> int | None:
        return self.memory().get("VmRSS")


class Window:
    """CPU seconds used and peak RSS seen, per process, between ``start`` and ``stop``.

    RSS is sampled every ``interval`` seconds (VmHWM is a lifetime peak and cannot say what one
    window needed).
    """

    def __init__(self, meters: list[ProcessMeter], interval: float = 0.2) -> None:
        self.meters = meters
        self.interval = interval
        self.cpu: dict[str, float | None] = {}
        self.peak_rss: dict[str, int | None] = {}
        self._cpu_start: dict[str, float | None] = {}
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        for meter in self.meters:
            rss = meter.rss()
            if rss is not None:
                self.peak_rss[meter.name] = max(rss, self.peak_rss.get(meter.name) or 0)

    async def _sampling(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._cpu_start = {m.name: m.cpu_seconds() for m in self.meters}
        self.peak_rss = {m.name: None for m in self.meters}
        self._sample()
        self._task = asyncio.get_running_loop().create_task(self._sampling())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()
        for meter in self.meters:
            began, ended = self._cpu_start.get(meter.name), meter.cpu_seconds()
            self.cpu[meter.name] = None if began is None or ended is None else ended - began
