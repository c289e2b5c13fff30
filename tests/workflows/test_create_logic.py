"""Create, as workflow logic: the entity runs provisioning as a child, in the runbook's order,
with activities replaced by name, on the time-skipping test server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.testing import WorkflowEnvironment

from models.cluster import ClusterPhase, ClusterStatus, OperationKind, OperationState, StepState
from models.errors import Forbidden
from models.naming import entity_workflow_id
from models.operations import ClusterInput
from starter.clusters import get_status
from tests.fakes import FakeBackends
from tests.fakes_upgrade import FakeFleet
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow


async def activity_waves(handle: WorkflowHandle[Any, Any]) -> list[list[str]]:
    """Activity types by the workflow task that scheduled them: the runbook's rounds, in order."""
    waves: dict[int, list[str]] = {}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            waves.setdefault(attributes.workflow_task_completed_event_id, []).append(attributes.activity_type.name)
    return [sorted(waves[key]) for key in sorted(waves)]


async def start(env: WorkflowEnvironment, backends: FakeBackends, spec, task_queue: str):  # type: ignore[no-untyped-def]
    return await env.client.start_workflow(
        ClusterWorkflow.run,
        ClusterInput(spec=spec),
        id=entity_workflow_id(spec.id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )


async def wait_settled(handle) -> ClusterStatus:  # type: ignore[no-untyped-def]
    import asyncio

    for _ in range(400):
        status: ClusterStatus = await handle.query(ClusterWorkflow.get_status)
        if status.current is None and status.phase in (ClusterPhase.READY, ClusterPhase.FAILED):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"cluster did not settle: {status}")


async def test_create_runs_the_runbook_in_order(time_skipping_env: WorkflowEnvironment) -> None:
    backends = FakeBackends()
    spec = small_kvm()
    queue = f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, backends.activities()):
        handle = await start(time_skipping_env, backends, spec, queue)
        status = await wait_settled(handle)

    assert status.phase is ClusterPhase.READY
    names = backends.names()

    def before(first: str, then: str) -> bool:
        return names.index(first) < names.index(then)

    # every dependency honoured: roles live in the CA's mount; certificates need the roles and
    # (for their Secrets) the foundation; the endpoint needs the foundation; nodes need both
    assert before("pki.ensure_ca", "pki.ensure_roles") and before("pki.ensure_roles", "pki.ensure_certificates")
    assert before("kvm.ensure_foundation", "pki.ensure_certificates")
    assert before("kvm.ensure_foundation", "kvm.ensure_endpoint")
    first_node = names.index("kvm.ensure_node")
    assert names.index("pki.ensure_certificates") < first_node and names.index("kvm.ensure_endpoint") < first_node
    assert max(i for i, n in enumerate(names) if n == "kvm.ensure_node") < names.index("kvm.wait_nodes_ready")
    assert before("kvm.wait_nodes_ready", "schedule.ensure_rotation_schedule")
    assert sorted(d for n, d in backends.calls if n == "kvm.ensure_node") == ["master-0", "worker-0", "worker-1"]
    # independent steps start together: the PKI, its policy and the foundation in one round, every node in one
    waves = await activity_waves(time_skipping_env.client.get_workflow_handle(f"cluster/{spec.id}/create/1"))
    assert waves[0] == ["kvm.ensure_foundation", "pki.ensure_ca", "pki.ensure_policy"]
    assert ["kvm.ensure_node"] * 3 in waves
    # the longest chain is ca, roles, certificates, nodes, ready, schedule; roles and endpoint start
    # as soon as what they need is done, in one round or two
    assert len(waves) <= 7, waves
    assert set(status.nodes) == {"master-0", "worker-0", "worker-1"}
    assert status.ca_issuer_id == "issuer-1"
    assert backends.schedules[spec.id] == spec.certificates.rotation_interval
    assert status.next_rotation is not None
    # every certificate recorded, with the earliest expiry derived from them
    assert "apiserver" in status.certificates and "node-worker-1" in status.certificates
    assert status.earliest_expiry == min(c.not_after for c in status.certificates.values())
    create = status.recent[0]
    assert create.kind is OperationKind.CREATE and create.state is OperationState.SUCCEEDED
    assert [s.name for s in create.steps] == [
        "pki",
        "foundation",
        "certificates",
        "endpoint",
        "nodes",
        "ready",
        "schedule",
    ]
    assert all(s.state is StepState.DONE for s in create.steps)
    assert create.workflow_id == f"cluster/{spec.id}/create/1"


