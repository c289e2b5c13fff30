"""``tenantctl delete`` end to end through the CLI, on the dev server with in-memory backends: a
delete that arrives while the entity's periodic check reads the backends waits for it, then tears
the cluster down, and the command reports the teardown (not "did not finish" from the moment in
between, when the cluster is Ready with no operation running)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase
from models.drift import DriftReport, ObserveInput
from tests.fakes import FakeBackends, typed_activity
from tests.specs import small_kvm
from tests.workflows.helpers import run_cli, start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow

HELD = "schedule.observe"
HOLD_SECONDS = 3.0
"""How long the periodic check holds the entity after the delete is sent: far longer than the
CLI's 0.5 s status poll, so a watch that settles on the cluster between the two would end."""


def with_held_observe(backend: FakeBackends, reached: threading.Event, release: threading.Event) -> list[Any]:
    """The fake backends, with one observe of every periodic check that waits for ``release``."""
    every = backend.activities()
    fakes = [fn for fn in every if activity._Definition.must_from_callable(fn).name != HELD]
    plain = next(fn for fn in every if activity._Definition.must_from_callable(fn).name == HELD)

    @typed_activity(HELD, ObserveInput, DriftReport)
    def held(arg: ObserveInput) -> DriftReport:
        reached.set()
        release.wait(30)
        result: DriftReport = plain(arg)
        return result

    return [*fakes, held]


async def test_a_delete_sent_during_a_periodic_check_waits_for_it_and_reports_the_teardown(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    backend, queue = FakeBackends(), f"q-{uuid.uuid4()}"
    reached, release = threading.Event(), threading.Event()
    spec = small_kvm(drift_check={"interval": "1s"})
    async with build_worker(temporal_env.client, queue, with_held_observe(backend, reached, release)):
        handle = await start_entity(temporal_env.client, spec, queue)
        assert (await wait_settled(handle)).phase is ClusterPhase.READY
        assert await asyncio.to_thread(reached.wait, 30), "no periodic check started"
        threading.Timer(HOLD_SECONDS, release.set).start()
        deleted = await asyncio.to_thread(run_cli, temporal_env, queue, tmp_path, ["delete", spec.id])
        release.set()
        assert deleted.exit_code == 0, deleted.output
        assert f"deleted {spec.id}" in deleted.output
        assert "did not finish" not in deleted.output
        assert (await handle.query(ClusterWorkflow.get_status)).phase is ClusterPhase.DELETED
