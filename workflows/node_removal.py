"""The one way a node leaves a cluster, for upgrades (a replaced worker) and scale-downs alike.

After the drain (each runbook drains with its own deadline and pause rules): the VM/instance goes,
then the Node object in the tenant API, then the node's credentials (every leaf issued to it
revoked in Vault, its stored key pair deleted). Each step converges when run again, so a resumed
or retried removal finishes what an earlier one began.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow

from models.spec import ClusterSpec
from workflows import activity_stubs as act

NODE_CREDENTIALS_PATCH = "removed-node-credentials"
"""Runs started before this patch removed only the VM/instance and left the node's certificates."""

Step = tuple[str, Callable[[], Awaitable[Any]]]


def removes_credentials() -> bool:
    """Whether this run removes a gone node's Node object and certificates (new runs do)."""
    return workflow.patched(NODE_CREDENTIALS_PATCH)


def removal_steps(spec: ClusterSpec, node: str, version: str, *, credentials: bool = True) -> list[Step]:
    """The named steps that remove a drained node: its machine, then (new runs) what stays of it."""
    steps: list[Step] = [("remove", lambda: act.ensure_node_absent(spec, node, version))]
    if credentials:  # a gone node's certificates must not outlive it
        steps.append(("forget", lambda: forget_node(spec, node)))
    return steps


async def forget_node(spec: ClusterSpec, node: str) -> None:
    """What stays of a node once its machine is gone: its Node object, and its credentials."""
    await act.remove_tenant_node(spec, node)
    await act.ensure_node_certificates_absent(spec, [node])
