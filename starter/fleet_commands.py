"""``tenantctl fleet``: upgrade or rotate many clusters in one durable rollout.

- ``fleet upgrade --version X.Y.Z`` / ``fleet rotate [--ca]`` select clusters by search attributes
  (``--where`` takes the Temporal UI's query language; ``--owner`` and ``--ids`` narrow it), print
  the plan (canaries first, skipped clusters with the reason) and start one ``FleetRollout``
  workflow; ``--dry-run`` prints the plan and starts nothing; ``--watch`` follows it to the end.
- ``fleet approve|reject ID --by NAME [--comment ...]`` decide after the canaries.
- ``fleet status ID [-o json|yaml]``, ``fleet list``, ``fleet pause|resume|abort ID``.

The work is in ``starter/fleet_rollouts.py``, imported inside each command: ``tenantctl --help`` must not
pay for the Temporal client and the models.
"""

from __future__ import annotations

from typing import Annotated

import typer

from starter.command import OutputFormat, OutputOption, run_command

DEFAULT_APPROVAL_TIMEOUT_TEXT = "1d"
"""``models.fleet.DEFAULT_APPROVAL_TIMEOUT`` as the option's default (a unit test holds the two equal)."""

fleet_app = typer.Typer(no_args_is_help=True, help="Roll an upgrade or a rotation out over many clusters.")

RolloutId = Annotated[str, typer.Argument(help="rollout id, e.g. fleet/upgrade-20261201-211500-ab12")]
Where = Annotated[str | None, typer.Option("--where", help="search-attribute query, e.g. 'ClusterProvider = \"kvm\"'")]
Owner = Annotated[str | None, typer.Option("--owner", help="only clusters of this owner")]
Ids = Annotated[str | None, typer.Option("--ids", help="only these clusters: a,b,c")]
Parallel = Annotated[int, typer.Option("--parallel", help="clusters in flight at most", min=1)]
MaxFailures = Annotated[int, typer.Option("--max-failures", help="stop starting clusters after this many fail", min=1)]
Canary = Annotated[int, typer.Option("--canary", help="clusters that go first", min=0)]
Approve = Annotated[bool, typer.Option("--approve-after-canary", help="wait for 'fleet approve' after the canaries")]
ApprovalTimeout = Annotated[
    str, typer.Option("--approval-timeout", help="abort when no approval comes within this, e.g. 24h")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="print the plan, start nothing")]
Watch = Annotated[bool, typer.Option("--watch", "-w", help="follow the rollout until it ends")]
Now = Annotated[bool, typer.Option("--now", help="ignore maintenance windows for this rollout (needs --reason)")]
Reason = Annotated[str, typer.Option("--reason", help="why; recorded with the rollout")]
By = Annotated[str, typer.Option("--by", help="who decides (recorded)")]
CommentOption = Annotated[str, typer.Option("--comment", help="recorded with the decision")]


@fleet_app.command("upgrade")
@run_command
async def upgrade(
    version: Annotated[str, typer.Option("--version", help="target Kubernetes version, e.g. 1.33.0")],
    where: Where = None,
    owner: Owner = None,
    ids: Ids = None,
    parallel: Parallel = 1,
    max_failures: MaxFailures = 1,
    canary: Canary = 0,
    approve_after_canary: Approve = False,
    approval_timeout: ApprovalTimeout = DEFAULT_APPROVAL_TIMEOUT_TEXT,
    dry_run: DryRun = False,
    watch: Watch = False,
    now: Now = False,
    reason: Reason = "",
    node_ready_timeout: Annotated[
        str | None,
        typer.Option("--node-ready-timeout", help="a node not ready within this pauses its cluster's upgrade"),
    ] = None,
) -> None:
    """Upgrade the selected clusters to a Kubernetes version, a few at a time.

    An upgrade that pauses (a node not ready, a blocked drain) counts as a failure of the rollout and
    stays paused in its cluster for 'tenantctl upgrade resume|abort ID'.
    """
    from models.fleet import FleetOperation
    from starter import fleet_rollouts as fleet

    await fleet.rollout(
        FleetOperation.UPGRADE, version=version, force=False, where=where, owner=owner, ids=ids,
        parallel=parallel,
        max_failures=max_failures, canary=canary, approve_after_canary=approve_after_canary,
        approval_timeout=approval_timeout, dry_run=dry_run, watch=watch, now=now, reason=reason,
        node_ready_timeout=node_ready_timeout,
    )  # fmt: skip


