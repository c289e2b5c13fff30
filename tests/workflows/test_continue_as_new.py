"""The entity continues-as-new before its history grows large, and carries its status across."""

from __future__ import annotations

import uuid

from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase
from models.operations import ConfigureRequest, DeleteRequest
from tests.fakes import FakeBackends
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow


async def test_entity_continues_as_new_and_keeps_its_status(time_skipping_env: WorkflowEnvironment) -> None:
    backends = FakeBackends()
    spec = small_kvm()
    queue = f"q-{uuid.uuid4()}"
    client = time_skipping_env.client
    async with build_worker(client, queue, backends.activities()):
        handle = await start_entity(client, spec, queue, max_history_events=60)
        created = await wait_settled(handle)
        first_run = (await handle.describe()).run_id

        # Each configure adds a handful of events; enough of them cross the threshold.
        for i in range(25):
            await handle.execute_update(ClusterWorkflow.configure, ConfigureRequest(deletion_protection=i % 2 == 0))

        latest = client.get_workflow_handle(handle.id)
        description = await latest.describe()
        assert description.run_id != first_run, "the entity never continued as new"
        history = await latest.fetch_history()
        assert len(history.events) < 60 + 20  # the new run started small

        status = await latest.query(ClusterWorkflow.get_status)
        assert status.phase is ClusterPhase.READY
        assert status.certificates == created.certificates
        assert status.nodes == created.nodes
        assert status.recent == created.recent
        assert status.operations_started == created.operations_started
        assert status.spec.deletion_protection is True  # the last request (i=24) turned it on

        # operations still work on the continued run, and number on from where they were
        await latest.execute_update(ClusterWorkflow.configure, ConfigureRequest(deletion_protection=False))
        report = await latest.execute_update(ClusterWorkflow.delete, DeleteRequest())
        assert report.removed
        final = await latest.query(ClusterWorkflow.get_status)
        assert final.recent[0].workflow_id == f"cluster/{spec.id}/delete/{created.operations_started + 1}"
