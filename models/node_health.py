"""Node auto-repair (issue 12): the spec setting, what the entity tracks, and the rules it decides by.

A node is unhealthy when the tenant API does not list it Ready, or when the provider has no running
VM/instance for it (a KVM Deployment missing, scaled to 0 or not available; an EC2 instance missing,
stopped or terminated). The entity observes both views once per periodic check (one activity per
backend) and remembers since when each node is unhealthy, in its status: the time is the entity's
(``workflow.now()`` at the first observation), so it is deterministic and survives continue-as-new.

The decisions are pure (this module): Cluster API MachineHealthCheck semantics. A node unhealthy
for ``unhealthy_after`` is repaired, one at a time; when more than ``max_unhealthy`` percent of the
nodes are unhealthy at once, nothing is repaired (a network partition or a host outage looks like
that, and replacing half a cluster makes it worse); a master is never touched while fewer than a
majority of the masters are healthy (etcd has no quorum then: a restart could lose the member that
would restore it).

One departure from MachineHealthCheck: when a short-circuit lifts, the nodes it held are due
``unhealthy_after`` from the moment it lifted, not from when they first failed. A host outage or a
partition heals node by node; counting from the first failure would replace the last nodes to come
back the moment the others did, though they were only slower. A node that stays broken is still
repaired, one ``unhealthy_after`` later.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from models.base import Model
from models.durations import Duration, format_duration

if TYPE_CHECKING:  # models.spec imports this module: these import it back (types only)
    from models.provider import NodesResult
    from models.tenant import HealthResult

MIN_UNHEALTHY_AFTER = timedelta(seconds=1)
MAX_UNHEALTHY_AFTER = timedelta(hours=24)
MAX_REASON_LENGTH = 200
"""A reason (a condition's message, a provider's detail) is cut to this: status stays small."""


def _percent(value: Any) -> Any:
    """``"40%"`` or ``40`` -> 40; anything else is left to pydantic (which refuses it)."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= 5 and text.endswith("%") and text[:-1].strip().isdigit():
            return int(text[:-1])
    return value


Percent = Annotated[int, BeforeValidator(_percent)]


class NodeRepair(Model):
    """The spec setting: when an unhealthy node is repaired, and when auto-repair holds back."""

    unhealthy_after: Duration = Field(
        default=timedelta(minutes=5), description="a node unhealthy this long is repaired (replaced or restarted)"
    )
    max_unhealthy: Percent = Field(
        default=40,
        description="percent of nodes ('40%' or 40): when more are unhealthy at once, nothing is repaired",
    )
    paused: bool = Field(default=False, description="observe and report only, repair nothing")

    @model_validator(mode="after")
    def _bounds(self) -> NodeRepair:
        if not MIN_UNHEALTHY_AFTER <= self.unhealthy_after <= MAX_UNHEALTHY_AFTER:
            raise ValueError(
                f"node_repair.unhealthy_after must be between {format_duration(MIN_UNHEALTHY_AFTER)} and "
                f"{format_duration(MAX_UNHEALTHY_AFTER)} (got {format_duration(self.unhealthy_after)})"
            )
        if not 1 <= self.max_unhealthy <= 100:
            raise ValueError(f"node_repair.max_unhealthy must be between 1% and 100% (got {self.max_unhealthy}%)")
        return self


class UnhealthyNode(Model):
    since: datetime = Field(description="when the entity first saw it unhealthy (its own clock)")
    reason: str


class NodeHealthStatus(Model):
    """What ``status`` shows of node health (kept across continue-as-new with the rest of the status)."""

    observed_at: datetime | None = None
    unhealthy: dict[str, UnhealthyNode] = Field(default_factory=dict)
    held: str = Field(default="", description="why an unhealthy node is not repaired now (short-circuit, quorum)")
    note: str = Field(default="", description="how the last look went, when not as usual (tenant API unreachable)")
    short_circuited: bool = Field(default=False, description="the last look held every repair (too many unhealthy)")
    hold_lifted_at: datetime | None = Field(
        default=None, description="when the last short-circuit lifted: the nodes it held are due from then"
    )
    repairs_started: int = Field(default=0, description="numbers the repairs (restart tokens)")
    last_repair: str = Field(default="", description="the last repair: node, what was done, how it ended")


def unhealthy_nodes(
    nodes: list[str],
    provider: dict[str, tuple[bool, str]],
    tenant: dict[str, tuple[bool, str]] | None,
) -> dict[str, str]:
    """Which of ``nodes`` are unhealthy, and why, from the provider's and the tenant API's view.

    ``provider`` maps the nodes the provider has to (ready, detail); a node it lacks has no VM or
    instance. ``tenant`` maps the tenant API's Nodes the same way; None when the tenant API could
    not be read (then only the provider's view counts: an unreachable API is not every node down).
    """
    found: dict[str, str] = {}
    for node in nodes:
        reasons = []
        machine = provider.get(node)
        if machine is None:
            reasons.append("no VM/instance")
        elif not machine[0]:
            reasons.append(f"VM/instance: {machine[1]}")
        if tenant is not None:
            registered = tenant.get(node)
            if registered is None:
                reasons.append("not registered in the tenant API")
            elif not registered[0]:
                reasons.append(f"tenant API: {registered[1] or 'not Ready'}")
        if reasons:
            found[node] = "; ".join(reasons)[:MAX_REASON_LENGTH]
    return found


