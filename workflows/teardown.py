"""Runbook: remove a tenant cluster completely, even one whose create or teardown died halfway.

The create order, reversed (operatorkit: EnsureDeleted walks the resource list backwards):
1. Schedule: pause and delete the certificate-rotation schedule, so nothing starts mid-teardown.
2. Nodes: every node the provider still has (not just the ones the entity knows: a create or an
   upgrade may have died after adding one).
3. Endpoint, 4. stored key pairs, 5. foundation (KVM: the namespace, waited out until gone).
6. PKI: revoke every unexpired leaf, then delete the roles, the policy and the mount.
7. Verify: nothing labelled or tagged with the cluster id remains; otherwise fail naming it.

Every step treats "not found" as done, so running the whole runbook again is always safe.
Steps that do not depend on each other run side by side (``_remove_side_by_side``); the order above
is what each one waits for.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from models.cluster import OperationKind, OperationStatus
from models.errors import ResourcesRemain
from models.operations import TeardownInput, TeardownResult
from models.pki import RevokeResult
from models.provider import EnsureResult, NodesResult, ResourceChange
from models.spec import ClusterSpec
from workflows import activity_stubs as act
from workflows.journal import OperationJournal
from workflows.names import PROGRESS_QUERY, TEARDOWN_WORKFLOW
from workflows.side_by_side import together

STEPS = ["schedule", "nodes", "endpoint", "certificates", "foundation", "pki", "verify"]
MAX_PARALLEL_NODES = 16
LEGACY_MAX_PARALLEL_NODES = 5
"""How many nodes runs recorded before parallel steps (``OPERATION_SNAPSHOTS_PATCH``) removed at once."""
TEARDOWN_SIDE_BY_SIDE_PATCH = "teardown-side-by-side"
"""Teardowns that run each step once what it depends on is gone; absent from histories of teardowns
that ran step after step (they replay that way)."""


@workflow.defn(name=TEARDOWN_WORKFLOW)
class TeardownWorkflow:
    @workflow.init
    def __init__(self, input: TeardownInput) -> None:
        self.journal = OperationJournal(OperationKind.DELETE, STEPS)
        self.removed: list[str] = []

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.run
    async def run(self, input: TeardownInput) -> TeardownResult:
        spec = input.spec
        started = workflow.now()
        if workflow.patched(TEARDOWN_SIDE_BY_SIDE_PATCH):
            revoked = await self._remove_side_by_side(input)
        else:
            revoked = await self._remove_in_order(input)

        async with self.journal.step("verify", "nothing labelled with the cluster id remains"):
            leftovers = (await act.list_resources(spec)).resources
            if leftovers:
                raise ApplicationError(
                    f"teardown of {spec.id} left {len(leftovers)} resources behind: {', '.join(leftovers[:20])}; "
                    "run 'tenantctl delete' again once they can be removed",
                    type=ResourcesRemain.__name__,
                    non_retryable=True,
                )

        finished = workflow.now()
        return TeardownResult(
            removed=self.removed,
            revoked_certificates=revoked.revoked,
            started_at=started,
            finished_at=finished,
            duration_seconds=(finished - started).total_seconds(),
            operation=self.journal.finish(),
        )

    async def _remove_side_by_side(self, input: TeardownInput) -> RevokeResult:
        """Every step as soon as what it depends on is gone (``TEARDOWN_SIDE_BY_SIDE_PATCH``).

        - the schedule, alongside everything else: the entity refuses a rotation once deleting;
        - the PKI (revoke every leaf, then the mount), alongside everything else too: nothing issues
          during a teardown, and no node checks a revocation (Kubernetes reads no CRL); Vault
          revokes one leaf at a time, so this is the longest step and starts first;
        - the nodes the entity knows at once, while the provider lists what else it has (a node
          added by an upgrade that died), and those right after;
        - then the stored key pairs, and the endpoint followed by the foundation (an AWS VPC cannot
          go while its load balancer lives), side by side.
        """
        spec, step = input.spec, self.journal.step
        revoked = RevokeResult()

        async def schedule() -> None:
            async with step("schedule"):
                self._note(await act.ensure_rotation_schedule_absent(spec.id))

        async def endpoint_then_foundation() -> None:
            async with step("endpoint", spec.api_domain):
                self._note(await act.ensure_endpoint_absent(spec))
            async with step("foundation"):
                self._note(await act.ensure_foundation_absent(spec))

        async def certificates() -> None:
            async with step("certificates"):
                self._note(await act.ensure_certificates_absent(spec))

        async def pki() -> None:
            nonlocal revoked
            async with step("pki"):
                revoked = await act.revoke_certificates(spec)
                self._note(await act.ensure_pki_absent(spec))

        async def provider() -> None:
            await self._remove_nodes(spec, input.nodes)
            await together(endpoint_then_foundation(), certificates())

        await together(schedule(), pki(), provider())
        return revoked

    async def _remove_nodes(self, spec: ClusterSpec, known: list[str]) -> None:
        limit = asyncio.Semaphore(MAX_PARALLEL_NODES)
        nodes = sorted(set(known))
        done = 0

        async def remove(node: str, version: str) -> None:
            nonlocal done
            async with limit:
                # the activity also deletes the cloud-config of the version the live VM carries
                self._note(await act.ensure_node_absent(spec, node, version))
            done += 1
            await self.journal.progress(done, len(nodes), node)

        async with self.journal.step("nodes"):
            listed: list[NodesResult] = []

            async def list_nodes() -> None:
                listed.append(await act.list_nodes(spec))

            await together(list_nodes(), *(remove(n, spec.kubernetes_version) for n in nodes))
            versions = {n.name: n.kubernetes_version for n in listed[0].nodes}
            unknown = sorted(set(versions) - set(nodes))
            nodes += unknown
            await together(*(remove(n, versions[n]) for n in unknown))

    async def _remove_in_order(self, input: TeardownInput) -> RevokeResult:
        """The runbook as recorded before ``TEARDOWN_SIDE_BY_SIDE_PATCH``: step after step."""
        spec = input.spec
        step = self.journal.step

        async with step("schedule"):
            self._note(await act.ensure_rotation_schedule_absent(spec.id))

        async with step("nodes"):
            observed = await act.list_nodes(spec)
            versions = {n.name: n.kubernetes_version for n in observed.nodes}
            nodes = sorted(set(input.nodes) | set(versions))
            limit = asyncio.Semaphore(LEGACY_MAX_PARALLEL_NODES if self.journal.legacy else MAX_PARALLEL_NODES)
            done = 0

            async def remove(node: str) -> None:
                nonlocal done
                async with limit:
                    version = versions.get(node, spec.kubernetes_version)
                    self._note(await act.ensure_node_absent(spec, node, version))
                done += 1
                await self.journal.progress(done, len(nodes), node)

            if self.journal.legacy:  # as recorded: the first failure ends the runbook at once
                await asyncio.gather(*(remove(n) for n in nodes))
            else:
                await together(*(remove(n) for n in nodes))

        async def endpoint() -> None:
            async with step("endpoint", spec.api_domain):
                self._note(await act.ensure_endpoint_absent(spec))

        async def certificates() -> None:
            async with step("certificates"):
                self._note(await act.ensure_certificates_absent(spec))

        if self.journal.legacy:
            await endpoint()
            await certificates()
        else:  # neither needs the other gone
            await together(endpoint(), certificates())

        async with step("foundation"):
            self._note(await act.ensure_foundation_absent(spec))

        async with step("pki"):
            revoked = await act.revoke_certificates(spec)
            self._note(await act.ensure_pki_absent(spec))
        return revoked

    def _note(self, result: EnsureResult) -> None:
        self.removed += [f"{o.kind}/{o.name}" for o in result.outcomes if o.change is ResourceChange.DELETED]
