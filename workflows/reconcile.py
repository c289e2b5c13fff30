"""Runbook: check a cluster for drift, and repair what differs (``tenantctl reconcile``, and the
entity's periodic check).

1. Observe: one activity per backend, side by side — the provider's host objects or AWS
   resources, Vault (mount, roles, policy, every stored key pair), the rotation schedule. Each
   lists by label or tag and diffs inside the activity, so the check costs three activities
   whatever the cluster's size, and its history holds three small reports.
2. Repair (skipped when nothing differs, or on a dry run): the very ``ensure_*`` steps the create
   runs, only those a finding calls for, in the create's order: PKI and foundation, then key pairs
   and endpoint, then nodes, then the schedule. They converge what differs and leave the rest
   alone. Extra objects (labelled or tagged, but explained by no spec) are reported, never deleted:
   a person decides. The one exception: a valid certificate of the cluster's mount that no stored
   key pair holds (``vault:certificate/<serial>``, left by an attempt that failed after issuing) is
   revoked after the key pairs are ensured: it is a credential nobody holds.
3. Restart: only nodes that load a certificate the repair re-issued, one at a time, masters
   first, as a rotation does. A check that finds nothing restarts nothing.
"""

from __future__ import annotations

from temporalio import workflow

from models.cluster import OperationKind, OperationStatus, StepState
from models.drift import Backend, DriftItem, DriftKind, DriftReport
from models.pki import CertificateRecord, certificate_requests
from models.reconcile import ReconcileInput, ReconcileResult
from models.spec import ClusterSpec
from workflows import activity_stubs as act
from workflows.journal import OperationJournal
from workflows.names import PROGRESS_QUERY, RECONCILE_WORKFLOW
from workflows.node_rolls import restart_token, roll_nodes
from workflows.rotate_certificates import node_serials, nodes_to_restart
from workflows.side_by_side import together

STEPS = ["observe", "repair", "restart"]

ENDPOINT_KINDS = frozenset(
    {"service", "ingress", "elbv2:load-balancer", "elbv2:target-group", "elbv2:listener", "route53:record"}
)
"""Kinds of provider objects that ``ensure_endpoint`` makes; node objects are named by their node."""
NODE_KINDS = frozenset({"deployment", "ec2:instance"})
CLOUD_CONFIG_PREFIX = "configmap/cloud-config-"
"""A role's cloud-config (KVM): ``ensure_node`` writes it before the node, so every node repairs it."""
UNHELD_CERTIFICATE_PREFIX = "vault:certificate/"
"""``pki.observe``'s extra for a valid leaf no stored key pair holds (the repair revokes it)."""
REVOKE_UNHELD_PATCH = "reconcile-revokes-unheld-certificates"
"""Asked only when the observe reports such a leaf, which no check recorded before it did."""


class RepairPlan:
    """Which of the create's steps the findings call for (pure: the unit of the repair logic)."""

    def __init__(self, reports: list[DriftReport], nodes: dict[str, str]) -> None:
        self.ca = self.roles = self.policy = self.certificates = False
        self.foundation = self.endpoint = self.schedule = False
        self.nodes: list[str] = []
        self.unheld_certificates: list[str] = []
        for report in reports:
            for item in report.items:
                if item.kind is not DriftKind.EXTRA:  # extras are reported, never deleted
                    self._add(report.backend, item, nodes)
                elif report.backend is Backend.VAULT and item.object.startswith(UNHELD_CERTIFICATE_PREFIX):
                    self.unheld_certificates.append(item.object.removeprefix(UNHELD_CERTIFICATE_PREFIX))
        self.nodes = sorted(set(self.nodes), key=list(nodes).index)

    def _add(self, backend: Backend, item: DriftItem, nodes: dict[str, str]) -> None:
        obj = item.object
        kind, _, name = obj.partition("/")
        if backend is Backend.SCHEDULE:
            self.schedule = True
        elif backend is Backend.VAULT:
            if obj.startswith("vault:mount/"):
                self.ca = self.roles = self.policy = self.certificates = True  # a new root: every leaf again
            elif obj.startswith("vault:role/"):
                self.roles = True
            elif obj.startswith("vault:policy/"):
                self.policy = True
            else:  # a stored key pair
                self.certificates = True
        elif obj.startswith(CLOUD_CONFIG_PREFIX):
            self.nodes += list(nodes)
        elif kind in NODE_KINDS:
            node = name.split(" ")[0]
            self.nodes += [node] if node in nodes else []
        elif kind in ENDPOINT_KINDS:
            self.endpoint = True
        else:
            self.foundation = True

    @property
    def empty(self) -> bool:
        return not (self.ca or self.roles or self.policy or self.certificates or self.foundation) and not (
            self.endpoint or self.schedule or self.nodes
        )


