"""The fleet metrics come from the entities' visibility records, on the dev server with in-memory
backends: a refresh lists the running entities once and reads each one's sample from its search
attributes and memo, so it needs no worker to answer a status query per cluster."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.testing import WorkflowEnvironment

from models.cluster import FLEET_MEMO_KEYS, ClusterPhase
from starter.clusters import start_cluster
from tests.fakes import FakeBackends
from tests.specs import small_kvm
from tests.workflows.helpers import wait_settled
from worker.metrics import ClusterSample, fleet_snapshot
from worker.registry import build_worker

LISTING_LAG_SECONDS = 10.0
"""Visibility follows the entity's memo upserts within moments; this is only the test's patience."""


async def sample_in_listing(env: WorkflowEnvironment, cluster_id: str, phase: ClusterPhase) -> ClusterSample | None:
    deadline = asyncio.get_running_loop().time() + LISTING_LAG_SECONDS
    while True:
        snapshot = await fleet_snapshot(env.client)
        found = next((c for c in snapshot.clusters if c.cluster == cluster_id), None)
        if (found is not None and found.phase == phase.value) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_a_ready_cluster_is_in_the_fleet_metrics_while_no_worker_answers_queries(
    temporal_env: WorkflowEnvironment,
) -> None:
    backend, queue = FakeBackends(), f"q-{uuid.uuid4()}"
    spec = small_kvm()
    async with build_worker(temporal_env.client, queue, backend.activities()):
        handle = await start_cluster(temporal_env.client, spec, queue)
        status = await wait_settled(handle)
        assert status.phase is ClusterPhase.READY
        memo = await (await handle.describe()).memo()
        assert set(FLEET_MEMO_KEYS) <= set(memo), memo
    # The worker is gone: a status query would wait for one until it timed out. The listing does not.
    sample = await sample_in_listing(temporal_env, spec.id, ClusterPhase.READY)
    assert sample is not None, f"{spec.id} missing from the fleet metrics"
    assert (sample.phase, sample.provider, sample.version) == ("Ready", "kvm", spec.kubernetes_version)
    assert sample.blocked == () and sample.unhealthy_nodes == 0 and not sample.repair_held
    assert status.earliest_expiry is not None and sample.earliest_expiry == status.earliest_expiry.timestamp()
