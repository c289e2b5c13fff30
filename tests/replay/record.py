"""Record workflow histories for the replay tests: ``python -m tests.replay.record [scenario ...]``.

Each scenario runs real workflow code on the time-skipping test server (activities replaced by
name, as in tests/workflows) and writes the history of every workflow it touched to
``tests/histories/<scenario>--<workflow type>.json``. Record again only when a change is meant to
be incompatible *and* no workflow of the old shape can still be running; otherwise keep the old
histories and guard the change with ``workflow.patched``. After such a guarded change, keep the old
files under a name that says what they precede (``upgrade-before-snapshots--RollingUpgrade.json``)
and record the scenarios again, so both the old and the new path replay.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.testservice.v1 import SleepRequest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage

from activities.pki.rotation_schedule import RotationSchedules
from models.cluster import OperationKind, OperationState
from models.operations import (
    ConfigureRequest,
    DeleteRequest,
    RotateCaRequest,
    RotateCertificatesRequest,
    ScaleRequest,
    UpgradeAction,
    UpgradeControl,
    UpgradeRequest,
)
from models.pki import SignUserCertificateRequest
from models.reconcile import ReconcileRequest
from models.schedules import ScheduledRotationInput, SyncScheduleRequest
from models.spec import DriftCheck
from tests.fakes import FakeBackends
from tests.fakes_repair import RepairFleet
from tests.fakes_rotation import SimulatedPki
from tests.fakes_upgrade import FakeFleet
from tests.history_checks import assert_no_private_key
from tests.specs import small_kvm
from tests.workflows.helpers import start_entity, wait_settled
from worker.registry import build_worker
from workflows.cluster import ClusterWorkflow
from workflows.scheduled_rotation import ScheduledRotationWorkflow

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


async def scheduled_rotation(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """The schedule's run right after create: nothing is due, so no node restarts."""
    spec = small_kvm(id="replay-scheduled")
    handle = await start_entity(client, spec, queue)
    await wait_settled(handle)
    run = await client.start_workflow(
        ScheduledRotationWorkflow.run,
        ScheduledRotationInput(cluster_id=spec.id),
        id=f"cert-rotation/{spec.id}-replay",
        task_queue=queue,
    )
    await run.result()
    await handle.execute_update(ClusterWorkflow.sync_schedule, SyncScheduleRequest())
    return [handle, run, client.get_workflow_handle(f"cluster/{spec.id}/rotate-certificates/2")]