@workflow.defn(name=RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    @workflow.init
    def __init__(self, input: ReconcileInput) -> None:
        self.journal = OperationJournal(OperationKind.RECONCILE, STEPS)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.run
    async def run(self, input: ReconcileInput) -> ReconcileResult:
        spec, nodes = input.spec, input.nodes
        async with self.journal.step("observe", f"{spec.provider} resources, Vault, rotation schedule"):
            reports: list[DriftReport] = await together(
                act.observe_provider(spec, nodes), act.observe_pki(spec, nodes), act.observe_schedule(spec, nodes)
            )
        findings = [item for report in reports for item in report.items]
        self.journal.status.step("observe").message = _summary(reports)
        plan = RepairPlan(reports, nodes)
        revoking = bool(plan.unheld_certificates) and not input.dry_run and workflow.patched(REVOKE_UNHELD_PATCH)
        if input.dry_run or (plan.empty and not revoking):
            why = "dry run: nothing changed" if input.dry_run else "nothing to repair"
            self.journal.mark_skipped("repair", why)
            self.journal.mark_skipped("restart", why)
            return ReconcileResult(drift=findings, dry_run=input.dry_run, operation=self.journal.finish())

        repaired: list[str] = []
        issued: list[CertificateRecord] = []
        reissued: list[str] = []
        repairing = [i for i in findings if i.kind is not DriftKind.EXTRA or (revoking and _unheld(i))]
        async with self.journal.step("repair", ", ".join(str(i) for i in repairing)):

            async def pki() -> None:
                if plan.ca:
                    await act.ensure_ca(spec)
                    repaired.append("PKI mount and root CA")
                if plan.roles:
                    await act.ensure_roles(spec)
                    repaired.append("PKI roles")

            async def policy() -> None:
                if plan.policy:
                    await act.ensure_policy(spec)
                    repaired.append("Vault policy")

            async def foundation() -> None:
                if plan.foundation:
                    await act.ensure_foundation(spec)
                    repaired.append(f"{spec.provider} foundation")

            await together(pki(), policy(), foundation())

            async def certificates() -> None:
                if plan.certificates:
                    result = await act.ensure_certificates(
                        spec, certificate_requests(spec, list(nodes)), why="drift repair"
                    )
                    issued.extend(result.records)
                    reissued.extend(result.issued)
                    repaired.append(f"key pairs ({', '.join(result.issued) or 'none re-issued'})")

            async def endpoint() -> None:
                if plan.endpoint:
                    await act.ensure_endpoint(spec)
                    repaired.append("API endpoint")

            await together(certificates(), endpoint())
            if revoking:  # after the key pairs: a leaf stored by this repair is held, and stays valid
                unheld = await act.revoke_unheld_certificates(spec, nodes)
                repaired.append(f"revoked {len(unheld.revoked)} certificates no stored key pair held")
            for node in plan.nodes:  # one at a time: a repair never takes several nodes at once
                await act.ensure_node(spec, node, nodes[node])
                repaired.append(f"node {node}")
            if plan.schedule:
                await act.ensure_rotation_schedule(spec)
                repaired.append("rotation schedule")

        restarted = await self._restart(spec, list(nodes), reissued, issued)
        return ReconcileResult(
            drift=findings,
            repaired=repaired,
            restarted=restarted,
            certificates=issued,
            operation=self.journal.finish(),
        )

    async def _restart(
        self, spec: ClusterSpec, nodes: list[str], reissued: list[str], issued: list[CertificateRecord]
    ) -> list[str]:
        requests = certificate_requests(spec, nodes)
        affected = nodes_to_restart(requests, set(reissued), nodes)
        if not affected:
            await self.journal.set_step("restart", StepState.SKIPPED, "no certificate re-issued: no node restarts")
            return []
        serials = {r.name: r.serial for r in issued}
        async with self.journal.step("restart", f"{len(reissued)} re-issued; {len(affected)} nodes, one at a time"):
            return await roll_nodes(
                spec, self.journal, affected, lambda node: restart_token(node_serials(requests, serials, node))
            )


def _unheld(item: DriftItem) -> bool:
    return item.kind is DriftKind.EXTRA and item.object.startswith(UNHELD_CERTIFICATE_PREFIX)


def _summary(reports: list[DriftReport]) -> str:
    parts = []
    for report in reports:
        if report.in_sync:
            parts.append(f"{report.backend}: in sync")
            continue
        counts = {k: len(report.of(k)) for k in DriftKind if report.of(k)}
        parts.append(f"{report.backend}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return "; ".join(parts)
