"""Runbook: bring up a new tenant cluster.

1. PKI: the cluster's Vault mount with its root CA, one role per component, the renewal policy.
2. Foundation: the provider's per-cluster isolation (KVM: namespace, network policy).
3. Certificates: every component's key pair, written straight to its destination.
4. Endpoint: how the tenant API is reached (KVM: Services and Ingress).
5. Nodes: one node per master and worker at the spec's Kubernetes version.
6. Ready: wait until every node is available.
7. Schedule: the Temporal Schedule that rotates the cluster's certificates every interval, so a
   Ready cluster is always one whose certificates will be renewed.

Every step is idempotent, so a retried or resumed create converges instead of duplicating.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

from models.cluster import NodeRecord, OperationKind, OperationStatus
from models.durations import format_duration
from models.naming import node_role
from models.operations import ProvisionInput, ProvisionResult
from models.pki import certificate_requests
from workflows import activity_stubs as act
from workflows import policies
from workflows.journal import OperationJournal

STEPS = ["pki", "foundation", "certificates", "endpoint", "nodes", "ready", "schedule"]
SCHEDULE_STEP_PATCH = "provision-makes-rotation-schedule"
"""Creates started before this step existed made the schedule in the entity instead."""
MAX_PARALLEL_NODES = 5


@workflow.defn(name="ProvisionCluster")
class ProvisionWorkflow:
    @workflow.init
    def __init__(self, input: ProvisionInput) -> None:
        self.journal = OperationJournal(OperationKind.CREATE, STEPS)

    @workflow.query
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.run
    async def run(self, input: ProvisionInput) -> ProvisionResult:
        spec = input.spec
        step = self.journal.step
        nodes = spec.node_names()

        async with step("pki", f"mount, root CA, roles and policy for {spec.id}"):
            ca = await act.ensure_ca(spec)
            await act.ensure_roles(spec)
            await act.ensure_policy(spec)

        async with step("foundation"):
            await act.ensure_foundation(spec)

        async with step("certificates"):
            issued = await act.ensure_certificates(spec, certificate_requests(spec, nodes))

        async with step("endpoint", spec.api_domain):
            await act.ensure_endpoint(spec)

        async with step("nodes", f"{len(nodes)} nodes at {spec.kubernetes_version}"):
            limit = asyncio.Semaphore(MAX_PARALLEL_NODES)
            done = 0

            async def one(node: str) -> None:
                nonlocal done
                async with limit:
                    await act.ensure_node(spec, node, spec.kubernetes_version)
                done += 1
                await self.journal.progress(done, len(nodes), node)

            await asyncio.gather(*(one(n) for n in nodes))

        async with step("ready", "every node available"):
            await act.wait_nodes_ready(spec, nodes, policies.NODES_READY_TIMEOUT, spec.kubernetes_version)

        schedule = None
        if workflow.patched(SCHEDULE_STEP_PATCH):
            interval = format_duration(spec.certificates.rotation_interval)
            async with step("schedule", f"rotate certificates every {interval}"):
                schedule = await act.ensure_rotation_schedule(spec)
        else:
            self.journal.skip("schedule", "made by the cluster entity (runbook of an older version)")

        return ProvisionResult(
            schedule=schedule,
            ca=ca,
            certificates=issued.records,
            nodes=[NodeRecord(name=n, role=node_role(n), kubernetes_version=spec.kubernetes_version) for n in nodes],
        )
