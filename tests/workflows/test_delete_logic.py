"""Delete, as workflow logic: protection, reverse order, completion report, half-created clusters."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase, OperationKind
from models.errors import Forbidden
from models.operations import ClusterReport, ConfigureRequest, DeleteRequest, TeardownInput, TeardownResult
from tests.fakes import FakeBackends
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow
from workflows.teardown import TeardownWorkflow

TEARDOWN_ORDER = [
    "schedule.ensure_rotation_schedule_absent",
    "kvm.list_nodes",
    "kvm.ensure_node_absent",
    "kvm.ensure_endpoint_absent",
    "pki.ensure_certificates_absent",
    "kvm.ensure_foundation_absent",
    "pki.revoke_certificates",
    "pki.ensure_pki_absent",
    "kvm.list_resources",
]


TEARDOWN_NEEDS = {
    # a step -> what must be gone (have ended) before it starts
    "pki.ensure_certificates_absent": {"kvm.ensure_node_absent"},
    "kvm.ensure_endpoint_absent": {"kvm.ensure_node_absent"},
    "kvm.ensure_foundation_absent": {"kvm.ensure_endpoint_absent"},
    "pki.ensure_pki_absent": {"pki.revoke_certificates"},
    "kvm.list_resources": set(TEARDOWN_ORDER) - {"kvm.list_resources"},
}


def assert_teardown_order(names: list[str]) -> None:
    """Every teardown step ran, each after the last call of every step it needs gone."""
    assert set(names) == set(TEARDOWN_ORDER)
    last = {name: max(i for i, n in enumerate(names) if n == name) for name in names}
    first = {name: names.index(name) for name in names}
    for step, needs in TEARDOWN_NEEDS.items():
        for need in needs:
            assert last[need] < first[step], f"{step} started before {need} was done: {names}"


async def test_protected_cluster_refuses_delete_until_protection_is_off(time_skipping_env: WorkflowEnvironment) -> None:
    backends = FakeBackends()
    spec = small_kvm(deletion_protection=True)
    queue = f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, backends.activities()):
        handle = await start_entity(time_skipping_env.client, spec, queue)
        await wait_settled(handle)
        created = set(backends.objects)

        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ClusterWorkflow.delete, DeleteRequest(requested_by="test"))
        assert "deletion protection" in str(refused.value.cause)
        assert f"tenantctl protect {spec.id} --off" in str(refused.value.cause)
        # a refused request changes nothing
        assert backends.objects == created
        assert "schedule.ensure_rotation_schedule_absent" not in backends.names()

        result = await handle.execute_update(ClusterWorkflow.configure, ConfigureRequest(deletion_protection=False))
        assert result.changed == ["deletion_protection"]

        mark = len(backends.calls)
        report_of_delete: TeardownResult = await handle.execute_update(ClusterWorkflow.delete, DeleteRequest())
        report: ClusterReport = await handle.result()

    # independent steps go side by side; each one after what it needs gone
    assert_teardown_order(backends.names()[mark:])
    assert backends.objects == set() and backends.schedules == {} and backends.pki_mounts == set()
    assert report.phase is ClusterPhase.DELETED
    assert report.teardown == report_of_delete
    assert "deployment/master-0" in report_of_delete.removed
    assert f"namespace/tenant-{spec.id}" in report_of_delete.removed
    assert f"schedule/cert-rotation/{spec.id}" in report_of_delete.removed
    assert report_of_delete.duration_seconds >= 0
    assert [op.kind for op in report.operations] == [OperationKind.DELETE, OperationKind.CREATE]


async def test_half_created_cluster_tears_down_and_id_is_reusable(time_skipping_env: WorkflowEnvironment) -> None:
    backends = FakeBackends(fail={"kvm.ensure_endpoint": ApplicationError("no ingress", type=Forbidden.__name__)})
    spec = small_kvm()
    queue = f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, backends.activities()):
        handle = await start_entity(time_skipping_env.client, spec, queue)
        status = await wait_settled(handle)
        assert status.phase is ClusterPhase.FAILED
        assert backends.objects  # namespace and secrets were made before the failure

        await handle.execute_update(ClusterWorkflow.delete, DeleteRequest())
        report: ClusterReport = await handle.result()
        assert report.phase is ClusterPhase.DELETED
        assert backends.objects == set() and backends.pki_mounts == set()

        # the id can be used again once the cluster is deleted
        backends.fail.clear()
        again = await start_entity(time_skipping_env.client, spec, queue)
        status = await wait_settled(again)
        assert status.phase is ClusterPhase.READY
        assert status.recent[0].workflow_id == f"cluster/{spec.id}/create/1"
        assert again.result_run_id != handle.result_run_id


async def test_teardown_twice_is_clean(time_skipping_env: WorkflowEnvironment) -> None:
    """A second teardown over nothing finds everything absent and still succeeds."""
    backends = FakeBackends()
    spec = small_kvm()
    queue = f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, backends.activities()):
        # a teardown of a cluster that never existed removes nothing and succeeds
        first = await time_skipping_env.client.execute_workflow(
            TeardownWorkflow.run, TeardownInput(spec=spec), id=f"teardown-{spec.id}-1", task_queue=queue
        )
        assert first.removed == []
        handle = await start_entity(time_skipping_env.client, spec, queue)
        await wait_settled(handle)
        mark = len(backends.calls)
        await handle.execute_update(ClusterWorkflow.delete, DeleteRequest())
        await handle.result()
        assert backends.objects == set()
        names = backends.names()[mark:]
        # and run again over the remains, it finds everything absent
        second = await time_skipping_env.client.execute_workflow(
            TeardownWorkflow.run, TeardownInput(spec=spec), id=f"teardown-{spec.id}-2", task_queue=queue
        )
        assert second.removed == []
    assert_teardown_order(names)
