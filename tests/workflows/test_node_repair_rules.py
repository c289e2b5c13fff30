"""Node auto-repair's setting and decisions (pure: no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.cluster import ClusterPhase, ClusterStatus
from models.node_health import (
    NodeHealthStatus,
    NodeRepair,
    UnhealthyNode,
    decide,
    look_decision,
    tracked,
    unhealthy_nodes,
)
from models.spec import SpecError
from tests.specs import small_kvm
from worker.metrics import SERVING_PHASES, sample_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NODES = ["master-0", "master-1", "master-2", "worker-0", "worker-1", "worker-2"]


def since(minutes: int) -> UnhealthyNode:
    return UnhealthyNode(since=NOW - timedelta(minutes=minutes), reason="NotReady")


def test_defaults_and_a_percent_written_either_way() -> None:
    spec = small_kvm()
    assert spec.node_repair == NodeRepair(unhealthy_after=timedelta(minutes=5), max_unhealthy=40, paused=False)
    assert small_kvm(node_repair={"max_unhealthy": "25%", "unhealthy_after": "2s"}).node_repair.max_unhealthy == 25
    assert small_kvm(node_repair={"max_unhealthy": 60}).node_repair.max_unhealthy == 60


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"unhealthy_after": "0s"}, "node_repair: node_repair.unhealthy_after must be between 1s and 1d (got 0s)"),
        ({"unhealthy_after": "2d"}, "unhealthy_after must be between 1s and 1d (got 2d)"),
        ({"max_unhealthy": "0%"}, "node_repair.max_unhealthy must be between 1% and 100% (got 0%)"),
        ({"max_unhealthy": "lots"}, "node_repair.max_unhealthy"),
        ({"max_unhealthy": 101}, "(got 101%)"),
        ({"paused": "maybe"}, "node_repair.paused"),
        ({"grace": "1m"}, "node_repair.grace: unknown field"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(setting: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        small_kvm(node_repair=setting)
    assert message in str(caught.value)


def test_unhealthy_is_either_view_and_an_unreachable_api_counts_the_machines_only() -> None:
    provider = {"worker-0": (True, "available"), "worker-1": (False, "spec.replicas=0")}
    tenant = {"worker-0": (False, "Ready=False KubeletNotReady"), "worker-1": (True, "")}
    found = unhealthy_nodes(["worker-0", "worker-1", "worker-2"], provider, tenant)
    assert found == {
        "worker-0": "tenant API: Ready=False KubeletNotReady",
        "worker-1": "VM/instance: spec.replicas=0",
        "worker-2": "no VM/instance; not registered in the tenant API",
    }
    assert unhealthy_nodes(["worker-0"], provider, None) == {}


def test_tracking_keeps_the_first_time_and_forgets_the_recovered() -> None:
    first = tracked({}, {"worker-0": "a", "worker-1": "b"}, NOW)
    later = tracked(first, {"worker-0": "c"}, NOW + timedelta(minutes=1))
    assert later == {"worker-0": UnhealthyNode(since=NOW, reason="c")}


def test_a_node_is_due_after_the_setting_and_the_next_one_is_timed() -> None:
    setting = NodeRepair()
    decision = decide(NODES, {"worker-0": since(5), "worker-1": since(2)}, setting, NOW)
    assert decision.node == "worker-0" and decision.next_due == NOW + timedelta(minutes=3)
    assert decide(NODES, {"worker-1": since(2)}, setting, NOW).node is None


def test_more_than_the_share_short_circuits_and_names_the_nodes() -> None:
    unhealthy = {"worker-0": since(9), "worker-1": since(9), "master-2": since(9)}
    decision = decide(NODES, unhealthy, NodeRepair(), NOW)
    assert decision.node is None and decision.next_due is None
    assert decision.held == [
        "short-circuited: 3 of 6 nodes unhealthy (master-2, worker-0, worker-1), more than max_unhealthy 40% (2); "
        "nothing is repaired until fewer are"
    ]
    assert decide(NODES, unhealthy, NodeRepair(max_unhealthy=50), NOW).node == "master-2"


def test_nodes_a_short_circuit_held_are_due_from_when_it_lifted() -> None:
    setting, asked = NodeRepair(), []

    def regrace() -> bool:
        asked.append(True)
        return True

    health = NodeHealthStatus(unhealthy={n: since(30) for n in ("worker-0", "worker-1", "worker-2")})
    assert look_decision(health, NODES, setting, NOW, regrace).short_circuited and health.short_circuited
    assert not asked  # still held: the patch question is not asked (no marker in the history)
    # two came back: the third failed 31 minutes ago but is due 5 minutes from the lift
    health.unhealthy = {"worker-2": since(29)}
    lifted = NOW + timedelta(minutes=1)
    decision = look_decision(health, NODES, setting, lifted, regrace)
    assert decision.node is None and decision.next_due == lifted + timedelta(minutes=5) and asked == [True]
    assert health.hold_lifted_at == lifted and not health.short_circuited
    assert decision.held == ["short-circuit lifted at 00:01:00: worker-2 due 5m from then"]
    assert look_decision(health, NODES, setting, lifted + timedelta(minutes=5), regrace).node == "worker-2"
    assert asked == [True]  # asked once, when it lifted
    # a node failing after the lift counts from its own first failure
    health.unhealthy = {"worker-1": UnhealthyNode(since=lifted + timedelta(minutes=2), reason="NotReady")}
    later = lifted + timedelta(minutes=7)
    assert look_decision(health, NODES, setting, later, regrace).node == "worker-1"
    health.unhealthy = {}
    look_decision(health, NODES, setting, later, regrace)
    assert health.hold_lifted_at is None


def test_entities_from_before_the_lift_grace_repair_at_once() -> None:
    health = NodeHealthStatus(unhealthy={n: since(30) for n in ("worker-0", "worker-1", "worker-2")})
    look_decision(health, NODES, NodeRepair(), NOW, lambda: False)
    health.unhealthy = {"worker-2": since(30)}
    decision = look_decision(health, NODES, NodeRepair(), NOW + timedelta(minutes=1), lambda: False)
    assert decision.node == "worker-2" and health.hold_lifted_at is None


def test_masters_first_but_never_without_quorum() -> None:
    setting = NodeRepair(max_unhealthy=100)
    assert decide(NODES, {"master-1": since(9), "worker-0": since(9)}, setting, NOW).node == "master-1"
    decision = decide(NODES, {"master-0": since(9), "master-1": since(9), "worker-0": since(9)}, setting, NOW)
    assert decision.node == "worker-0"  # workers still are
    assert decision.held[0].startswith("master master-0 not repaired: only 1 of 3 masters are healthy")
    single = decide(["master-0", "worker-0"], {"master-0": since(9)}, setting, NOW)
    assert single.node is None and "only 0 of 1 masters" in single.held[0]


def test_paused_reports_and_repairs_nothing() -> None:
    decision = decide(NODES, {"worker-0": since(9)}, NodeRepair(paused=True), NOW)
    assert decision.node is None and decision.held == ["worker-0 unhealthy for 9m: node_repair is paused"]


def test_fleet_metrics_count_unhealthy_nodes_and_a_held_repair() -> None:
    spec = small_kvm()
    status = ClusterStatus(cluster_id=spec.id, spec=spec, kubernetes_version=spec.kubernetes_version)
    assert (sample_of(status).unhealthy_nodes, sample_of(status).repair_held) == (0, False)
    status.node_health = NodeHealthStatus(unhealthy={"worker-0": since(1)})
    assert (sample_of(status).unhealthy_nodes, sample_of(status).repair_held) == (1, False)  # not due yet
    status.node_health = NodeHealthStatus(unhealthy={"worker-0": since(9)}, held="short-circuited: ...")
    assert (sample_of(status).unhealthy_nodes, sample_of(status).repair_held) == (1, True)
    status.phase = ClusterPhase.REPAIRING
    assert status.phase in SERVING_PHASES  # a cluster whose worker is being replaced still serves
