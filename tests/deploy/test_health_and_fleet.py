"""Pure logic of the worker's probes and of the fleet metrics (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.common import TypedSearchAttributes

from models.cluster import ClusterPhase, ClusterStatus, OperationKind, OperationState, OperationStatus
from models.node_health import UnhealthyNode
from tests.specs import small_kvm
from worker.health import LIVENESS_STALL, WorkerHealth, split_address
from worker.metrics import FleetCollector, FleetSnapshot, sample_from_listing, sample_of
from workflows import search_attributes as sa
from workflows.cluster import list_memo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_fails_when_the_event_loop_stops_beating_and_readiness_follows_polling() -> None:
    clock = Clock()
    health = WorkerHealth(clock)
    assert health.alive() == (True, "ok")
    assert health.ready() == (False, "not polling the task queue")
    health.set_polling(True)
    assert health.ready() == (True, "polling")
    clock.now += LIVENESS_STALL + 1
    assert health.alive()[0] is False and health.ready()[0] is False
    assert "stalled" in health.alive()[1]
    health.beat()
    assert health.ready() == (True, "polling")
    health.set_polling(False)  # SIGTERM
    assert health.ready()[0] is False


def test_addresses() -> None:
    assert split_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert split_address("[::1]:9090") == ("::1", 9090)
    for bad in ("8080", ":8080", "host:", "host:port"):
        with pytest.raises(ValueError, match="host:port"):
            split_address(bad)


def operation(kind: OperationKind, state: OperationState, finished: datetime | None = None) -> OperationStatus:
    return OperationStatus(kind=kind, workflow_id=f"x/{kind}", state=state, finished_at=finished)


def status(**changes: object) -> ClusterStatus:
    spec = small_kvm()
    base: dict[str, object] = {"cluster_id": spec.id, "spec": spec, "kubernetes_version": spec.kubernetes_version}
    return ClusterStatus.model_validate({**base, **changes})


def test_a_paused_operation_and_a_last_failed_one_are_blocked() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    paused = status(phase=ClusterPhase.UPGRADING, current=operation(OperationKind.UPGRADE, OperationState.PAUSED))
    assert sample_of(paused).blocked == (("upgrade", "paused"),)
    failed_then_ok = status(
        recent=[
            operation(OperationKind.ROTATE_CERTIFICATES, OperationState.FAILED, now),
            operation(OperationKind.ROTATE_CERTIFICATES, OperationState.SUCCEEDED, now + timedelta(hours=1)),
        ]
    )
    assert sample_of(failed_then_ok).blocked == ()
    last_failed = status(
        phase=ClusterPhase.READY,
        recent=[
            operation(OperationKind.UPGRADE, OperationState.SUCCEEDED, now),
            operation(OperationKind.ROTATE_CA, OperationState.FAILED, now + timedelta(hours=1)),
        ],
        earliest_expiry=now + timedelta(days=3),
    )
    sample = sample_of(last_failed)
    assert sample.blocked == (("rotate-ca", "failed"),)
    assert sample.earliest_expiry == (now + timedelta(days=3)).timestamp()
    assert (sample.phase, sample.provider) == ("Ready", "kvm")


def listed(status: ClusterStatus, fleet: bool = True) -> tuple[TypedSearchAttributes, dict[str, str]]:
    """The search attributes and memo the entity publishes, as the visibility listing returns them."""
    spec = status.spec
    attributes = sa.for_cluster(spec.id, spec.provider, spec.owner, status.kubernetes_version, status.phase)
    return attributes, list_memo(status, fleet=fleet)


def test_the_listing_gives_the_same_sample_as_the_status_query() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    unhealthy = {"worker-1": UnhealthyNode(reason="NotReady", since=now)}
    statuses = [
        status(phase=ClusterPhase.UPGRADING, current=operation(OperationKind.UPGRADE, OperationState.PAUSED)),
        status(
            recent=[operation(OperationKind.ROTATE_CA, OperationState.FAILED, now)],
            earliest_expiry=now + timedelta(days=3),
        ),
        status(node_health={"unhealthy": unhealthy, "held": "etcd quorum"}),
        status(node_health={"unhealthy": unhealthy}),
        status(phase=ClusterPhase.READY),
    ]
    for one in statuses:
        attributes, memo = listed(one)
        assert sample_from_listing(one.cluster_id, attributes, memo) == sample_of(one), one


def test_a_memo_without_the_fleet_values_or_with_unreadable_ones_is_asked_instead() -> None:
    one = status(phase=ClusterPhase.READY)
    attributes, memo = listed(one, fleet=False)  # an entity that ran code from before the patch
    assert sample_from_listing(one.cluster_id, attributes, memo) is None
    attributes, memo = listed(one)
    assert sample_from_listing(one.cluster_id, attributes, {**memo, "unhealthy_nodes": "many"}) is None
    assert sample_from_listing(one.cluster_id, attributes, {**memo, "earliest_expiry": "soon"}) is None


def test_the_collector_exports_only_the_clusters_of_the_latest_snapshot() -> None:
    collector = FleetCollector()
    one, two = status(phase=ClusterPhase.READY), status(phase=ClusterPhase.PROVISIONING)
    collector.update(
        FleetSnapshot(clusters=(sample_of(one), sample_of(two)), schedules_paused={one.cluster_id: True}, taken_at=5.0)
    )
    families = {family.name: family for family in collector.collect()}
    ready = {s.labels["cluster"]: s.value for s in families["tenantctl_cluster_ready"].samples}
    assert ready == {one.cluster_id: 1, two.cluster_id: 0}
    present = {s.labels["cluster"]: s.value for s in families["tenantctl_rotation_schedule_present"].samples}
    assert present == {one.cluster_id: 1, two.cluster_id: 0}
    assert [s.value for s in families["tenantctl_rotation_schedule_paused"].samples] == [1]
    collector.update(FleetSnapshot(clusters=(sample_of(two),), taken_at=6.0))
    families = {family.name: family for family in collector.collect()}
    assert [s.labels["cluster"] for s in families["tenantctl_cluster_info"].samples] == [two.cluster_id]
