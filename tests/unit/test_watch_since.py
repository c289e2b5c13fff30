"""Which operations a request's watch shows, from the status read once the request is accepted."""

from __future__ import annotations

from datetime import UTC, datetime

from models.cluster import ClusterStatus, OperationKind, OperationState, OperationStatus, QueuedOperation
from starter.watch import first_shown
from tests.specs import small_kvm

NOW = datetime(2026, 12, 2, tzinfo=UTC)
DELETE, CREATE, UPGRADE = OperationKind.DELETE, OperationKind.CREATE, OperationKind.UPGRADE


def status(started: int, running: OperationKind | None = None, queued: OperationKind | None = None) -> ClusterStatus:
    spec = small_kvm()
    return ClusterStatus(
        cluster_id=spec.id,
        spec=spec,
        kubernetes_version=spec.kubernetes_version,
        operations_started=started,
        current=OperationStatus(
            kind=running, workflow_id=f"cluster/{spec.id}/{running}/{started}", state=OperationState.RUNNING
        )
        if running
        else None,
        queued=[QueuedOperation(kind=queued, request_id="r", queued_at=NOW)] if queued else [],
    )


def test_a_request_whose_operation_runs_shows_that_operation() -> None:
    assert first_shown(status(3, running=DELETE), DELETE) == 2  # operation 3 is shown


def test_a_request_whose_operation_already_finished_still_shows_it() -> None:
    assert first_shown(status(3), DELETE) == 2


def test_an_operation_running_when_the_request_was_sent_is_shown_ending() -> None:
    # delete --cancel-running: the create (2) ended before the delete (3) was accepted
    assert first_shown(status(3, running=DELETE), DELETE, was_running=True) == 1
    assert first_shown(status(3), DELETE, was_running=True) == 1


def test_a_request_waiting_behind_a_running_operation_shows_both() -> None:
    # the create (3) still runs; the delete will be 4
    assert first_shown(status(3, running=CREATE), DELETE) == 2
    assert first_shown(status(3, running=CREATE), DELETE, was_running=True) == 2


def test_a_request_queued_with_nothing_running_shows_only_what_follows() -> None:
    # an upgrade waiting for its maintenance window: nothing old is shown again
    assert first_shown(status(3, queued=UPGRADE), UPGRADE) == 3


def test_never_below_zero() -> None:
    assert first_shown(status(0), DELETE) == 0
    assert first_shown(status(1), DELETE, was_running=True) == 0
