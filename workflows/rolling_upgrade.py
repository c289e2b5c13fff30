"""Runbook: upgrade a tenant cluster's Kubernetes version node by node, health-gated and pausable.

1. Plan: computed once from the input (``plan_upgrade``) and kept in workflow state (query
   ``plan``): masters first, one at a time, **in place** (same name, so etcd keeps its member
   identity and data); then workers, **replaced** by fresh VMs named with the next free indexes
   (``worker-3``, ``worker-4``, ...) in batches of ``max_surge + max_unavailable``.
2. Masters, one at a time (etcd keeps quorum): cordon and drain in the tenant cluster, roll the VM
   to the new version (new image and cloud-config), wait until the VM is available at that version
   and its kubelet registers at it, uncordon, health gate.
3. Workers, batch by batch: certificates for the replacements (before they exist, as in create);
   remove up to ``max_unavailable`` old workers first (cordon, drain, remove); create the
   replacements, wait until they are ready and registered; cordon, drain and remove the remaining
   old ones (the surge); health gate. Defaults (surge 1, unavailable 0): one new worker comes up
   before an old one goes.
4. Verify: the provider has every planned node at the new version and none of the replaced ones.

Health gate: after every node (every batch) the tenant API must answer and every node be Ready.
Any failed step (a node not ready in time, a drain that PodDisruptionBudgets keep from finishing,
an unhealthy cluster) **pauses** the upgrade with a message naming the node and why; the operator
resumes (the failed step and the rest of that node's steps run again: every step converges) or
aborts. ``pause`` stops after the current node; ``abort`` stops at once (waits are cancelled) and
rolls back, in reverse order, every node touched, with the same procedure, to the version it ran
before; the result is ABORTED with the previous version. A second abort while a rollback is paused
stops it and fails the operation, naming where it stopped.

Cancellation (a teardown that cancels the running operation) stops after the current activity,
without a rollback: the cluster is about to go anyway.

A worker that dies mid-upgrade loses nothing: the workflow replays to where it was, and every
activity converges when run again, so no finished node is upgraded twice and no replaced node
is left running next to its replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from models.cluster import NodeRecord, OperationKind, OperationState, OperationStatus, StepState
from models.errors import InvalidInput, OperationStopped, innermost_message
from models.naming import node_index, node_role
from models.operations import (
    NodeUpgrade,
    NodeUpgradeState,
    UpgradeAction,
    UpgradeControl,
    UpgradeInput,
    UpgradeOutcome,
    UpgradePlan,
    UpgradeResult,
)
from models.pki import CertificateRecord, certificate_requests
from models.spec import ClusterSpec
from models.versions import SemVer, reported_version
from workflows import activity_stubs as act
from workflows import policies
from workflows.journal import OperationJournal
from workflows.names import PROGRESS_QUERY, UPGRADE_CONTROL_SIGNAL, UPGRADE_WORKFLOW
from workflows.node_removal import removal_steps, removes_credentials
from workflows.side_by_side import together

STEPS = ["plan", "masters", "workers", "verify"]
ROLLBACK_STEP = "rollback"
FORWARD_STEPS = ("plan", "masters", "workers", "verify")


# --- the plan: a pure function of the input ---------------------------------------------------------
def _index(name: str) -> int:
    """A node's number; a name that is no node name (never from this project) sorts first."""
    try:
        return node_index(name)
    except InvalidInput:
        return -1


def plan_upgrade(spec: ClusterSpec, nodes: Sequence[NodeRecord], target_version: str) -> UpgradePlan:
    """Which node goes when, and what replaces it.

    Replacement workers take the indexes after the highest worker index known (and after the
    spec's count), in order: deterministic, so an upgrade resumed after a crash, or run again
    after a failure, finds the replacements an earlier attempt created instead of adding more.
    """
    target = str(SemVer.parse(target_version))
    records = list(nodes) or [
        NodeRecord(name=n, role=node_role(n), kubernetes_version=spec.kubernetes_version) for n in spec.node_names()
    ]
    masters = sorted((r for r in records if r.role == "master"), key=lambda r: _index(r.name))
    workers = sorted((r for r in records if r.role == "worker"), key=lambda r: _index(r.name))
    entries = [
        NodeUpgrade(node=r.name, role="master", replacement=r.name, batch=i, from_version=r.kubernetes_version)
        for i, r in enumerate(masters)
    ]
    width = max(1, spec.workers.max_surge + spec.workers.max_unavailable)
    next_index = max([spec.workers.count - 1, *(_index(r.name) for r in workers)]) + 1
    for i, record in enumerate(workers):
        entries.append(
            NodeUpgrade(
                node=record.name,
                role="worker",
                replacement=f"worker-{next_index + i}",
                batch=len(masters) + i // width,
                from_version=record.kubernetes_version,
            )
        )
    return UpgradePlan(
        cluster_id=spec.id,
        from_version=spec.kubernetes_version,
        to_version=target,
        max_surge=spec.workers.max_surge,
        max_unavailable=spec.workers.max_unavailable,
        nodes=entries,
    )


