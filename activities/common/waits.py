"""The one wait budget every heartbeating wait of every provider shares (KVM, AWS, tenant API).

A ``WaitBudget`` is a deadline and a poll rhythm:

- resumable: its start travels in the heartbeat details (``started_at``), so an attempt retried
  after a worker loss keeps the original deadline rather than starting the clock again (waits
  whose expiry is retryable, such as a deletion AWS has not let go of yet, start afresh instead:
  ``resume=False``);
- bounded by the attempt: it never outlasts the activity's start-to-close (less a margin to say
  what it waited for), so a wait fails naming what it waits for instead of being cut off by a
  timeout that says nothing;
- quick to notice: the condition is looked at first, then again after 0.1 s, backing off to a cap
  (the provider's poll interval), heartbeating every round; progress starts the rhythm over.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from models.errors import NodesNotReady, NotReady
from models.naming import node_role
from models.provider import NodeObservation, NodesResult, WaitNodesInput

FIRST_POLL_SECONDS: Final = 0.1
"""The first look after the immediate one: most things a wait waits for are done within a second."""
BACKOFF_FACTOR: Final = 2.0
MAX_NODES_IN_MESSAGE: Final = 20
ATTEMPT_MARGIN_SECONDS: Final = 60.0
"""Of an attempt's start-to-close, at most this much (and at most a tenth) is kept back to report."""


def resumed_start(details: Sequence[Any] | None = None) -> float:
    """When this wait began: the start an earlier attempt heartbeated (if plausible), else now."""
    for detail in activity.info().heartbeat_details if details is None else details:
        started = detail.get("started_at") if isinstance(detail, dict) else None
        if isinstance(started, int | float) and 0 < started <= time.time():
            return float(started)
    return time.time()


def attempt_deadline() -> float:
    """``time.time()`` by which this attempt must stop waiting: its start-to-close, less a margin."""
    info = activity.info()
    timeout = info.start_to_close_timeout
    if not timeout:
        return math.inf
    seconds = timeout.total_seconds()
    started = info.started_time.timestamp()
    if started <= 0:  # no start time known (a test environment): the attempt starts now
        started = time.time()
    return started + seconds - min(ATTEMPT_MARGIN_SECONDS, seconds / 10)


def pause(seconds: float, what: str) -> None:
    """Sleep; wake at once and stop if the activity is cancelled (an abort, a teardown)."""
    activity.wait_for_cancelled_sync(seconds)
    if activity.is_cancelled():
        raise CancelledError(f"cancelled while {what}")


class WaitBudget:
    """One wait's deadline and poll rhythm (see the module docstring)."""

    def __init__(
        self, timeout: float, *, max_poll: float, resume: bool = True, first_poll: float = FIRST_POLL_SECONDS
    ) -> None:
        self.timeout = timeout
        self.started = resumed_start() if resume else time.time()
        self.overall_deadline = self.started + timeout
        self.deadline = min(self.overall_deadline, attempt_deadline())
        self.max_poll = max_poll
        self.first_poll = first_poll
        self._next = min(first_poll, max_poll)

    @property
    def expired(self) -> bool:
        return time.time() >= self.deadline

    def end_of_attempt(self, what: str) -> None:
        """At expiry: if only this attempt's time is up (not the wait's), fail retryably, so the next
        attempt resumes the same wait (its start travels in the heartbeat details)."""
        if time.time() < self.overall_deadline:
            raise NotReady(
                f"still waiting for {what} after {self.waited:.0f}s when this attempt's time was up; "
                "the next attempt resumes the wait"
            )

    @property
    def waited(self) -> float:
        return time.time() - self.started

    def heartbeat(self, **details: Any) -> None:
        """Heartbeat what is still awaited, with the start that keeps the deadline across attempts."""
        activity.heartbeat({"started_at": self.started, **details})

    def progressed(self) -> None:
        """Something moved: look again soon, as at the start."""
        self._next = min(self.first_poll, self.max_poll)

    def next_interval(self) -> float:
        """How long to wait before the next look (never past the deadline); backs off for the one after."""
        interval = max(min(self._next, self.deadline - time.time()), 0.0)
        self._next = min(self._next * BACKOFF_FACTOR, self.max_poll)
        return interval

    def sleep(self, what: str) -> None:
        """Wait ``next_interval`` before the next look; wake at once and stop if cancelled."""
        pause(self.next_interval(), what)


def wait_for_nodes(
    input: WaitNodesInput,
    observe: Callable[[], list[NodeObservation]],
    unavailable: Callable[[Exception], str],
    max_poll: float,
) -> NodesResult:
    """Look at ``observe`` until every node is ready, heartbeating the ones still pending.

    ``unavailable`` turns a backend error met while observing into the reason shown for every
    node (a wait outlives short hiccups instead of failing on one), or raises it when it is not
    worth waiting out. At the deadline the wait fails permanently with ``NodesNotReady``, naming
    each pending node and why; its details list their names.
    """
    spec = input.spec
    budget = WaitBudget(input.timeout.total_seconds(), max_poll=max_poll)
    ready_before = -1
    while True:
        try:
            observed = observe()
        except Exception as exc:
            reason = unavailable(exc)
            observed = [
                NodeObservation(name=n, role=node_role(n), kubernetes_version="", ready=False, detail=reason)
                for n in input.nodes
            ]
        pending = [o for o in observed if not o.ready]
        if not pending:
            return NodesResult(nodes=observed)
        if len(observed) - len(pending) > ready_before >= 0:
            budget.progressed()  # a node became ready: the next may well follow at once
        ready_before = len(observed) - len(pending)
        waiting = [f"{o.name}: {o.detail}" for o in pending]
        budget.heartbeat(pending=waiting)
        if budget.expired:
            budget.end_of_attempt(", ".join(o.name for o in pending))
            shown = "; ".join(waiting[:MAX_NODES_IN_MESSAGE])
            if len(waiting) > MAX_NODES_IN_MESSAGE:
                shown += f"; and {len(waiting) - MAX_NODES_IN_MESSAGE} more (see the error details)"
            raise ApplicationError(
                f"{len(pending)} of {len(observed)} nodes of {spec.id} not ready after {input.timeout}: {shown}",
                [o.name for o in pending],
                type=NodesNotReady.__name__,
                non_retryable=True,
            )
        budget.sleep(f"waiting for nodes {', '.join(o.name for o in pending)}")
