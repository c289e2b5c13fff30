"""``tenantctl upgrade``: a rolling Kubernetes upgrade of a cluster, and pause/resume/abort of it.

- ``upgrade ID --version X.Y.Z [--watch]`` asks the cluster entity for the upgrade and returns once
  the entity accepted it (it queues behind a running operation). A version the policy refuses
  (a skipped minor, a downgrade, outside the supported range) is an error and nothing changes.
  With ``--watch`` it follows the upgrade node by node and stops when it ends or pauses.
- ``upgrade pause|resume|abort ID`` controls the running upgrade: pause stops after the current
  node, resume carries on from the step that failed, abort rolls the upgraded nodes back in
  reverse order.

``tenantctl status ID`` shows the progress (nodes done/total, the current node and its step) and,
when paused, why.

Maintenance windows: an upgrade waits for the cluster's window (spec ``maintenance.window``) like
one from ``apply`` or a fleet rollout does, because the window is what the customer was promised;
a manual upgrade is no exception. ``--now --reason TEXT`` runs this one at once, with who and why
on the operation's record. ``upgrade abort ID`` also cancels an upgrade that still waits (for its
window, or behind another operation).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from starter.command import err, out, run_command

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowUpdateHandle

    from models.cluster import ClusterStatus, QueuedOperation
    from models.maintenance import MaintenanceOverride
    from models.operations import UpgradeAction, UpgradeRequest

EXIT_FAILED = 1
EXIT_PAUSED = 4
"""``--watch`` ends with this code when the upgrade paused: it waits for an operator."""
REFUSAL_CHECK_SECONDS = 0.5
"""A refusal by the entity's validator is known as soon as the request returns; this bounds the look."""
ACTION_NAMES = ("pause", "resume", "abort")
QUEUED_POLL_SECONDS = 1.0
"""How often ``--watch`` looks whether an upgrade waiting for its window has started."""


def _action(name: str) -> UpgradeAction | None:
    from models.operations import UpgradeAction

    return next((a for a in UpgradeAction if a.value == name), None)


def upgrade_paused(status: ClusterStatus) -> bool:
    from models.cluster import OperationKind, OperationState

    op = status.current
    return op is not None and op.kind is OperationKind.UPGRADE and op.state is OperationState.PAUSED


async def upgrade(
    first: Annotated[str, typer.Argument(metavar="ID | pause | resume | abort", help="cluster id, or an action")],
    second: Annotated[str | None, typer.Argument(metavar="[ID]", help="cluster id, after an action")] = None,
    version: Annotated[str | None, typer.Option("--version", help="target Kubernetes version, e.g. 1.33.0")] = None,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow the upgrade until it ends or pauses")] = False,
    node_ready_timeout: Annotated[
        str | None, typer.Option("--node-ready-timeout", help="pause when a node is not ready within this, e.g. 10m")
    ] = None,
    drain_timeout: Annotated[
        str | None, typer.Option("--drain-timeout", help="pause when a node's drain takes longer, e.g. 10m")
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="why (pause, resume, abort, or --now); kept in the history")
    ] = "",
    now: Annotated[
        bool, typer.Option("--now", help="do not wait for the maintenance window (needs --reason; recorded)")
    ] = False,
) -> None:
    """Upgrade a cluster's Kubernetes version node by node: 'upgrade ID --version X.Y.Z [--watch]'.

    Control a running upgrade with 'upgrade pause ID', 'upgrade resume ID' or 'upgrade abort ID'
    (abort rolls the upgraded nodes back to the previous version, in reverse order; an upgrade still
    waiting for its window or behind another operation is cancelled and never starts).
    Patch versions upgrade freely; minors one at a time; no downgrades.

    A cluster with a maintenance window (spec maintenance.window) is upgraded in it: a manual upgrade
    waits for it too, as apply and fleet rollouts do (the window is the customer's promise).
    '--now --reason TEXT' runs this one at once and records who and why.
    """
    if second is not None:
        action = _action(first)
        if action is None:
            raise typer.BadParameter(
                f"{first[:64]!r} is not an action: use 'upgrade ID --version X.Y.Z' or 'upgrade pause|resume|abort ID'"
            )
        if version or node_ready_timeout or drain_timeout or now:
            raise typer.BadParameter(f"'upgrade {first}' takes no --version, --now or timeouts")
        await _control(_cluster_id(second), action, reason, watch_)
        return
    _cluster_id(first)
    if version is None:
        hint = f" (to {first} the running upgrade: 'tenantctl upgrade {first} ID')" if first in ACTION_NAMES else ""
        raise typer.BadParameter(f"--version is required to upgrade cluster '{first}'{hint}", param_hint="--version")
    override = maintenance_override(now, reason)
    await _start(first, _version(version), watch_, _duration(node_ready_timeout, "--node-ready-timeout"),
                 _duration(drain_timeout, "--drain-timeout"), override)  # fmt: skip