def batches(entries: Sequence[NodeUpgrade]) -> list[list[NodeUpgrade]]:
    """Entries grouped by batch, in plan order."""
    grouped: dict[int, list[NodeUpgrade]] = {}
    for entry in entries:
        grouped.setdefault(entry.batch, []).append(entry)
    return [grouped[key] for key in sorted(grouped)]


def live_name(entry: NodeUpgrade) -> str:
    """The name the entry's node has now: the replacement once the upgrade reached it, else the original."""
    if entry.state in (NodeUpgradeState.UPGRADING, NodeUpgradeState.DONE):
        return entry.replacement
    return entry.node


# --- running steps ----------------------------------------------------------------------------------
class _Aborted(Exception):
    """The operator aborted: the forward run stops and the rollback begins (never leaves the workflow)."""


class _GateFailed(Exception):
    """A check inside the workflow failed (health gate, verification): pauses like a failed activity."""


@dataclass
class Phase:
    """One step of one node's (or batch's) procedure; re-running it after a pause must converge."""

    name: str
    subject: str
    run: Callable[[], Awaitable[Any]]
    interruptible: bool = False
    """Waits: an abort cancels them instead of waiting for their deadline."""


@dataclass
class _Controls:
    """Operator signals, counted so a wait can tell a new one from an old one."""

    pause_requested: bool = False
    resumes: int = 0
    aborts: int = 0
    log: list[str] = field(default_factory=list)


