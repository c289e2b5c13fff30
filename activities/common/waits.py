"""What every heartbeating wait of every provider shares: a deadline that survives retries, a
cancellable poll, and the wait for nodes to become ready.

The start time travels in the heartbeat details, so an attempt retried after a worker loss keeps
the original deadline rather than starting the clock again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from models.errors import NodesNotReady
from models.naming import node_role
from models.provider import NodeObservation, NodesResult, WaitNodesInput

MAX_NODES_IN_MESSAGE = 20


def resumed_start(details: Sequence[Any] | None = None) -> float:
    """When this wait began: the start an earlier attempt heartbeated (if plausible), else now."""
    for detail in activity.info().heartbeat_details if details is None else details:
        started = detail.get("started_at") if isinstance(detail, dict) else None
        if isinstance(started, int | float) and 0 < started <= time.time():
            return float(started)
    return time.time()


def pause(seconds: float, what: str) -> None:
    """Sleep one poll interval; wake at once and stop if the activity is cancelled."""
    activity.wait_for_cancelled_sync(seconds)
    if activity.is_cancelled():
        raise CancelledError(f"cancelled while {what}")


def wait_for_nodes(
    input: WaitNodesInput,
    observe: Callable[[], list[NodeObservation]],
    unavailable: Callable[[Exception], str],
    poll_interval: float,
) -> NodesResult:
    """Poll ``observe`` until every node is ready, heartbeating the ones still pending.

    ``unavailable`` turns a backend error met while observing into the reason shown for every
    node (a wait outlives short hiccups instead of failing on one), or raises it when it is not
    worth waiting out. At the deadline the wait fails permanently with ``NodesNotReady``, naming
    each pending node and why; its details list their names.
    """
    spec = input.spec
    started = resumed_start()
    deadline = started + input.timeout.total_seconds()
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
        waiting = [f"{o.name}: {o.detail}" for o in pending]
        activity.heartbeat({"started_at": started, "pending": waiting})
        if time.time() >= deadline:
            shown = "; ".join(waiting[:MAX_NODES_IN_MESSAGE])
            if len(waiting) > MAX_NODES_IN_MESSAGE:
                shown += f"; and {len(waiting) - MAX_NODES_IN_MESSAGE} more (see the error details)"
            raise ApplicationError(
                f"{len(pending)} of {len(observed)} nodes of {spec.id} not ready after {input.timeout}: {shown}",
                [o.name for o in pending],
                type=NodesNotReady.__name__,
                non_retryable=True,
            )
        pause(poll_interval, f"waiting for nodes {', '.join(o.name for o in pending)}")