def maintenance_override(now: bool, reason: str) -> MaintenanceOverride | None:
    """``--now --reason TEXT`` as the record the entity keeps; refused unless both are given."""
    from starter import clusters

    if now and not reason.strip():
        raise typer.BadParameter("--now needs --reason TEXT: running outside the maintenance window is recorded")
    if reason.strip() and not now:
        raise typer.BadParameter("--reason goes with --now when starting an operation (it records why)")
    if not now:
        return None
    from pydantic import ValidationError

    from models.maintenance import MaintenanceOverride

    try:
        return MaintenanceOverride(reason=reason, by=clusters.whoami())
    except ValidationError as exc:
        problem = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors(include_url=False))
        raise typer.BadParameter(problem, param_hint="--reason") from None


async def _start(
    cluster_id: str,
    version: str,
    watch_: bool,
    node_ready_timeout: timedelta | None,
    drain_timeout: timedelta | None,
    override: MaintenanceOverride | None = None,
) -> None:
    from config.settings import load_settings
    from models.cluster import OperationKind
    from models.naming import entity_workflow_id
    from models.operations import UpgradeRequest
    from starter import clusters

    settings = load_settings()
    client = await clusters.connect(settings)
    before = await clusters.get_status(client, cluster_id)
    if before.current is not None and before.current.kind is OperationKind.UPGRADE:
        # The entity would queue it and refuse it later, when its turn came: say no now, and say why.
        raise clusters.RequestRefused(
            f"an upgrade of {cluster_id} is already {before.current.state.lower()} ({before.current.workflow_id}); "
            f"wait for it to end, or stop it with 'tenantctl upgrade abort {cluster_id}'; nothing was changed"
        )
    waiting = next((q for q in before.queued if q.kind is OperationKind.UPGRADE), None)
    if waiting is not None:
        raise clusters.RequestRefused(
            f"an upgrade of {cluster_id} {waiting.detail} is already queued ({waiting.message}); "
            f"cancel it with 'tenantctl upgrade abort {cluster_id}' first; nothing was changed"
        )
    request = UpgradeRequest(
        version=version,
        requested_by=clusters.whoami(),
        node_ready_timeout=node_ready_timeout,
        drain_timeout=drain_timeout,
        maintenance_override=override,
    )
    update = await start_upgrade_update(client, cluster_id, request)
    queued = await queued_request(client, cluster_id, update.id)
    if queued is not None and queued.window_opens_at is not None:
        ahead = f"{queued.message}; it starts then ('tenantctl upgrade abort {cluster_id}' cancels it)"
    elif before.current is not None:
        ahead = f"queued behind the running {before.current.kind}; the version is checked again when its turn comes"
    else:
        ahead = "starting" + (f" {override.describe()}" if override else "")
    out.print(
        f"upgrade of [bold]{cluster_id}[/] from {before.kubernetes_version} to [bold]{version}[/] accepted: "
        f"{escape(ahead)}"
    )
    out.print(f"Temporal UI: {escape(settings.workflow_ui_url(entity_workflow_id(cluster_id)))}", soft_wrap=True)
    if not watch_:
        out.print(f"follow it with 'tenantctl watch {cluster_id}'; progress in 'tenantctl status {cluster_id}'")
        return
    since = before.operations_started - (1 if before.current else 0)
    if queued is not None and queued.window_opens_at is not None:
        await until_started(client, cluster_id, update.id)
    await _follow(client, cluster_id, since, update)


async def queued_request(client: Client, cluster_id: str, request_id: str) -> QueuedOperation | None:
    """The entity's record of an accepted request that has not started (None once it started)."""
    from starter import clusters

    status = await clusters.get_status(client, cluster_id)
    return next((q for q in status.queued if q.request_id == request_id), None)


async def until_started(client: Client, cluster_id: str, request_id: str) -> None:
    """Wait while the request waits for its maintenance window (a person may Ctrl-C: it stays queued)."""
    while await queued_request(client, cluster_id, request_id) is not None:
        await asyncio.sleep(QUEUED_POLL_SECONDS)


