"""Runbook: replace a cluster's root CA without a moment in which a component distrusts a peer.

Kubernetes components read their CA file at start, so trust has to reach every consumer *before*
the first leaf from the new CA exists, and the old CA may only leave once no leaf from it is left
(Gardener #15301: nodes that never got the new bundle broke). The phases:

1. new-ca          a second root in the cluster's mount (``root-N+1``), not the default yet
2. publish-bundle  trust bundle = old + new CA, written to the ``ca-bundle`` Secret and to the
                   ``ca.crt`` of every key-pair Secret
3. roll-trust      every node restarts (one at a time) and so trusts both CAs
4. reissue         the new CA becomes the default; every leaf not from it is re-issued (with the
                   dual bundle as its ``ca.crt``)
5. roll-leaves     every node restarts and loads its new leaves
6. drop-old-ca     bundle = new CA only (the activity refuses if any stored leaf would not verify)
7. roll-final      every node restarts and forgets the old CA

The old issuer stays in Vault, no longer default and no longer trusted by any consumer: its leaves
have all been replaced and expire within one TTL (Kubernetes reads no CRL, so revoking them would
change nothing for the cluster); teardown deletes it with the mount.

Every phase converges when run again, so an interrupted CA rotation (a worker lost, a node that did
not come back in time) is finished by asking for it again: ``new-ca`` finds the issuer by name and
tells how far the earlier attempt got (the new CA already default: trust phases done; the bundle
already without the old CA: leaves rolled too), those phases are skipped; ``reissue`` only
re-issues leaves not yet from the new CA (rather than forcing all, which would not be
idempotent); and a roll's restart token is a hash of what the node must load, so a node that
already loaded it is not restarted again.
"""

from __future__ import annotations

from temporalio import workflow

from models.cluster import OperationKind, OperationStatus, StepState
from models.operations import RotateCaInput, RotateCaResult
from models.pki import certificate_requests
from workflows import activity_stubs as act
from workflows.journal import OperationJournal
from workflows.names import PROGRESS_QUERY, ROTATE_CA_WORKFLOW
from workflows.node_rolls import restart_token, roll_nodes
from workflows.rotate_certificates import node_serials

STEPS = ["new-ca", "publish-bundle", "roll-trust", "reissue", "roll-leaves", "drop-old-ca", "roll-final"]


@workflow.defn(name=ROTATE_CA_WORKFLOW)
class RotateCaWorkflow:
    @workflow.init
    def __init__(self, input: RotateCaInput) -> None:
        self.journal = OperationJournal(OperationKind.ROTATE_CA, STEPS)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> OperationStatus:
        return self.journal.status

    @workflow.run
    async def run(self, input: RotateCaInput) -> RotateCaResult:
        spec, nodes, step = input.spec, input.nodes, self.journal.step
        requests = certificate_requests(spec, nodes)

        async with step("new-ca", f"a second root CA next to {input.old_issuer_id or 'the current one'}"):
            new = await act.ensure_next_issuer(spec, input.old_issuer_id)
        old_id, new_id = new.previous_issuer_id, new.issuer_id
        both = [old_id, new_id]
        # How far an earlier attempt got, from what it left behind: the new CA only becomes the
        # default once every node trusts it, and the bundle only loses the old CA once every node
        # runs leaves from the new one. Those phases are not repeated (no needless rolls).
        trusted_everywhere = new.is_default
        old_ca_dropped = new.is_default and new.published_trust == [new_id]

        if trusted_everywhere:
            await self._skip("publish-bundle", f"{new.name} is already the default: every node trusts it")
            await self._skip("roll-trust", f"{new.name} is already the default: every node trusts it")
        else:
            async with step("publish-bundle", f"trust {new.name} next to the old CA everywhere"):
                await act.publish_trust_bundle(spec, both)
            async with step("roll-trust", "every node loads the bundle of both CAs"):
                await roll_nodes(spec, self.journal, nodes, lambda _: restart_token(["trust"], both))

        async with step("reissue", f"{new.name} becomes the default; every leaf re-issued from it"):
            await act.set_default_issuer(spec, new_id)
            issued = await act.ensure_certificates(spec, requests, why=f"from the new CA {new.name}")
        serials = {r.name: r.serial for r in issued.records}

        if old_ca_dropped:
            await self._skip("roll-leaves", "the old CA is already dropped: every node runs leaves from the new one")
        else:
            async with step("roll-leaves", "every node loads its leaves from the new CA"):
                await roll_nodes(
                    spec,
                    self.journal,
                    nodes,
                    lambda n: restart_token(["leaves"], node_serials(requests, serials, n), both),
                )

        async with step("drop-old-ca", f"trust {new.name} only"):
            await act.publish_trust_bundle(spec, [new_id])

        async with step("roll-final", "every node forgets the old CA"):
            restarted = await roll_nodes(spec, self.journal, nodes, lambda _: restart_token(["final"], [new_id]))

        return RotateCaResult(
            ca_issuer_id=new_id,
            certificates=issued.records,
            restarted_nodes=restarted,
            operation=self.journal.finish(),
        )

    async def _skip(self, name: str, message: str) -> None:
        await self.journal.set_step(name, StepState.SKIPPED, message)
