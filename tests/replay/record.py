"""Record workflow histories for the replay tests: ``python -m tests.replay.record [scenario ...]``.

Each scenario runs real workflow code on the time-skipping test server (activities replaced by
name, as in tests/workflows) and writes the history of every workflow it touched to
``tests/histories/<scenario>--<workflow type>.json``. Record again only when a change is meant to
be incompatible *and* no workflow of the old shape can still be running; otherwise keep the old
histories and guard the change with ``workflow.patched``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models.operations import ConfigureRequest, DeleteRequest
from tests.fakes import FakeBackends
from tests.history_checks import assert_no_private_key
from tests.servers import binary
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
Scenario = Callable[[Client, str], Awaitable[list[WorkflowHandle[Any, Any]]]]


async def create_then_delete(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    spec = small_kvm(id="replay-kvm", deletion_protection=True)
    handle = await start_entity(client, spec, queue)
    status = await wait_settled(handle)
    await handle.execute_update(ClusterWorkflow.configure, ConfigureRequest(deletion_protection=False))
    await handle.execute_update(ClusterWorkflow.delete, DeleteRequest(requested_by="recorder"))
    await handle.result()
    children = [op.workflow_id for op in [*status.recent]] + [f"cluster/{spec.id}/delete/2"]
    return [handle, *(client.get_workflow_handle(c) for c in children)]


SCENARIOS: dict[str, Scenario] = {"create-delete": create_then_delete}


async def record(names: list[str]) -> None:
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    from workflows.search_attributes import ALL_KEYS

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in ALL_KEYS},
            )
        )
        for name in names:
            queue = f"record-{uuid.uuid4()}"
            async with build_worker(env.client, queue, FakeBackends().activities()):
                handles = await SCENARIOS[name](env.client, queue)
            for handle in handles:
                history = await handle.fetch_history()
                assert_no_private_key(history)
                kind = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
                path = HISTORIES / f"{name}--{kind}.json"
                path.write_text(
                    json.dumps(
                        {
                            "workflow_id": handle.id,
                            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                            "scenario": name,
                            "history": json.loads(history.to_json()),
                        },
                        indent=1,
                    )
                )
                print(f"recorded {path.name}: {len(history.events)} events")  # noqa: T201
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1:] or list(SCENARIOS)))
