"""Every activity heartbeats while its worker lives, so a SIGKILLed worker's calls move to
another worker within the heartbeat timeout (seconds), not at their start-to-close (README "When a
worker dies").

The heartbeat says "this worker process is alive", not "this call makes progress": a hung call is
still cut off by its start-to-close. The activity's own heartbeat details (a wait's start, which a
retried attempt resumes from) are sent again unchanged, never replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

LIVENESS_BEAT_SECONDS: Final = 0.5
"""How often a running sync activity's worker says it is alive. The SDK sends at most one heartbeat
per ``policies.HEARTBEAT_THROTTLE`` and keeps only the latest, so this only needs to be shorter than
that (half of it: a beat is always waiting when the SDK sends)."""


class LivenessHeartbeats(Interceptor):
    """Worker interceptor: a heartbeat task on the worker's event loop beside every activity (sync
    ones run in the thread pool, async ones on the loop), for as long as it runs."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next)


class _Outbound(ActivityOutboundInterceptor):
    """Remembers the details of the activity's own last heartbeat, to repeat them."""

    details: tuple[Any, ...] | None = None

    def heartbeat(self, *details: Any) -> None:
        # Every heartbeat reaches this on the event loop (the SDK hands sync activities' over).
        self.details = details
        super().heartbeat(*details)

    def beat(self) -> None:
        # Before the activity's first own heartbeat, repeat what the previous attempt left.
        details = self.details if self.details is not None else tuple(activity.info().heartbeat_details)
        super().heartbeat(*details)


class _Inbound(ActivityInboundInterceptor):
    outbound: _Outbound | None = None

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self.outbound = _Outbound(outbound)
        super().init(self.outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        # A local activity lives in its workflow task: the server knows no heartbeat of it, and core
        # would log each one as failed.
        if self.outbound is None or activity.info().is_local:
            return await super().execute_activity(input)
        beater = asyncio.create_task(_beat_forever(self.outbound), name="activity-liveness")
        try:
            return await super().execute_activity(input)
        finally:
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater


async def _beat_forever(outbound: _Outbound) -> None:
    while True:
        await asyncio.sleep(LIVENESS_BEAT_SECONDS)
        outbound.beat()