async def forced_rotation(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """An on-demand forced rotation (every node restarts), then a user certificate is signed."""
    spec = small_kvm(id="replay-rotate")
    handle = await start_entity(client, spec, queue)
    await wait_settled(handle)
    await handle.execute_update(ClusterWorkflow.rotate_certificates, RotateCertificatesRequest(force=True))
    await handle.execute_update(ClusterWorkflow.sign_user_certificate, SignUserCertificateRequest(csr_pem="csr"))
    return [handle, client.get_workflow_handle(f"cluster/{spec.id}/rotate-certificates/2")]


async def ca_rotation(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    spec = small_kvm(id="replay-rotate-ca")
    handle = await start_entity(client, spec, queue)
    await wait_settled(handle)
    await handle.execute_update(ClusterWorkflow.rotate_ca, RotateCaRequest(requested_by="recorder"))
    return [handle, client.get_workflow_handle(f"cluster/{spec.id}/rotate-ca/2")]


async def _upgrade_until_paused(client: Client, queue: str, cluster_id: str) -> tuple[Any, Any]:
    """A 3+3 cluster upgraded to the next minor; returns (entity, update) once the upgrade pauses."""
    spec = small_kvm(
        id=cluster_id,
        masters={"count": 3, "cpu": 2, "memory": "4Gi"},
        workers={"count": 3, "cpu": 2, "memory": "4Gi"},
    )
    handle = await start_entity(client, spec, queue)
    await wait_settled(handle)
    update = await handle.start_update(
        ClusterWorkflow.upgrade,
        UpgradeRequest(version="1.33.0", requested_by="recorder", drain_timeout=timedelta(seconds=5)),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    for _ in range(600):
        current = (await handle.query(ClusterWorkflow.get_status)).current
        if current is not None and current.state is OperationState.PAUSED:
            return handle, update
        await asyncio.sleep(0.05)
    raise AssertionError(f"the upgrade of {cluster_id} did not pause")


async def upgrade_paused_then_resumed(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """A drain refused once (a budget) pauses the upgrade at worker-1; resume completes it."""
    handle, update = await _upgrade_until_paused(client, queue, "replay-upgrade")
    await handle.execute_update(ClusterWorkflow.control_upgrade, UpgradeControl(action=UpgradeAction.RESUME))
    await update.result()
    return [handle, client.get_workflow_handle("cluster/replay-upgrade/upgrade/2")]


async def upgrade_aborted(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """A drain that never finishes pauses the upgrade at worker-0; abort rolls everything back."""
    handle, update = await _upgrade_until_paused(client, queue, "replay-upgrade-abort")
    await handle.execute_update(ClusterWorkflow.control_upgrade, UpgradeControl(action=UpgradeAction.ABORT))
    await update.result()
    return [handle, client.get_workflow_handle("cluster/replay-upgrade-abort/upgrade/2")]


async def scale_up_then_down(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """A 1+2 cluster scaled to 3 workers (worker-2 added), then to 1 (worker-2, worker-1 removed)."""
    spec = small_kvm(id="replay-scale")
    handle = await start_entity(client, spec, queue)
    await wait_settled(handle)
    await handle.execute_update(ClusterWorkflow.scale, ScaleRequest(workers=3, requested_by="recorder"))
    await handle.execute_update(ClusterWorkflow.scale, ScaleRequest(workers=1, requested_by="recorder"))
    return [
        handle,
        client.get_workflow_handle(f"cluster/{spec.id}/scale/2"),
        client.get_workflow_handle(f"cluster/{spec.id}/scale/3"),
    ]


async def reconcile_in_sync_then_repair(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """An in-sync check, then a check that finds a deleted worker VM and certificate Secret and repairs them
    (the re-issued certificate restarts the node that loads it)."""
    spec = small_kvm(id="replay-reconcile")
    handle = await start_entity(client, spec, queue)
    await wait_settled(handle)
    await handle.execute_update(ClusterWorkflow.reconcile, ReconcileRequest(requested_by="recorder"))
    DRIFTED.objects -= {"deployment/worker-1", "secret/cert-apiserver"}
    await handle.execute_update(ClusterWorkflow.reconcile, ReconcileRequest(requested_by="recorder"))
    return [
        handle,
        client.get_workflow_handle(f"cluster/{spec.id}/reconcile/2"),
        client.get_workflow_handle(f"cluster/{spec.id}/reconcile/3"),
    ]


async def periodic_checks(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """The entity's own 5-minute checks: two find the cluster in sync (observed in the entity, no
    child), then a worker's VM goes missing and the third check repairs it through a reconcile child."""
    spec = small_kvm(id="replay-periodic", drift_check={})  # the default: every 5 minutes
    handle = await start_entity(client, spec, queue)
    await wait_settled(handle)
    await _skip_time(client, timedelta(minutes=11))
    with PERIODIC.lock:
        PERIODIC.objects.discard("deployment/worker-1")
    await _skip_time(client, timedelta(minutes=5))
    status = await handle.query(ClusterWorkflow.get_status)
    assert status.last_check is not None and "node worker-1" in status.last_check.repaired, status.last_check
    await handle.execute_update(ClusterWorkflow.configure, ConfigureRequest(drift_check=DriftCheck(paused=True)))
    return [handle, client.get_workflow_handle(f"cluster/{spec.id}/reconcile/2")]


async def node_repair_after_a_lifted_hold(client: Client, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """Three of six workers NotReady hold every repair; one recovers, and the two still down are
    replaced unhealthy_after later (due from the lift), one at a time, each by a node-repair child."""
    spec = small_kvm(
        id="replay-repair",
        masters={"count": 3, "cpu": 2, "memory": "4Gi"},
        workers={"count": 3, "cpu": 2, "memory": "4Gi"},
        drift_check={"interval": "1m"},
        node_repair={"unhealthy_after": "5m"},
    )
    handle = await start_entity(client, spec, queue)
    await wait_settled(handle)
    with LIFTED.lock:
        LIFTED.down |= {"worker-0", "worker-1", "worker-2"}
    await _skip_time(client, timedelta(minutes=10))
    with LIFTED.lock:
        LIFTED.down.discard("worker-2")
    for _ in range(4):
        await _skip_time(client, timedelta(minutes=3))
    status = await handle.query(ClusterWorkflow.get_status)
    repaired = sorted(op.message for op in status.recent if op.kind is OperationKind.REPAIR_NODE)
    assert repaired == ["worker-0 replaced by worker-3", "worker-1 replaced by worker-4"], repaired
    await handle.execute_update(ClusterWorkflow.configure, ConfigureRequest(drift_check=DriftCheck(paused=True)))
    return [handle, *(client.get_workflow_handle(f"cluster/{spec.id}/repair-node/{n}") for n in (2, 3))]


async def _skip_time(client: Client, span: timedelta) -> None:
    """``WorkflowEnvironment.sleep`` of the time-skipping server, for a scenario that has its client."""
    request = SleepRequest()
    request.duration.FromTimedelta(span)
    await client.test_service.unlock_time_skipping_with_sleep(request)
    await asyncio.sleep(0.5)  # the checks that came due run on the worker


LIFTED = RepairFleet()
"""The node-repair scenario's fleet: the scenario makes nodes NotReady and lets one recover."""
DRIFTED = FakeBackends()
"""The reconcile scenario's backends: the scenario deletes objects from them between two checks."""
PERIODIC = FakeBackends()
"""The periodic-check scenario's backends (likewise)."""

SCENARIOS: dict[str, Scenario] = {
    "create-delete": create_then_delete,
    "rotate-scheduled": scheduled_rotation,
    "rotate-forced": forced_rotation,
    "rotate-ca": ca_rotation,
    "upgrade": upgrade_paused_then_resumed,
    "upgrade-abort": upgrade_aborted,
    "scale": scale_up_then_down,
    "reconcile": reconcile_in_sync_then_repair,
    "periodic-check": periodic_checks,
    "node-repair-lift": node_repair_after_a_lifted_hold,
}
BACKENDS: dict[str, Callable[[], FakeBackends]] = {
    # rotations need a PKI that knows what is due and which CA issues (tests/fakes_rotation.py)
    "rotate-scheduled": SimulatedPki,
    "rotate-forced": SimulatedPki,
    "rotate-ca": SimulatedPki,
    # upgrades need VMs and a tenant cluster with nodes and pods (tests/fakes_upgrade.py)
    "upgrade": lambda: FakeFleet(drain_refusals={"worker-1": 1}),
    "upgrade-abort": lambda: FakeFleet(blocked_drains={"worker-0"}),
    # scaling drains and registers nodes (tests/fakes_upgrade.py)
    "scale": FakeFleet,
    "reconcile": lambda: DRIFTED,
    "periodic-check": lambda: PERIODIC,
    "node-repair-lift": lambda: LIFTED,
}


async def record(names: list[str]) -> None:
    from tests.servers import start_time_skipping

    env = await start_time_skipping()
    try:
        for name in names:
            queue = f"record-{uuid.uuid4()}"
            activities = [
                *BACKENDS.get(name, FakeBackends)().activities(),
                RotationSchedules(env.client, queue).request_rotation,
            ]
            async with build_worker(env.client, queue, activities):
                handles = await SCENARIOS[name](env.client, queue)
            seen: dict[str, int] = {}
            for handle in handles:
                history = await handle.fetch_history()
                assert_no_private_key(history)
                kind = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
                seen[kind] = seen.get(kind, 0) + 1
                # a scenario with two runs of one workflow type keeps both: the second is <kind>-2
                path = HISTORIES / f"{name}--{kind}{'' if seen[kind] == 1 else f'-{seen[kind]}'}.json"
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