def observed_unhealthy(nodes: list[str], machines: NodesResult, tenant: HealthResult) -> dict[str, str]:
    """``unhealthy_nodes`` from the two observe activities' results (``<provider>.list_nodes``,
    ``tenant.check_health``)."""
    provider = {n.name: (n.ready, n.detail) for n in machines.nodes}
    registered = {n.name: (n.ready, n.reason) for n in tenant.nodes} if tenant.api_reachable else None
    return unhealthy_nodes(nodes, provider, registered)


def tracked(previous: dict[str, UnhealthyNode], observed: dict[str, str], now: datetime) -> dict[str, UnhealthyNode]:
    """The new record: a node still unhealthy keeps its ``since``; a recovered one is forgotten."""
    return {
        node: UnhealthyNode(since=previous[node].since if node in previous else now, reason=reason)
        for node, reason in observed.items()
    }


@dataclass(frozen=True)
class RepairDecision:
    node: str | None = None
    """The node to repair now (None: none)."""
    reason: str = ""
    held: list[str] = field(default_factory=list)
    """Why due nodes are not repaired (short-circuit, quorum); shown in status."""
    next_due: datetime | None = None
    """When the next unhealthy node becomes due (a timer wakes the entity then)."""
    short_circuited: bool = False
    """More than ``max_unhealthy`` of the nodes are unhealthy: nothing is repaired."""


def _order(node: str) -> tuple[int, int, str]:
    role, _, number = node.rpartition("-")
    return (0 if role == "master" else 1, int(number) if number.isdigit() else 0, node)


def decide(
    nodes: list[str],
    unhealthy: dict[str, UnhealthyNode],
    setting: NodeRepair,
    now: datetime,
    hold_lifted_at: datetime | None = None,
) -> RepairDecision:
    """What to repair now, by MachineHealthCheck's rules (see the module docstring); a node is due
    ``unhealthy_after`` from the later of its ``since`` and ``hold_lifted_at``."""
    current = {n: u for n, u in unhealthy.items() if n in nodes}
    if not current:
        return RepairDecision()
    names = sorted(current, key=_order)
    limit = math.floor(len(nodes) * setting.max_unhealthy / 100)
    if len(current) > limit:
        return RepairDecision(
            short_circuited=True,
            held=[
                f"short-circuited: {len(current)} of {len(nodes)} nodes unhealthy ({', '.join(names)}), more than "
                f"max_unhealthy {setting.max_unhealthy}% ({limit}); nothing is repaired until fewer are"
            ],
        )
    counted = {n: max(current[n].since, hold_lifted_at) if hold_lifted_at else current[n].since for n in names}
    due = [n for n in names if now - counted[n] >= setting.unhealthy_after]
    later = [counted[n] + setting.unhealthy_after for n in names if n not in due]
    next_due = min(later) if later else None
    held: list[str] = []
    masters = [n for n in nodes if n.startswith("master-")]
    healthy_masters = [n for n in masters if n not in current]
    quorum = len(masters) // 2 + 1
    for node in due:
        if node.startswith("master-") and len(healthy_masters) < quorum:
            held.append(
                f"master {node} not repaired: only {len(healthy_masters)} of {len(masters)} masters are healthy, "
                f"fewer than the {quorum} etcd needs for quorum; restore a master by hand first"
            )
            continue
        if setting.paused:
            held.append(f"{node} unhealthy for {format_duration(now - current[node].since)}: node_repair is paused")
            continue
        return RepairDecision(node=node, reason=current[node].reason, held=held, next_due=next_due)
    return RepairDecision(held=held, next_due=next_due)


def look_decision(
    health: NodeHealthStatus, nodes: list[str], setting: NodeRepair, now: datetime, regrace: Callable[[], bool]
) -> RepairDecision:
    """Decide after a look, recording in ``health`` a short-circuit and when it lifted.

    ``regrace`` is asked only when a short-circuit lifts: False keeps the rule from before the lift
    grace (the workflow answers with ``workflow.patched``, so older histories replay as they ran)."""
    decision = decide(nodes, health.unhealthy, setting, now, health.hold_lifted_at)
    if health.short_circuited and not decision.short_circuited and regrace():
        health.hold_lifted_at = now
        decision = decide(nodes, health.unhealthy, setting, now, now)
    if not health.unhealthy:
        health.hold_lifted_at = None
    health.short_circuited = decision.short_circuited
    lifted = health.hold_lifted_at
    if lifted is not None and decision.node is None and now - lifted < setting.unhealthy_after:
        waiting = [n for n, u in health.unhealthy.items() if now - u.since >= setting.unhealthy_after]
        if waiting:  # say why a node failed for longer than unhealthy_after is not repaired yet
            decision = replace(
                decision,
                held=[
                    *decision.held,
                    f"short-circuit lifted at {lifted.strftime('%H:%M:%S')}: {', '.join(sorted(waiting, key=_order))} "
                    f"due {format_duration(setting.unhealthy_after)} from then",
                ],
            )
    return decision