@fleet_app.command("rotate")
@run_command
async def rotate(
    ca: Annotated[bool, typer.Option("--ca", help="replace each cluster's root CA (phase by phase)")] = False,
    force: Annotated[bool, typer.Option("--force", help="re-issue every leaf, due or not")] = False,
    where: Where = None,
    owner: Owner = None,
    ids: Ids = None,
    parallel: Parallel = 1,
    max_failures: MaxFailures = 1,
    canary: Canary = 0,
    approve_after_canary: Approve = False,
    approval_timeout: ApprovalTimeout = DEFAULT_APPROVAL_TIMEOUT_TEXT,
    dry_run: DryRun = False,
    watch: Watch = False,
    now: Now = False,
    reason: Reason = "",
) -> None:
    """Rotate the selected clusters' certificates (or, with --ca, their root CAs)."""
    if ca and force:
        raise typer.BadParameter("--force applies to leaf rotations; a CA rotation re-issues everything anyway")
    from models.fleet import FleetOperation
    from starter import fleet_rollouts as fleet

    await fleet.rollout(
        FleetOperation.ROTATE_CA if ca else FleetOperation.ROTATE_CERTIFICATES, version=None, force=force,
        where=where, owner=owner, ids=ids, parallel=parallel, max_failures=max_failures, canary=canary,
        approve_after_canary=approve_after_canary, approval_timeout=approval_timeout, dry_run=dry_run, watch=watch,
        now=now, reason=reason,
    )  # fmt: skip


# --- a running rollout ---------------------------------------------------------------------------------
@fleet_app.command("approve")
@run_command
async def approve(rollout_id: RolloutId, by: By, comment: CommentOption = "") -> None:
    """Let a rollout go on past its canaries (recorded: who, when, comment)."""
    from starter import fleet_rollouts as fleet

    await fleet.approve(rollout_id, by, comment)


@fleet_app.command("reject")
@run_command
async def reject(rollout_id: RolloutId, by: By, comment: CommentOption = "") -> None:
    """Stop a rollout after its canaries: no other cluster starts."""
    from starter import fleet_rollouts as fleet

    await fleet.reject(rollout_id, by, comment)


@fleet_app.command("pause")
@run_command
async def pause(rollout_id: RolloutId, reason: Reason = "") -> None:
    """Start no new cluster until resumed (clusters in flight go on)."""
    from models.fleet import FleetAction
    from starter import fleet_rollouts as fleet

    await fleet.control(rollout_id, FleetAction.PAUSE, reason)


@fleet_app.command("resume")
@run_command
async def resume(rollout_id: RolloutId, reason: Reason = "") -> None:
    """Resume a paused rollout."""
    from models.fleet import FleetAction
    from starter import fleet_rollouts as fleet

    await fleet.control(rollout_id, FleetAction.RESUME, reason)


@fleet_app.command("abort")
@run_command
async def abort(rollout_id: RolloutId, reason: Reason = "") -> None:
    """Stop a rollout: no new cluster starts, in-flight upgrades are asked to roll back."""
    from models.fleet import FleetAction
    from starter import fleet_rollouts as fleet

    await fleet.control(rollout_id, FleetAction.ABORT, reason)


@fleet_app.command("status")
@run_command
async def status(rollout_id: RolloutId, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show a rollout: its state, every cluster's state and why, approvals and controls."""
    from starter import fleet_rollouts as fleet

    await fleet.show_status(rollout_id, output)


@fleet_app.command("list")
@run_command
async def list_(
    output: OutputOption = OutputFormat.TABLE,
    all_: Annotated[bool, typer.Option("--all", "-a", help="include finished rollouts")] = False,
) -> None:
    """List fleet rollouts (from search attributes)."""
    from starter import fleet_rollouts as fleet

    await fleet.list_rollouts(output, all_)


def register(app: typer.Typer) -> None:
    """Add ``fleet`` to the ``tenantctl`` app."""
    app.add_typer(fleet_app, name="fleet", help="Roll an upgrade or a rotation out over many clusters.")
