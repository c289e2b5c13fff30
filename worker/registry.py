"""What the tenantctl worker runs: every workflow, and every activity of every backend class."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from worker.liveness import LivenessHeartbeats
from worker.takeover import StickyTakeover
from workflows import policies
from workflows.cluster import ClusterWorkflow
from workflows.fleet import FleetRolloutWorkflow
from workflows.node_repair import NodeRepairWorkflow
from workflows.provision import ProvisionWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.rolling_upgrade import RollingUpgradeWorkflow
from workflows.rotate_ca import RotateCaWorkflow
from workflows.rotate_certificates import RotateCertificatesWorkflow
from workflows.scale import ScaleWorkflow
from workflows.scheduled_rotation import ScheduledRotationWorkflow
from workflows.teardown import TeardownWorkflow

WORKFLOWS: list[type] = [
    ClusterWorkflow,
    FleetRolloutWorkflow,
    NodeRepairWorkflow,
    ReconcileWorkflow,
    ProvisionWorkflow,
    RotateCaWorkflow,
    RotateCertificatesWorkflow,
    RollingUpgradeWorkflow,
    ScaleWorkflow,
    ScheduledRotationWorkflow,
    TeardownWorkflow,
]

# Pure-data modules are shared with the sandbox instead of re-imported for every workflow run,
# which keeps worker memory flat (design.md: third-party imports in workflows can triple it).
# The runbooks (workflows.*) are deterministic, import only temporalio, the stdlib and models
# (import-linter holds them to it) and keep no module state, so they are shared too: re-importing
# them cost 14% of the worker's Python CPU.
PASSTHROUGH_MODULES = ("models", "workflows", "pydantic", "pydantic_core", "annotated_types")

GRACEFUL_SHUTDOWN = timedelta(seconds=30)
"""On SIGTERM, in-flight activities get this long to finish before they are cancelled and retried."""


def sandbox_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def activities_of(*backends: object) -> list[Callable[..., Any]]:
    """Every ``@activity.defn`` method of the given backend objects, bound to them."""
    found: list[Callable[..., Any]] = []
    for backend in backends:
        for _, member in inspect.getmembers(backend, inspect.ismethod):
            if activity._Definition.from_callable(member) is not None:
                found.append(member)
    return found


def build_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    activity_executor: Executor | None = None,
    workflows: Sequence[type] = WORKFLOWS,
    **options: Any,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),
        # Sync activities (hvac, kubernetes, boto3 block) need threads; tests may pass none.
        activity_executor=activity_executor or ThreadPoolExecutor(16, thread_name_prefix="activity"),
        workflow_runner=sandbox_runner(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # Every activity heartbeats while this worker lives: a killed worker's calls move in seconds,
        # and the worker that takes one over moves the dead worker's cached workflows with it.
        interceptors=[LivenessHeartbeats(), StickyTakeover(client), *options.pop("interceptors", ())],
        **{"max_heartbeat_throttle_interval": policies.HEARTBEAT_THROTTLE, **options},
    )
