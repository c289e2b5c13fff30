"""The floor runs what it claims: the shape's waves, each wave's activities scheduled together.

On the Temporal dev server (the bench's floor runs there too), with the floor's own worker.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.client import Client

from bench import floor
from bench.floor_worker import build_floor_worker
from bench.shapes import CREATE, DRIFT_CHECK, TEARDOWN, Shape, waves_from_events


@pytest.mark.parametrize("shape", [CREATE, TEARDOWN, DRIFT_CHECK], ids=lambda s: s.operation)
async def test_floor_operation_runs_the_shape_in_one_child(temporal_client: Client, shape: Shape) -> None:
    queue = f"floor-{uuid.uuid4().hex[:8]}"
    workflow_id = f"floor/test-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(8) as pool:
        async with build_floor_worker(temporal_client, queue, pool, max_concurrent_activities=8):
            outcome = await floor.run(temporal_client, shape, workflow_id, queue)
    child = await temporal_client.get_workflow_handle(f"{workflow_id}/runbook").fetch_history()
    parent = await temporal_client.get_workflow_handle(workflow_id).fetch_history()
    events = json.loads(child.to_json())["events"]  # the JSON form of tests/histories/*.json
    assert [len(w) for w in waves_from_events(events)] == list(shape.waves)
    assert outcome.events == len(child.events) + len(parent.events)
    assert await temporal_client.get_workflow_handle(workflow_id).result() == shape.activities


async def test_a_floor_run_that_counts_no_events_returns_once_it_is_done(temporal_client: Client) -> None:
    # K creates at once: the window ends when the last one is done, not after the bench's describes
    queue = f"floor-{uuid.uuid4().hex[:8]}"
    workflow_id = f"floor/test-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(8) as pool:
        async with build_floor_worker(temporal_client, queue, pool, max_concurrent_activities=8):
            outcome = await floor.run(temporal_client, CREATE, workflow_id, queue, count_events=False)
    assert outcome.events is None and outcome.seconds > 0
    assert await temporal_client.get_workflow_handle(workflow_id).result() == CREATE.activities