async def test_permanent_error_fails_create_and_names_the_cause(time_skipping_env: WorkflowEnvironment) -> None:
    backends = FakeBackends(
        fail={"kvm.ensure_foundation": ApplicationError("host API refused namespace tenant-x", type=Forbidden.__name__)}
    )
    spec = small_kvm()
    queue = f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, backends.activities()):
        handle = await start(time_skipping_env, backends, spec, queue)
        status = await wait_settled(handle)
    assert status.phase is ClusterPhase.FAILED
    assert "refused namespace tenant-x" in status.message
    # permanent: tried once, and nothing after the failing step ran
    assert backends.names().count("kvm.ensure_foundation") == 1
    assert "pki.ensure_certificates" not in backends.names()
    failed = status.recent[0]
    assert failed.state is OperationState.FAILED
    assert failed.step("foundation").state is StepState.FAILED


async def test_duplicate_id_is_refused(time_skipping_env: WorkflowEnvironment) -> None:
    backends = FakeBackends()
    spec = small_kvm()
    queue = f"q-{uuid.uuid4()}"
    async with build_worker(time_skipping_env.client, queue, backends.activities()):
        handle = await start(time_skipping_env, backends, spec, queue)
        await wait_settled(handle)
        calls = len(backends.calls)
        with pytest.raises(WorkflowAlreadyStartedError):
            await start(time_skipping_env, backends, spec, queue)
        assert len(backends.calls) == calls
    _ = WorkflowFailureError


async def test_status_shows_every_step_while_the_entity_is_told_nothing(time_skipping_env: WorkflowEnvironment) -> None:
    """Recording a step sends nothing: the entity's own record stays as it began, and what
    ``tenantctl status`` shows (the operation's own query) has every step as it stands."""
    fleet, spec, queue = FakeFleet(), small_kvm(), f"q-{uuid.uuid4()}"
    client = time_skipping_env.client
    release = fleet.hold("kvm.ensure_node:worker-1")
    async with build_worker(client, queue, fleet.activities()):
        handle = await start_entity(client, spec, queue)
        assert await asyncio.to_thread(fleet.reached["kvm.ensure_node:worker-1"].wait, 30)
        shown = await get_status(client, spec.id)
        for _ in range(200):  # the two other nodes finish side by side with the held one
            if shown.current is not None and shown.current.progress.done == 2:
                break
            await asyncio.sleep(0.05)
            shown = await get_status(client, spec.id)
        recorded = await handle.query(ClusterWorkflow.get_status)
        release.set()
        settled = await wait_settled(handle)

    assert recorded.current is not None and recorded.current.steps == []
    op = shown.current
    assert op is not None and op.workflow_id == f"cluster/{spec.id}/create/1"
    assert [s.name for s in op.steps if s.state is StepState.DONE] == ["pki", "foundation", "certificates", "endpoint"]
    assert op.step("nodes").state is StepState.RUNNING and op.step("ready").state is StepState.PENDING
    assert (op.progress.done, op.progress.total) == (2, 3)
    assert settled.phase is ClusterPhase.READY
    assert all(s.state is StepState.DONE for s in settled.recent[0].steps)
    # not one signal reached the entity during the create
    signalled = [
        e async for e in handle.fetch_history_events() if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signalled == []
