"""Rolling a cluster's nodes one at a time so they load new key pairs or a new trust bundle.

Shared by the certificate and the CA rotation. A node is restarted by giving its Deployment (or
instance) a new restart token; the provider rolls it only when the token differs from the live
one, so a token derived from *what the node must load* makes every roll idempotent: a resumed or
repeated rotation re-sends the same tokens and nothing rolls twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from temporalio.exceptions import ApplicationError

from models.errors import MissingPrerequisite
from models.naming import node_order
from models.provider import ResourceChange
from models.spec import ClusterSpec
from workflows import activity_stubs as act
from workflows import policies
from workflows.journal import OperationJournal

TOKEN_LENGTH = 16


def restart_token(*parts: Iterable[str]) -> str:
    """A short, order-independent hash of what a node must load (certificate serials, CA ids).

    Each part is a group (serials, trusted issuers, a phase name); the groups stay apart, so the
    same strings in another group give another token.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update("\x1f".join(sorted(part)).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()[:TOKEN_LENGTH]


async def roll_nodes(
    spec: ClusterSpec, journal: OperationJournal, nodes: list[str], token_of: Callable[[str], str]
) -> list[str]:
    """Restart ``nodes`` one at a time, masters first, each ready before the next; returns them in that order.

    A node whose live token already equals its token is not restarted again (an earlier attempt
    did it), but it is still waited for: it may be rolling right now. A node the provider does not
    have stops the rotation, named: the entity's node list and the provider disagree.
    """
    ordered = sorted(nodes, key=node_order)
    for done, node in enumerate(ordered):
        await journal.progress(done, len(ordered), node)
        result = await act.restart_node(spec, node, spec.kubernetes_version, token_of(node))
        if any(o.change is ResourceChange.ABSENT for o in result.outcomes):
            raise ApplicationError(
                f"node {node} of {spec.id} does not exist in the {spec.provider} provider, so it cannot load "
                "its new certificates; repair the node (or the cluster's node list) and rotate again",
                type=MissingPrerequisite.__name__,
                non_retryable=True,
            )
        await act.wait_nodes_ready(spec, [node], policies.NODE_READY_TIMEOUT)
    await journal.progress(len(ordered), len(ordered))
    return ordered
