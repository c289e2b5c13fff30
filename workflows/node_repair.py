"""Runbook: repair one unhealthy node (node auto-repair; the entity decides which and when).

A worker is replaced, surge first, so the cluster never has fewer workers than it should:

1. plan: the replacement gets the next free worker index (after the highest the cluster has).
2. add: its kubelet key pair first (the VM mounts it), then the VM/instance, then wait until it is
   available and registered Ready in the tenant API. A replacement that never becomes Ready is
   removed again, the whole way, and the repair fails: the old worker stays as it was.
3. drain: the old worker is cordoned and drained with a deadline; a drain that cannot finish (the
   node is dead, budgets refuse) does not stop the repair: the node is unhealthy already.
4. remove: the node-removal path (``workflows.node_removal``): its VM/instance, its Node object,
   its certificates revoked and deleted.

A master is restarted in place (a replacement would change etcd's membership): its VM/instance is
converged (a Deployment scaled to 0 back to 1, a stopped instance started) with a new restart token,
then waited for until it is available and Ready again. The entity never repairs a master while etcd
lacks quorum, and never two nodes at once (a repair is an operation: one at a time, under its lock).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from models.cluster import NodeRecord, OperationKind, OperationStatus
from models.errors import NodesNotReady, innermost_message
from models.naming import node_role
from models.node_repair import NodeRepairInput, NodeRepairResult
from models.pki import certificate_requests, node_certificate_name
from models.spec import ClusterSpec
from workflows import activity_stubs as act
from workflows import policies
from workflows.journal import OperationJournal
from workflows.names import NODE_REPAIR_WORKFLOW, PROGRESS_QUERY
from workflows.node_removal import removal_steps
from workflows.node_rolls import restart_token
from workflows.scale import plan_scale
from workflows.side_by_side import together

WORKER_STEPS = ["plan", "add", "drain", "remove"]
MASTER_STEPS = ["plan", "restart", "wait-ready"]


@workflow.defn(name=NODE_REPAIR_WORKFLOW)
class NodeRepairWorkflow:
    @workflow.init
    def __init__(self, input: NodeRepairInput) -> None:
        steps = MASTER_STEPS if node_role(input.node) == "master" else WORKER_STEPS
        self.journal = OperationJournal(OperationKind.REPAIR_NODE, steps)
        self.ready_timeout = input.node_ready_timeout or policies.NODE_READY_TIMEOUT
        self.drain_timeout = input.drain_timeout or policies.REPAIR_DRAIN_TIMEOUT

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.run
    async def run(self, input: NodeRepairInput) -> NodeRepairResult:
        known = {n.name: n for n in input.nodes}
        old = known.get(input.node)
        version = old.kubernetes_version if old else input.spec.kubernetes_version
        if node_role(input.node) == "master":
            return await self._restart(input, version)
        return await self._replace(input, version)

    # --- a master: restart in place -----------------------------------------------------------------
    async def _restart(self, input: NodeRepairInput, version: str) -> NodeRepairResult:
        spec, node = input.spec, input.node
        async with self.journal.step("plan", f"{node} is unhealthy ({input.reason}): restart it in place"):
            pass
        token = restart_token([node], ["node-repair", str(input.repair_number)])
        async with self.journal.step("restart", f"converge {node}'s VM/instance with a new restart token"):
            await act.ensure_node(spec, node, version, token)
        async with self.journal.step("wait-ready", f"{node} available and Ready in the tenant API"):
            await self._wait_ready(spec, node, version)
        return NodeRepairResult(
            node=node, restarted=True, operation=self.journal.finish(message=f"{node} restarted in place")
        )

    # --- a worker: surge, then remove ------------------------------------------------------------------
    async def _replace(self, input: NodeRepairInput, version: str) -> NodeRepairResult:
        spec, old = input.spec, input.node
        workers = sum(1 for n in input.nodes if n.role == "worker") or spec.workers.count
        new = plan_scale(spec, input.nodes, workers + 1).add[0]
        async with self.journal.step("plan", f"{old} is unhealthy ({input.reason}): replace it with {new}"):
            pass
        certificates = []
        async with self.journal.step("add", f"{new}: certificates, then the VM/instance, then Ready"):
            names = {node_certificate_name(new)}
            requests = [r for r in certificate_requests(spec, [new]) if r.name in names]
            issued = await act.ensure_certificates(spec, requests, why=f"{new} replaces unhealthy {old}")
            certificates = list(issued.records)
            await act.ensure_node(spec, new, version)
            try:
                await self._wait_ready(spec, new, version)
            except ActivityError as err:
                # Nothing of a replacement that never became Ready stays; the old worker is untouched.
                for _, run in removal_steps(spec, new, version):
                    await run()
                raise ApplicationError(
                    f"replacement {new} of unhealthy {old} did not become Ready ({innermost_message(err)}); "
                    f"it was removed again and {old} stays; the next check tries again",
                    type=NodesNotReady.__name__,
                    non_retryable=True,
                ) from None  # the message carries the cause: the operation's message is this one
        drain = ""
        async with self.journal.step("drain", f"cordon and drain {old} (at most {self.drain_timeout})"):
            try:
                result = await act.drain_node(spec, old, self.drain_timeout)
                drain = f"evicted {len(result.evicted)} pods" if result.node_found else "not in the tenant API"
            except ActivityError as err:
                # The node is unhealthy already: its pods are lost or stuck either way.
                drain = f"gave up: {innermost_message(err)}"
            self.journal.status.step("drain").message = f"{old}: drain {drain}"
        async with self.journal.step("remove", f"{old}: VM/instance, Node object, certificates"):
            for _, run in removal_steps(spec, old, version):
                await run()
        replacement = NodeRecord(name=new, role="worker", kubernetes_version=version)
        return NodeRepairResult(
            node=old,
            replacement=replacement,
            certificates=certificates,
            drain=drain,
            operation=self.journal.finish(message=f"{old} replaced by {new}"),
        )

    async def _wait_ready(self, spec: ClusterSpec, node: str, version: str) -> None:
        await together(
            act.wait_nodes_ready(spec, [node], self.ready_timeout, version),
            act.wait_node_registered(spec, node, version, self.ready_timeout),
        )
