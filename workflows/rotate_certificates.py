"""Runbook: rotate a cluster's leaf certificates (every interval, from the schedule, or on demand).

1. Reissue: every leaf that is due (less than ``renew_before`` = ttl - interval/2 of its life left,
   or anything wrong with it) is issued again and written straight to its Secret; the rest is kept.
   ``force`` re-issues everything.
2. Restart: each node that consumes a re-issued leaf is restarted, one at a time, masters first,
   and is ready before the next one goes (etcd keeps quorum, the API stays up). The restart token
   is a hash of the serials the node must load, so a resumed rotation never rolls a node twice.

A rotation that finds nothing due restarts nothing: rotating must never churn the control plane
(Kamaji #679, where a threshold bug rolled it every few minutes).
"""

from __future__ import annotations

from temporalio import workflow

from models.cluster import OperationKind, OperationStatus, StepState
from models.durations import format_duration
from models.operations import RotateCertificatesInput, RotateCertificatesResult
from models.pki import CertificateRequest, certificate_requests
from workflows import activity_stubs as act
from workflows.journal import OperationJournal
from workflows.names import PROGRESS_QUERY, ROTATE_CERTIFICATES_WORKFLOW
from workflows.node_rolls import restart_token, roll_nodes

STEPS = ["reissue", "restart"]
REVOKE_SUPERSEDED_PATCH = "rotation-revokes-superseded-leaves"
"""Rotations from before it left the replaced leaves valid until their TTL; they replay that way."""


def nodes_to_restart(requests: list[CertificateRequest], reissued: set[str], nodes: list[str]) -> list[str]:
    """The nodes that load at least one re-issued certificate (and exist)."""
    affected = {consumer for r in requests if r.name in reissued for consumer in r.consumers}
    return [n for n in nodes if n in affected]


def node_serials(requests: list[CertificateRequest], serials: dict[str, str], node: str) -> list[str]:
    """Serials of every certificate ``node`` loads: the content its restart token stands for."""
    return [serials[r.name] for r in requests if node in r.consumers and r.name in serials]


@workflow.defn(name=ROTATE_CERTIFICATES_WORKFLOW)
class RotateCertificatesWorkflow:
    @workflow.init
    def __init__(self, input: RotateCertificatesInput) -> None:
        self.journal = OperationJournal(OperationKind.ROTATE_CERTIFICATES, STEPS)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.run
    async def run(self, input: RotateCertificatesInput) -> RotateCertificatesResult:
        spec = input.spec
        requests = certificate_requests(spec, input.nodes)
        renew_before = format_duration(spec.certificates.renew_before)
        what = "every certificate (forced)" if input.force else f"certificates with less than {renew_before} left"

        async with self.journal.step("reissue", what):
            issued = await act.ensure_certificates(spec, requests, force=input.force, why="rotation")
        serials = {r.name: r.serial for r in issued.records}
        affected = nodes_to_restart(requests, set(issued.issued), input.nodes)

        restarted: list[str] = []
        if not affected:
            message = (
                f"{len(issued.issued)} re-issued, loaded by no node: no node restarts"
                if issued.issued
                else f"nothing re-issued ({len(issued.kept)} kept): no node restarts"
            )
            await self.journal.set_step("restart", StepState.SKIPPED, message)
        else:
            async with self.journal.step(
                "restart", f"{len(issued.issued)} re-issued; {len(affected)} nodes, one at a time"
            ):
                restarted = await roll_nodes(
                    spec, self.journal, affected, lambda node: restart_token(node_serials(requests, serials, node))
                )
        if issued.issued and workflow.patched(REVOKE_SUPERSEDED_PATCH):
            # The leaves the re-issued ones replace are held by no stored key pair any more, and every
            # node that loaded one now runs its successor: revoke them at once, instead of leaving
            # them valid until their TTL (or for the next drift check to find as unheld).
            async with self.journal.step("revoke", "the leaves the re-issued ones replace"):
                revoked = await act.revoke_unheld_certificates(spec, {n: spec.kubernetes_version for n in input.nodes})
            self.journal.status.step("revoke").message = f"{len(revoked.revoked)} superseded leaves revoked"
        return RotateCertificatesResult(
            certificates=issued.records,
            reissued=issued.issued,
            restarted_nodes=restarted,
            operation=self.journal.finish(),
        )
