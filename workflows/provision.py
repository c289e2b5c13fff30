"""Runbook: bring up a new tenant cluster.

1. PKI: the cluster's Vault mount with its root CA, one role per component, the renewal policy.
2. Foundation: the provider's per-cluster isolation (KVM: namespace, network policy).
3. Certificates: every component's key pair, written straight to its destination.
4. Endpoint: how the tenant API is reached (KVM: Services and Ingress).
5. Nodes: one node per master and worker at the spec's Kubernetes version.
6. Ready: wait until every node is available.
7. Schedule: the Temporal Schedule that rotates the cluster's certificates every interval, so a
   Ready cluster is always one whose certificates will be renewed.

Steps that do not need each other run side by side (PKI and foundation; the endpoint next to the
certificates), so a create takes as many rounds as its longest chain of dependencies, not one per
activity. Every step is idempotent, so a retried or resumed create converges instead of duplicating.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

from models.cluster import NodeRecord, OperationKind, OperationStatus
from models.durations import format_duration
from models.naming import node_role
from models.operations import ProvisionInput, ProvisionResult
from models.pki import CaResult, CertificatesResult, certificate_requests
from models.schedules import RotationScheduleResult
from models.spec import ClusterSpec
from workflows import activity_stubs as act
from workflows import policies
from workflows.journal import OperationJournal
from workflows.names import PROGRESS_QUERY, PROVISION_WORKFLOW
from workflows.side_by_side import together

STEPS = ["pki", "foundation", "certificates", "endpoint", "nodes", "ready", "schedule"]
SCHEDULE_STEP_PATCH = "provision-makes-rotation-schedule"
"""Creates started before this step existed made the schedule in the entity instead."""
MAX_PARALLEL_NODES = 16
LEGACY_MAX_PARALLEL_NODES = 5
"""How many nodes runs recorded before parallel steps (``OPERATION_SNAPSHOTS_PATCH``) created at once."""


@workflow.defn(name=PROVISION_WORKFLOW)
class ProvisionWorkflow:
    @workflow.init
    def __init__(self, input: ProvisionInput) -> None:
        self.journal = OperationJournal(OperationKind.CREATE, STEPS)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.run
    async def run(self, input: ProvisionInput) -> ProvisionResult:
        if self.journal.legacy:
            return await self._run_in_sequence(input.spec)
        spec = input.spec
        step = self.journal.step
        nodes = spec.node_names()

        # Independent steps side by side: the PKI and the provider's foundation do not know each
        # other; certificates need the roles and (for their Secrets) the foundation; the endpoint
        # needs the foundation; nodes need their certificates and the endpoint.
        async def pki() -> CaResult:
            async with step("pki", f"mount, root CA, roles and policy for {spec.id}"):
                # the roles live in the mount ensure_ca makes; the policy only names the mount
                async def mount_and_roles() -> CaResult:
                    ca = await act.ensure_ca(spec)
                    await act.ensure_roles(spec)
                    return ca

                ca, _ = await together(mount_and_roles(), act.ensure_policy(spec))
                return ca  # type: ignore[no-any-return]

        async def foundation() -> None:
            async with step("foundation"):
                await act.ensure_foundation(spec)

        async def endpoint(ready_foundation: asyncio.Future[None]) -> None:
            await ready_foundation
            async with step("endpoint", spec.api_domain):
                await act.ensure_endpoint(spec)

        async def certificates(
            ready_pki: asyncio.Future[CaResult], ready_foundation: asyncio.Future[None]
        ) -> CertificatesResult:
            await together(ready_pki, ready_foundation)
            async with step("certificates"):
                return await act.ensure_certificates(spec, certificate_requests(spec, nodes))

        pki_done = asyncio.ensure_future(pki())
        foundation_done = asyncio.ensure_future(foundation())
        ca, issued, _ = await together(pki_done, certificates(pki_done, foundation_done), endpoint(foundation_done))

        async with step("nodes", f"{len(nodes)} nodes at {spec.kubernetes_version}"):
            await self._ensure_nodes(spec, nodes, MAX_PARALLEL_NODES)

        async with step("ready", "every node available"):
            await act.wait_nodes_ready(spec, nodes, policies.NODES_READY_TIMEOUT, spec.kubernetes_version)

        interval = format_duration(spec.certificates.rotation_interval)
        async with step("schedule", f"rotate certificates every {interval}"):
            schedule = await act.ensure_rotation_schedule(spec)
        return self._result(spec, ca, issued, schedule)

    async def _ensure_nodes(self, spec: ClusterSpec, nodes: list[str], parallel: int) -> None:
        limit = asyncio.Semaphore(parallel)
        done = 0

        async def one(node: str) -> None:
            nonlocal done
            async with limit:
                await act.ensure_node(spec, node, spec.kubernetes_version)
            done += 1
            await self.journal.progress(done, len(nodes), node)

        if self.journal.legacy:  # as recorded: the first failure ends the runbook at once
            await asyncio.gather(*(one(n) for n in nodes))
        else:
            await together(*(one(n) for n in nodes))

    def _result(
        self, spec: ClusterSpec, ca: CaResult, issued: CertificatesResult, schedule: RotationScheduleResult | None
    ) -> ProvisionResult:
        nodes = spec.node_names()
        return ProvisionResult(
            schedule=schedule,
            ca=ca,
            certificates=issued.records,
            nodes=[NodeRecord(name=n, role=node_role(n), kubernetes_version=spec.kubernetes_version) for n in nodes],
            operation=self.journal.finish(),
        )

    async def _run_in_sequence(self, spec: ClusterSpec) -> ProvisionResult:
        """The runbook as recorded before parallel steps: one step after another."""
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
            await self._ensure_nodes(spec, nodes, LEGACY_MAX_PARALLEL_NODES)

        async with step("ready", "every node available"):
            await act.wait_nodes_ready(spec, nodes, policies.NODES_READY_TIMEOUT, spec.kubernetes_version)

        schedule = None
        if workflow.patched(SCHEDULE_STEP_PATCH):
            interval = format_duration(spec.certificates.rotation_interval)
            async with step("schedule", f"rotate certificates every {interval}"):
                schedule = await act.ensure_rotation_schedule(spec)
        else:
            self.journal.mark_skipped("schedule", "made by the cluster entity (runbook of an older version)")
        return self._result(spec, ca, issued, schedule)
