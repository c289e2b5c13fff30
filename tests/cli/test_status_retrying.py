"""An operation that keeps retrying says so: ``tenantctl status`` (table and JSON) and ``tenantctl watch``
show the call being retried, its attempt and its last error, read from the operation's pending
activities on a real Temporal dev server (the workflow is not asked; the server keeps the attempts).

Workflow-logic style: the activities are the in-memory fakes, one of which fails with a retryable
error until the test lets it succeed.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase
from starter import clusters
from tests.cli.test_cli_errors import assert_no_traceback, run
from tests.fakes import FakeBackends
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker

FAILING = "kvm.ensure_foundation"
ERROR = "host API answered 503 Service Unavailable [/] (injected)"  # markup-like text is shown as it is


async def retried_at_least(client: Client, cluster_id: str, attempts: int) -> list[clusters.RetryingCall]:
    for _ in range(200):
        status = await clusters.get_status(client, cluster_id)
        calls = await clusters.retrying_calls(client, status.current)
        # waiting for its next try (the first retries come a tenth of a second apart, so a look may
        # also fall in the moment a retry is being handed to the worker, when none is scheduled)
        if any(call.attempt >= attempts and call.next_retry is not None for call in calls):
            return calls
        await asyncio.sleep(0.1)
    raise AssertionError(f"{FAILING} was not retried {attempts} times")


async def test_status_and_watch_show_a_retrying_call(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    client = temporal_env.client
    queue = f"retrying-{uuid.uuid4().hex[:8]}"
    env = {
        "TENANTCTL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TENANTCTL_TEMPORAL_TASK_QUEUE": queue,
        "TENANTCTL_STATE_DIR": str(tmp_path),
    }
    backends = FakeBackends()
    backends.fail[FAILING] = RuntimeError(ERROR)  # not one of models.errors: retried
    spec = small_kvm()
    async with build_worker(client, queue, backends.activities()):
        handle = await start_entity(client, spec, queue)
        calls = await retried_at_least(client, spec.id, 2)
        assert [c.activity for c in calls] == [FAILING]
        assert calls[0].last_error == ERROR and calls[0].next_retry is not None

        table, _ = await asyncio.to_thread(run, ["status", spec.id], env)
        assert_no_traceback(table, ["status", spec.id])
        shown = " ".join(table.output.split())
        assert table.exit_code == 0, table.output
        assert "retrying" in shown and FAILING in shown and ERROR in shown, table.output

        # every look names the call, its attempt and its error; the time of the next try exists only
        # between tries (a look may fall while a try is handed to the worker), so look a few times,
        # spread over the backoff (looks in a burst can all fall in one hand-over)
        scheduled = []
        for look in range(20):
            if look:
                await asyncio.sleep(0.1)
            as_json, _ = await asyncio.to_thread(run, ["status", spec.id, "-o", "json"], env)
            retrying = json.loads(as_json.output)["retrying"]
            assert retrying[0]["activity"] == FAILING and retrying[0]["attempt"] >= 2, retrying
            assert retrying[0]["last_error"] == ERROR, retrying
            scheduled = [call for call in retrying if call["next_retry"]]
            if scheduled:
                break
        assert scheduled, "no look at the JSON status showed when the next try is due"

        # watch follows the create while it retries, then the backend recovers and it finishes
        watching = asyncio.create_task(asyncio.to_thread(run, ["watch", spec.id], env))
        await retried_at_least(client, spec.id, 3)
        await asyncio.sleep(1.0)  # a few of watch's polls see attempt 3 or later
        del backends.fail[FAILING]
        watched, _ = await watching
        status = await wait_settled(handle)

    assert status.phase is ClusterPhase.READY, status.message
    assert_no_traceback(watched, ["watch", spec.id])
    lines = [line for line in watched.output.splitlines() if "↻" in line]
    retry_line = re.compile(rf"{re.escape(FAILING)} attempt (\d+): {re.escape(ERROR)}")
    shown_attempts = [int(m.group(1)) for line in lines if (m := retry_line.search(line))]
    # watch starts while attempt 2 or later waits, and prints each attempt as it fails: in order,
    # and beyond the one it started at (attempt 3 or later had failed before the backend recovered)
    assert shown_attempts and min(shown_attempts) >= 2 and max(shown_attempts) >= 3, watched.output
    assert shown_attempts == sorted(shown_attempts), watched.output
    assert watched.exit_code == 0, watched.output
    await handle.terminate("test done")
