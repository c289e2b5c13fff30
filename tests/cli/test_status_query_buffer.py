"""``tenantctl status`` while the entity's workflow task is in flight, on a real Temporal dev server.

The server holds back one query per workflow until the task completes and refuses the next at once
with RESOURCE_EXHAUSTED ("consistent query buffer is full"). Seen in a full test run: a test's
`status` and the worker's metrics refresh asked at the same moment and the CLI exited 1. The CLI's
reads now ride it out with the SDK's call retries.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from config.settings import load_settings
from models.cluster import ClusterStatus
from models.naming import entity_workflow_id
from starter.status_reader import read_status
from tests.cli.busy_entity_workflow import HOLD_ACTIVITY, BusyEntity
from tests.specs import small_kvm

HOLD_SECONDS = 2.0
READERS = 4
"""More readers at once than the server holds back while the task is in flight (one)."""


@activity.defn(name=HOLD_ACTIVITY)
async def hold_workflow_task() -> None:
    await asyncio.sleep(HOLD_SECONDS)


async def test_status_reads_at_once_while_the_entity_task_is_in_flight_all_answer(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = f"busy-{uuid.uuid4().hex[:8]}"
    spec = small_kvm()
    monkeypatch.setenv("TENANTCTL_TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setenv("TENANTCTL_TEMPORAL_TASK_QUEUE", queue)
    monkeypatch.setenv("TENANTCTL_STATE_DIR", str(tmp_path))
    settings = load_settings()
    status = ClusterStatus(cluster_id=spec.id, spec=spec, kubernetes_version=spec.kubernetes_version)
    async with Worker(temporal_env.client, task_queue=queue, workflows=[BusyEntity], activities=[hold_workflow_task]):
        handle = await temporal_env.client.start_workflow(
            BusyEntity.run, status, id=entity_workflow_id(spec.id), task_queue=queue
        )
        try:
            # answered by the worker through the SDK first: by then the worker has polled the queue,
            # which `read_status` checks before its query (it would say no worker is polling)
            await handle.query(BusyEntity.get_status)
            first = await read_status(settings, spec.id)  # idle: answered at once
            assert first[0].cluster_id == spec.id
            await handle.signal(BusyEntity.hold)
            await asyncio.sleep(0.3)  # the task that runs the local activity is in flight now
            began = time.monotonic()
            answers = await asyncio.gather(
                *(read_status(settings, spec.id) for _ in range(READERS)), return_exceptions=True
            )
            took = time.monotonic() - began
        finally:
            await handle.terminate("test over")
    failed = [a for a in answers if isinstance(a, BaseException)]
    assert not failed, failed
    assert all(a[0].cluster_id == spec.id for a in answers if not isinstance(a, BaseException))
    print(f"\n{READERS} status reads during a {HOLD_SECONDS:.0f}s workflow task: all answered in {took:.1f}s")  # noqa: T201