async def _control(cluster_id: str, action: UpgradeAction, reason: str, watch_: bool) -> None:
    from config.settings import load_settings
    from models.operations import UpgradeAction, UpgradeControl, UpgradeControlResult
    from starter import clusters
    from workflows.cluster import ClusterWorkflow

    settings = load_settings()
    client = await clusters.connect(settings)
    result: UpgradeControlResult = await clusters.update(
        client,
        cluster_id,
        ClusterWorkflow.control_upgrade,
        UpgradeControl(action=action, reason=reason or f"by {clusters.whoami()} with tenantctl"),
    )
    said = {
        UpgradeAction.PAUSE: "pause requested: the upgrade stops after the node it is working on",
        UpgradeAction.RESUME: "resumed: the step that stopped it runs again, then the rest",
        UpgradeAction.ABORT: "abort requested: every node upgraded so far goes back to the previous version, "
        "last first",
    }[action]
    if result.queued:
        said = "abort requested: the upgrade had not started and never will; nothing changed"
    out.print(f"{cluster_id}: {said}" + (f" ({escape(result.workflow_id)})" if result.workflow_id else ""))
    if watch_ and not result.queued:
        await _follow(client, cluster_id, None, None, aborting=action is UpgradeAction.ABORT)


async def _follow(
    client: Client,
    cluster_id: str,
    since: int | None,
    update: WorkflowUpdateHandle[Any] | None,
    *,
    aborting: bool = False,
) -> None:
    """Watch until the upgrade ends (exit 0 when it did what was asked) or pauses (exit 4)."""
    from temporalio.client import WorkflowUpdateFailedError

    from models.cluster import OperationKind, OperationState
    from models.errors import innermost_message
    from models.operations import UpgradeOutcome, UpgradeResult
    from starter.watch import watch

    status = await watch(client, cluster_id, since=since, until=upgrade_paused)
    if upgrade_paused(status):
        assert status.current is not None
        err.print(f"[yellow]paused:[/] {escape(status.current.message)}")
        raise typer.Exit(EXIT_PAUSED)
    if update is None:  # following a control: the status tells how it ended
        last = status.recent[0] if status.recent else None
        if last is not None and last.kind is OperationKind.UPGRADE:
            out.print(f"upgrade {last.state}; {cluster_id} runs Kubernetes {status.kubernetes_version}")
            wanted = OperationState.CANCELLED if aborting else OperationState.SUCCEEDED  # an abort rolled back
            if last.state is not wanted:
                raise typer.Exit(EXIT_FAILED)
        return
    try:
        result: UpgradeResult = await update.result()
    except WorkflowUpdateFailedError as exc:
        err.print(f"[red]upgrade failed:[/] {escape(innermost_message(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    if result.outcome is UpgradeOutcome.ABORTED:
        err.print(f"[yellow]aborted:[/] every node rolled back to Kubernetes {result.kubernetes_version}")
        raise typer.Exit(EXIT_FAILED)
    out.print(
        f"[green]upgraded[/] {cluster_id} to Kubernetes {result.kubernetes_version}: "
        f"{', '.join(n.name for n in result.nodes)}"
    )


async def start_upgrade_update(client: Client, cluster_id: str, request: UpgradeRequest) -> WorkflowUpdateHandle[Any]:
    from temporalio.client import (
        WorkflowUpdateFailedError,
        WorkflowUpdateRPCTimeoutOrCancelledError,
        WorkflowUpdateStage,
    )
    from temporalio.service import RPCError, RPCStatusCode

    from models.errors import innermost_message
    from starter import clusters
    from workflows.cluster import ClusterWorkflow

    try:
        # A known id, so that the entity's queue (``status.queued``) tells which request is ours.
        update: WorkflowUpdateHandle[Any] = await clusters.entity(client, cluster_id).start_update(
            ClusterWorkflow.upgrade,
            request,
            id=f"upgrade-{uuid.uuid4()}",
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(innermost_message(exc)) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise clusters.ClusterNotFound(cluster_id) from None
        raise
    # A validator's refusal comes back with the request as the update's outcome; an accepted
    # upgrade has none yet, so this look ends by its timeout.
    try:
        await asyncio.wait_for(update.result(), timeout=REFUSAL_CHECK_SECONDS)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        pass  # still running: accepted (the SDK turns the cancelled poll into its own error)
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(f"{innermost_message(exc)}; nothing was changed") from None
    return update


def _cluster_id(value: str) -> str:
    from models.spec import cluster_id_problem

    problem = cluster_id_problem(value)
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="ID")
    return value


def _version(text: str) -> str:
    from models.versions import SemVer

    try:
        return str(SemVer.parse(text))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--version") from None


def _duration(text: str | None, option: str) -> timedelta | None:
    from models.durations import parse_duration

    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text[:64]!r} {exc}", param_hint=option) from None
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise typer.BadParameter(f"{text[:64]!r} is not a duration such as 90s, 10m or 1h", param_hint=option)
    return value


def register(app: typer.Typer) -> None:
    """Add ``upgrade`` to the ``tenantctl`` app."""
    app.command("upgrade")(run_command(upgrade))
