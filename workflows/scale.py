"""Runbook: change the number of workers of a tenant cluster.

1. Plan: computed once from the input (``plan_scale``): which workers come, which go.
2. Up: new workers at the next free indexes (after the highest worker index the cluster has);
   certificates first (their kubelet key pairs, before the VMs that mount them), then the
   VMs/instances, then wait until each is available and registered Ready in the tenant API.
3. Down: the newest workers first (highest index), one at a time: cordon and drain with the
   upgrade's PodDisruptionBudget-aware deadline, delete the VM/instance, remove the Node from the
   tenant API, revoke and delete the node's certificates (``workflows.node_removal``, the path
   upgrades use for replaced workers).

Any failed step (a drain the budgets keep from finishing, a new worker not ready in time)
**pauses** the scale with a message naming the node and why, as an upgrade pauses; the operator
resumes (the failed step runs again: every step converges) or aborts with the upgrade's commands.
An abort stops at once: a worker being drained is uncordoned and stays, new workers not yet Ready
are removed again; the result is ABORTED and says which workers the cluster has now.

A worker that dies mid-scale loses nothing: the workflow replays to where it was and every
activity converges when run again, so no worker is added twice or left half-removed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

from models.cluster import NodeRecord, OperationKind, OperationState, OperationStatus
from models.errors import innermost_message
from models.naming import node_order
from models.operations import (
    ScaleInput,
    ScaleResult,
    UpgradeAction,
    UpgradeControl,
    UpgradeOutcome,
)
from models.pki import CertificateRecord, certificate_requests, node_certificate_name
from models.spec import ClusterSpec
from workflows import activity_stubs as act
from workflows import policies
from workflows.journal import OperationJournal
from workflows.names import PROGRESS_QUERY, SCALE_WORKFLOW, UPGRADE_CONTROL_SIGNAL
from workflows.node_removal import removal_steps
from workflows.side_by_side import together

STEPS = ["plan", "add", "remove"]


def _index(name: str) -> int:
    _, _, number = name.rpartition("-")
    return int(number) if number.isdigit() else -1


@dataclass(frozen=True)
class ScalePlan:
    add: list[str]
    remove: list[str]


def plan_scale(spec: ClusterSpec, nodes: Sequence[NodeRecord], workers: int) -> ScalePlan:
    """New workers at the next free indexes; removals newest first. Deterministic: a resumed or
    repeated scale finds what an earlier attempt created instead of adding more."""
    names = [n.name for n in nodes] or spec.node_names()
    current = sorted((n for n in names if n.startswith("worker-")), key=_index)
    if workers >= len(current):
        start = max([-1, *(_index(n) for n in current)]) + 1
        return ScalePlan(add=[f"worker-{start + i}" for i in range(workers - len(current))], remove=[])
    return ScalePlan(add=[], remove=list(reversed(current))[: len(current) - workers])


class _Aborted(Exception):
    """The operator aborted: the scale stops where it is (never leaves the workflow)."""


@workflow.defn(name=SCALE_WORKFLOW)
class ScaleWorkflow:
    @workflow.init
    def __init__(self, input: ScaleInput) -> None:
        self.journal = OperationJournal(OperationKind.SCALE, STEPS)
        self.plan = plan_scale(input.spec, input.nodes, input.workers)
        self.cluster_id = input.spec.id
        self.ready_timeout = input.node_ready_timeout or policies.NODE_READY_TIMEOUT
        self.drain_timeout = input.drain_timeout or policies.DRAIN_TIMEOUT
        self.nodes = {n.name: n for n in input.nodes} or {
            n: NodeRecord(name=n, role=n.split("-")[0], kubernetes_version=input.spec.kubernetes_version)
            for n in input.spec.node_names()
        }
        self.certificates: dict[str, CertificateRecord] = {}
        self.added: list[str] = []
        self.removed: list[str] = []
        self.resumes = 0
        self.aborts = 0

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.signal(name=UPGRADE_CONTROL_SIGNAL)
    def control(self, control: UpgradeControl) -> None:
        """The upgrade's controls: resume retries the failed step, abort stops (pause is not needed:
        a scale goes one node at a time and pauses by itself on a failure)."""
        if control.action is UpgradeAction.RESUME:
            self.resumes += 1
        elif control.action is UpgradeAction.ABORT:
            self.aborts += 1

    @workflow.run
    async def run(self, input: ScaleInput) -> ScaleResult:
        spec, plan, step = input.spec, self.plan, self.journal.step
        version = spec.kubernetes_version
        before = sum(1 for n in self.nodes if n.startswith("worker-"))
        try:
            async with step("plan", f"workers {before} -> {input.workers}"):
                pass
            if plan.add:
                async with step("add", f"{', '.join(plan.add)}: certificates, then the VMs, then Ready"):
                    await self._add(spec, plan.add, version)
            else:
                self.journal.mark_skipped("add", "nothing to add")
            if plan.remove:
                async with step("remove", f"{', '.join(plan.remove)}, newest first, one at a time"):
                    for done, node in enumerate(plan.remove):
                        await self.journal.progress(done, len(plan.remove), node, unit="workers removed")
                        await self._remove(spec, node)
                    await self.journal.progress(len(plan.remove), len(plan.remove), unit="workers removed")
            else:
                self.journal.mark_skipped("remove", "nothing to remove")
        except _Aborted:
            message = f"aborted by the operator: the cluster has {self._worker_count()} workers"
            return self._result(UpgradeOutcome.ABORTED, self.journal.finish(OperationState.CANCELLED, message))
        return self._result(UpgradeOutcome.COMPLETED, self.journal.finish())

    # --- up ---------------------------------------------------------------------------------------
    async def _add(self, spec: ClusterSpec, new: list[str], version: str) -> None:
        names = {node_certificate_name(n) for n in new}
        requests = [r for r in certificate_requests(spec, new) if r.name in names]
        subject = ", ".join(new)

        async def certificates() -> None:
            issued = await act.ensure_certificates(spec, requests, why=f"new workers {subject}")
            for record in issued.records:
                self.certificates[record.name] = record

        async def wait_ready() -> None:
            await together(
                act.wait_nodes_ready(spec, new, self.ready_timeout, version),
                *(act.wait_node_registered(spec, n, version, self.ready_timeout) for n in new),
            )

        try:
            await self._step("certificates", subject, certificates)
            await self._step("create", subject, lambda: together(*(act.ensure_node(spec, n, version) for n in new)))
            await self._step("wait-ready", subject, wait_ready)
        except _Aborted:
            # New workers that never became Ready go again, the whole way (nothing of them stays).
            for node in reversed(new):
                for _, run in removal_steps(spec, node, version):
                    await run()
            raise
        for node in new:
            self.nodes[node] = NodeRecord(name=node, role="worker", kubernetes_version=version)
            self.added.append(node)
        await self.journal.progress(len(new), len(new), unit="workers added")

    # --- down -------------------------------------------------------------------------------------
    async def _remove(self, spec: ClusterSpec, node: str) -> None:
        version = self.nodes[node].kubernetes_version if node in self.nodes else spec.kubernetes_version
        try:
            await self._step("drain", node, lambda: act.drain_node(spec, node, self.drain_timeout))
        except _Aborted:
            await act.uncordon_node(spec, node)  # it stays: schedulable again
            raise
        for name, run in removal_steps(spec, node, version):
            await self._step(name, node, run, abortable=False)  # past the drain, a removal finishes
        self.nodes.pop(node, None)
        self.removed.append(node)

    # --- running steps, pausing on failure (as the upgrade does) ------------------------------------
    async def _step(
        self, name: str, subject: str, run: Callable[[], Awaitable[Any]], *, abortable: bool = True
    ) -> None:
        while True:
            if abortable and self.aborts:
                raise _Aborted
            try:
                if abortable:
                    await self._interruptible(run)
                else:
                    await run()
                return
            except ActivityError as err:
                if isinstance(err.cause, CancelledError):
                    raise  # cancelled from outside (a teardown): stop, do not pause
                cid = self.cluster_id
                message = (
                    f"scale paused at {subject} ({name}): {innermost_message(err)}; resume with "
                    f"'tenantctl upgrade resume {cid}' or stop with 'tenantctl upgrade abort {cid}'"
                )
                if not await self._wait_for_operator(message) and abortable:
                    raise _Aborted from None

    async def _interruptible(self, run: Callable[[], Awaitable[Any]]) -> Any:
        aborts = self.aborts
        work = asyncio.ensure_future(run())
        abort = asyncio.ensure_future(workflow.wait_condition(lambda: self.aborts > aborts))
        try:
            await workflow.wait([work, abort], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            abort.cancel()
            raise
        if work.done():
            abort.cancel()
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, ActivityError, CancelledError):
            await work
        raise _Aborted

    async def _wait_for_operator(self, message: str) -> bool:
        """Pause until the operator resumes (True) or aborts (False)."""
        resumes, aborts = self.resumes, self.aborts
        workflow.logger.warning("%s", message)
        await self.journal.set_paused(True, message)
        await workflow.wait_condition(lambda: self.resumes > resumes or self.aborts > aborts)
        if self.aborts > aborts:
            await self.journal.set_paused(False, "abort requested: stopping the scale")
            return False
        await self.journal.set_paused(False, "resumed by the operator")
        return True

    # --- the result ---------------------------------------------------------------------------------
    def _worker_count(self) -> int:
        return sum(1 for n in self.nodes if n.startswith("worker-"))

    def _result(self, outcome: UpgradeOutcome, operation: OperationStatus) -> ScaleResult:
        return ScaleResult(
            outcome=outcome,
            workers=self._worker_count(),
            nodes=[self.nodes[n] for n in sorted(self.nodes, key=node_order)],
            added=self.added,
            removed=self.removed,
            certificates=list(self.certificates.values()),
            operation=operation,
        )