@workflow.defn(name=UPGRADE_WORKFLOW)
class RollingUpgradeWorkflow:
    @workflow.init
    def __init__(self, input: UpgradeInput) -> None:
        self.journal = OperationJournal(OperationKind.UPGRADE, STEPS)
        self.plan = plan_upgrade(input.spec, input.nodes, input.target_version)
        self.controls = _Controls()
        self.certificates: dict[str, CertificateRecord] = {}
        self.ready_timeout = input.node_ready_timeout or policies.NODE_READY_TIMEOUT
        self.drain_timeout = input.drain_timeout or policies.DRAIN_TIMEOUT
        self.health_wait = min(self.ready_timeout, policies.HEALTH_GATE_WAIT)
        self.removes_credentials = removes_credentials()

    # --- queries and signals --------------------------------------------------------------------
    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.query(name="plan")
    def get_plan(self) -> UpgradePlan:
        return self.plan

    @workflow.signal(name=UPGRADE_CONTROL_SIGNAL)
    def control(self, control: UpgradeControl) -> None:
        self.controls.log.append(f"{control.action}" + (f" ({control.reason})" if control.reason else ""))
        if control.action is UpgradeAction.PAUSE:
            self.controls.pause_requested = True
        elif control.action is UpgradeAction.RESUME:
            self.controls.pause_requested = False
            self.controls.resumes += 1
        else:
            self.controls.aborts += 1

    # --- the runbook ------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: UpgradeInput) -> UpgradeResult:
        spec, plan = input.spec, self.plan
        target = plan.to_version
        step = self.journal.step
        masters = [e for e in plan.nodes if e.role == "master"]
        workers = [e for e in plan.nodes if e.role == "worker"]

        try:
            async with step("plan", self._plan_summary(masters, workers)):
                # Preflight: an upgrade starts only on a healthy cluster (a broken node is not made
                # worse by being drained and rolled, and the gates after each node stay meaningful).
                preflight = self._run([self._health_phase(spec, None)], [])
                if self.journal.legacy:
                    await self._note_drift(spec)
                    await preflight
                else:  # reading the provider's nodes and the tenant's health need not wait for each other
                    await together(self._note_drift(spec), preflight)
            async with step("masters", f"{len(masters)} masters, one at a time, in place"):
                for entry in masters:
                    await self._upgrade(spec, [entry], self._master_phases(spec, entry, target))
            async with step(
                "workers",
                f"{len(workers)} workers replaced, max_surge {plan.max_surge}, max_unavailable {plan.max_unavailable}",
            ):
                for batch in batches(workers):
                    await self._upgrade(spec, batch, self._worker_phases(spec, batch, target))
            async with step("verify", f"every node at {target}, no replaced node left"):
                await self._run([Phase("verify", spec.id, lambda: self._verify(spec, target))], [])
        except _Aborted:
            await self._close_forward_steps()
            async with step(ROLLBACK_STEP, "every node touched, in reverse order, to its previous version"):
                await self._rollback(spec, target)
            return UpgradeResult(
                outcome=UpgradeOutcome.ABORTED,
                from_version=plan.from_version,
                to_version=target,
                kubernetes_version=plan.from_version,
                nodes=[NodeRecord(name=e.node, role=e.role, kubernetes_version=e.from_version) for e in plan.nodes],
                operation=self.journal.finish(
                    OperationState.CANCELLED, f"aborted: every node rolled back to Kubernetes {plan.from_version}"
                ),
            )
        return UpgradeResult(
            outcome=UpgradeOutcome.COMPLETED,
            from_version=plan.from_version,
            to_version=target,
            kubernetes_version=target,
            nodes=[NodeRecord(name=e.replacement, role=e.role, kubernetes_version=target) for e in plan.nodes],
            certificates=list(self.certificates.values()),
            operation=self.journal.finish(),
        )

    async def _note_drift(self, spec: ClusterSpec) -> None:
        observed = await act.list_nodes(spec)
        note = _drift(self.plan, [n.name for n in observed.nodes])
        if note:
            await self.journal.set_step("plan", message=f"{self.journal.status.step('plan').message}; {note}")

    # --- forward: one node (or batch) ---------------------------------------------------------------
    def _master_phases(self, spec: ClusterSpec, entry: NodeUpgrade, target: str) -> list[Phase]:
        node = entry.node
        return [
            *self._drain_phases(spec, node),
            Phase("roll", node, lambda: act.ensure_node(spec, node, target)),
            *self._ready_phases(spec, [node], target, node),
            Phase("uncordon", node, lambda: act.uncordon_node(spec, node)),
            self._health_phase(spec, node),
        ]

    def _worker_phases(self, spec: ClusterSpec, batch: list[NodeUpgrade], target: str) -> list[Phase]:
        # Up to max_unavailable old workers go before their replacements exist; the rest (the surge)
        # only once the replacements are ready: the pool never shrinks by more than max_unavailable
        # nor grows by more than max_surge.
        first = batch[: min(self.plan.max_unavailable, len(batch))]
        rest = batch[len(first) :]
        new = [e.replacement for e in batch]
        subject = ", ".join(e.label for e in batch)
        phases = [Phase("certificates", subject, lambda: self._issue_node_certificates(spec, new))]
        for entry in first:
            phases += self._removal_phases(spec, entry.node, entry.from_version)
        phases.append(Phase("create", subject, lambda: self._ensure_nodes(spec, new, target)))
        phases += self._ready_phases(spec, new, target, subject)
        for entry in rest:
            phases += self._removal_phases(spec, entry.node, entry.from_version)
        phases.append(self._health_phase(spec, subject))
        return phases

    def _removal_phases(self, spec: ClusterSpec, node: str, version: str) -> list[Phase]:
        steps = removal_steps(spec, node, version, credentials=self.removes_credentials)
        return [*self._drain_phases(spec, node), *(Phase(name, node, run) for name, run in steps)]

    def _drain_phases(self, spec: ClusterSpec, node: str, *, interruptible: bool = True) -> list[Phase]:
        drain = Phase(
            "drain", node, lambda: act.drain_node(spec, node, self.drain_timeout), interruptible=interruptible
        )
        if not self.journal.legacy:
            return [drain]  # the drain cordons the node before it evicts anything
        return [Phase("cordon", node, lambda: act.cordon_node(spec, node)), drain]

    def _ready_phases(self, spec: ClusterSpec, nodes: list[str], version: str, subject: str) -> list[Phase]:
        if not self.journal.legacy:
            # One wait for both views: the provider's (VM available at the version) and the
            # tenant's (kubelet registered at it) are watched side by side.
            return [
                Phase(
                    "wait-ready",
                    subject,
                    lambda: together(
                        act.wait_nodes_ready(spec, nodes, self.ready_timeout, version),
                        self._wait_registered(spec, nodes, version),
                    ),
                    interruptible=True,
                )
            ]
        return [
            Phase(
                "wait-ready",
                subject,
                lambda: act.wait_nodes_ready(spec, nodes, self.ready_timeout, version),
                interruptible=True,
            ),
            Phase(
                "wait-registered",
                subject,
                lambda: self._wait_registered(spec, nodes, version),
                interruptible=True,
            ),
        ]

    def _health_phase(self, spec: ClusterSpec, subject: str | None) -> Phase:
        """The gate after ``subject``; without one, the preflight check before anything is touched."""
        name = "health" if subject else "preflight"
        return Phase(name, subject or spec.id, lambda: self._health_gate(spec, subject), interruptible=True)

    async def _upgrade(self, spec: ClusterSpec, entries: list[NodeUpgrade], phases: list[Phase]) -> None:
        for entry in entries:
            entry.state = NodeUpgradeState.UPGRADING
        await self._run(phases, entries)
        for entry in entries:
            entry.state, entry.phase = NodeUpgradeState.DONE, ""
        await self._progress()
        if self.controls.pause_requested:
            done = sum(1 for e in self.plan.nodes if e.state is NodeUpgradeState.DONE)
            label = ", ".join(e.label for e in entries)
            message = (
                f"paused by the operator after {label} ({done} of {len(self.plan.nodes)} nodes done); "
                + self._hints(spec.id)
            )
            if not await self._wait_for_operator(message, rollback=False):
                raise _Aborted

    # --- running phases, pausing on failure --------------------------------------------------------
    async def _run(self, phases: list[Phase], entries: list[NodeUpgrade], *, rollback: bool = False) -> None:
        """Run the phases in order; a failure pauses, a resume retries the failed phase and goes on."""
        index = 0
        while index < len(phases):
            phase = phases[index]
            if not rollback and self.controls.aborts:
                raise _Aborted
            for entry in entries:
                entry.phase = phase.name
            await self._progress(phase)
            try:
                if phase.interruptible and not rollback:
                    await self._interruptible(phase.run)
                else:
                    await phase.run()
            except (ActivityError, _GateFailed) as err:
                if isinstance(err, ActivityError) and isinstance(err.cause, CancelledError):
                    raise  # cancelled from outside (a teardown): stop, do not pause
                reason = innermost_message(err)
                where = "rollback" if rollback else "upgrade"
                message = f"{where} paused at {phase.subject} ({phase.name}): {reason}; " + self._hints(
                    self.plan.cluster_id, rollback=rollback
                )
                if not await self._wait_for_operator(message, rollback=rollback):
                    if rollback:
                        raise ApplicationError(
                            f"rollback of {self.plan.cluster_id} stopped by a second abort at {phase.subject} "
                            f"({phase.name}); nodes now: {self._node_versions()}",
                            type=OperationStopped.__name__,
                            non_retryable=True,
                        ) from None
                    raise _Aborted from None
                continue
            index += 1

    async def _interruptible(self, run: Callable[[], Awaitable[Any]]) -> Any:
        """Run a wait; an abort cancels it (its activity stops at its next heartbeat) and aborts."""
        aborts = self.controls.aborts
        work = asyncio.ensure_future(run())
        abort = asyncio.ensure_future(workflow.wait_condition(lambda: self.controls.aborts > aborts))
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
            await work  # cancelled as asked: the rollback takes over
        raise _Aborted

    async def _wait_for_operator(self, message: str, *, rollback: bool) -> bool:
        """Pause until the operator resumes (True) or aborts (False)."""
        resumes, aborts = self.controls.resumes, self.controls.aborts
        workflow.logger.warning("%s", message)
        await self.journal.set_paused(True, message)

        def decided() -> bool:
            aborted = self.controls.aborts > aborts if rollback else self.controls.aborts > 0
            return aborted or self.controls.resumes > resumes

        await workflow.wait_condition(decided)
        aborted = self.controls.aborts > aborts if rollback else self.controls.aborts > 0
        if aborted:
            what = "second abort: stopping the rollback" if rollback else "abort requested: rolling back"
            await self.journal.set_paused(False, what)
            return False
        self.controls.pause_requested = False
        await self.journal.set_paused(False, "resumed by the operator")
        return True

    def _hints(self, cluster_id: str, *, rollback: bool = False) -> str:
        if rollback:
            return (
                f"resume with 'tenantctl upgrade resume {cluster_id}' once it is fixed, "
                f"or stop the rollback with 'tenantctl upgrade abort {cluster_id}'"
            )
        resume, abort = f"tenantctl upgrade resume {cluster_id}", f"tenantctl upgrade abort {cluster_id}"
        return f"resume with '{resume}' or roll back with '{abort}'"

    # --- the steps' activities ------------------------------------------------------------------------
    async def _issue_node_certificates(self, spec: ClusterSpec, nodes: list[str]) -> None:
        """The kubelet key pairs of new nodes, written to their Secrets before the VMs that mount them."""
        names = {f"node-{n}" for n in nodes}
        requests = [r for r in certificate_requests(spec, nodes) if r.name in names]
        issued = await act.ensure_certificates(spec, requests, why=f"new nodes {', '.join(nodes)}")
        for record in issued.records:
            self.certificates[record.name] = record

    async def _ensure_nodes(self, spec: ClusterSpec, nodes: list[str], version: str) -> None:
        if self.journal.legacy:
            for node in nodes:
                await act.ensure_node(spec, node, version)
        else:
            await together(*(act.ensure_node(spec, node, version) for node in nodes))

    async def _wait_registered(self, spec: ClusterSpec, nodes: list[str], version: str) -> None:
        if self.journal.legacy:
            for node in nodes:
                await act.wait_node_registered(spec, node, version, self.ready_timeout)
        else:
            await together(*(act.wait_node_registered(spec, n, version, self.ready_timeout) for n in nodes))

    async def _health_gate(self, spec: ClusterSpec, subject: str | None) -> None:
        expected = [live_name(e) for e in self.plan.nodes]
        health = await act.check_health(spec, expected, self.health_wait)
        if not health.healthy:
            what = f"health gate after {subject}" if subject else "preflight (nothing touched yet)"
            raise _GateFailed(f"{what} failed: {health.describe()}")

    async def _verify(self, spec: ClusterSpec, target: str) -> None:
        """The provider's view: every planned node at the target version and ready, no replaced node left."""
        observed = {n.name: n for n in (await act.list_nodes(spec)).nodes}
        problems = []
        for entry in self.plan.nodes:
            node = observed.get(entry.replacement)
            if node is None:
                problems.append(f"{entry.replacement} does not exist")
            elif reported_version(node.kubernetes_version) != target:
                problems.append(f"{entry.replacement} runs {node.kubernetes_version or 'an unknown version'}")
            elif not node.ready:
                problems.append(f"{entry.replacement} is not ready: {node.detail}")
            if entry.replacement != entry.node and entry.node in observed:
                problems.append(f"{entry.node} was replaced by {entry.replacement} but still exists")
        if problems:
            raise _GateFailed(f"verification of {spec.id} at {target} failed: {'; '.join(problems)}")
        expected = [e.replacement for e in self.plan.nodes]
        health = await act.check_health(spec, expected)
        stale = [n.name for n in health.nodes if n.name in expected and reported_version(n.kubelet_version) != target]
        if not health.healthy or stale:
            problems = [health.describe()] if not health.healthy else []
            problems += [f"{n} registered with another kubelet version" for n in stale]
            raise _GateFailed(f"verification of {spec.id} in the tenant cluster failed: {'; '.join(problems)}")

    # --- rollback ---------------------------------------------------------------------------------------
    async def _rollback(self, spec: ClusterSpec, target: str) -> None:
        touched = [e for e in self.plan.nodes if e.state in (NodeUpgradeState.UPGRADING, NodeUpgradeState.DONE)]
        groups = list(reversed(batches(touched)))
        total, done = len(touched), 0
        for group in groups:
            entries = list(reversed(group))
            for entry in entries:
                entry.state = NodeUpgradeState.ROLLING_BACK
            phases: list[Phase] = []
            for entry in entries:
                phases += self._rollback_phases(spec, entry, target)
            phases.append(self._health_phase(spec, ", ".join(e.node for e in entries)))
            await self._run(phases, entries, rollback=True)
            for entry in entries:
                entry.state, entry.phase = NodeUpgradeState.ROLLED_BACK, ""
            done += len(entries)
            await self.journal.progress(done, total, ", ".join(e.node for e in entries), unit="nodes rolled back")

    def _rollback_phases(self, spec: ClusterSpec, entry: NodeUpgrade, target: str) -> list[Phase]:
        node, version = entry.node, entry.from_version
        if entry.replacement == node:  # in place: the same procedure, to the previous version
            return [
                *self._drain_phases(spec, node, interruptible=False),
                Phase("roll", node, lambda: act.ensure_node(spec, node, version)),
                *self._ready_phases(spec, [node], version, node),
                Phase("uncordon", node, lambda: act.uncordon_node(spec, node)),
            ]
        # Replaced: the original comes back (under its own name, at its own version) before the
        # replacement goes, so the pool never shrinks during a rollback.
        return [
            Phase("certificates", node, lambda: self._issue_node_certificates(spec, [node])),
            Phase("restore", node, lambda: act.ensure_node(spec, node, version)),
            *self._ready_phases(spec, [node], version, node),
            Phase("uncordon", node, lambda: act.uncordon_node(spec, node)),
            *self._removal_phases(spec, entry.replacement, target),
        ]

    # --- reporting --------------------------------------------------------------------------------------
    async def _progress(self, phase: Phase | None = None) -> None:
        done = sum(1 for e in self.plan.nodes if e.state is NodeUpgradeState.DONE)
        rolling_back = any(e.state is NodeUpgradeState.ROLLING_BACK for e in self.plan.nodes)
        if rolling_back and phase is not None:
            touched = [
                e
                for e in self.plan.nodes
                if e.state in (NodeUpgradeState.ROLLING_BACK, NodeUpgradeState.ROLLED_BACK, NodeUpgradeState.DONE)
            ]
            rolled = sum(1 for e in touched if e.state is NodeUpgradeState.ROLLED_BACK)
            await self.journal.progress(rolled, len(touched), phase.subject, unit="nodes rolled back", phase=phase.name)
            return
        await self.journal.progress(
            done,
            len(self.plan.nodes),
            phase.subject if phase else "",
            unit="nodes",
            phase=phase.name if phase else "",
        )

    async def _close_forward_steps(self) -> None:
        """Record how the forward steps ended before the rollback step starts."""
        for name in FORWARD_STEPS:
            current = self.journal.status.step(name)
            if current.state is StepState.FAILED:
                message = f"aborted by the operator: {current.message}".rstrip(": ")
                await self.journal.set_step(name, StepState.FAILED, message)
            elif current.state in (StepState.PENDING, StepState.RUNNING):
                await self.journal.set_step(name, StepState.SKIPPED, "not run: the upgrade was aborted")

    def _plan_summary(self, masters: list[NodeUpgrade], workers: list[NodeUpgrade]) -> str:
        plan = self.plan
        new = [e.replacement for e in workers]
        replaced = f"; {len(workers)} workers replaced by {new[0]}..{new[-1]}" if new else ""
        return f"{plan.from_version} -> {plan.to_version}: {len(masters)} masters in place{replaced}"

    def _node_versions(self) -> str:
        parts = []
        for entry in self.plan.nodes:
            if entry.state in (NodeUpgradeState.ROLLED_BACK, NodeUpgradeState.PENDING):
                parts.append(f"{entry.node}@{entry.from_version}")
            elif entry.state is NodeUpgradeState.DONE:
                parts.append(f"{entry.replacement}@{self.plan.to_version}")
            else:
                parts.append(f"{entry.label} ({entry.state}, at {entry.phase or 'start'})")
        return ", ".join(parts)


def _drift(plan: UpgradePlan, observed: list[str]) -> str:
    """What the provider has that the plan does not expect, and the other way round (reported only)."""
    known = {e.node for e in plan.nodes} | {e.replacement for e in plan.nodes}
    extra = sorted(set(observed) - known)
    missing = sorted({e.node for e in plan.nodes} - set(observed))
    parts = []
    if extra:
        parts.append(f"the provider also has {', '.join(extra)} (left alone)")
    if missing:
        parts.append(f"the provider lacks {', '.join(missing)} (they are brought up at the new version)")
    return "; ".join(parts)
