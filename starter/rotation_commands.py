"""``tenantctl rotate | schedule | kubeconfig``: certificate rotation, its schedule, and user key pairs.

- ``rotate ID [--force] [--ca] [--watch]`` asks the cluster entity for a rotation (it queues behind a
  running operation) and prints what was re-issued and which nodes restarted.
- ``schedule show|pause|resume ID`` works on the Temporal Schedule ``cert-rotation/<id>`` directly
  (the Schedules API), then has the entity re-read it so ``status`` shows the next rotation.
- ``kubeconfig ID --user U --group G`` makes a key on this machine, sends only a CSR, and writes a
  kubeconfig (mode 0600) with the signed certificate: the private key never enters Temporal.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from starter.command import ClusterArg, OutputFormat, OutputOption, out, run_command

if TYPE_CHECKING:
    from temporalio.client import Client

    from config.settings import Settings
    from models.schedules import SyncScheduleResult

DEFAULT_USER_TTL = "8h"
"""The default ``--ttl`` of ``kubeconfig``: models.pki.DEFAULT_USER_CERTIFICATE_TTL, written out so
that ``--help`` needs no model import (a unit test holds the two equal)."""


schedule_app = typer.Typer(
    name="schedule",
    help="Show, pause or resume a cluster's certificate-rotation schedule (cert-rotation/<id>).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


async def _connect(need_worker: bool = True) -> tuple[Settings, Client]:
    from config.settings import load_settings
    from starter import clusters

    settings = load_settings()
    return settings, await clusters.connect(settings, need_worker=need_worker)


# --- rotate -------------------------------------------------------------------------------------------
async def rotate(
    cluster_id: ClusterArg,
    ca: Annotated[
        bool, typer.Option("--ca", help="rotate the cluster's root CA (phased, rolls every node 3x)")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="re-issue every leaf, due or not")] = False,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow the rotation step by step")] = False,
    now: Annotated[
        bool, typer.Option("--now", help="CA rotation: do not wait for the maintenance window (needs --reason)")
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="with --now: why (recorded with the operation)")] = "",
) -> None:
    """Rotate a cluster's certificates now (or its CA with --ca); waits behind a running operation.

    A CA rotation rolls every node three times: it waits for the cluster's maintenance window
    (spec maintenance.window) unless '--now --reason TEXT' says why not (recorded). A leaf rotation
    asked for here runs at once (the schedule's own rotations prefer the window).
    """
    if ca and force:
        raise typer.BadParameter("a CA rotation re-issues every leaf anyway; drop --force", param_hint="--force")
    if now and not ca:
        raise typer.BadParameter(
            "a leaf rotation asked for here runs at once; --now applies to --ca", param_hint="--now"
        )
    from starter.upgrade_commands import maintenance_override

    override = maintenance_override(now, reason)
    from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage
    from temporalio.service import RPCError, RPCStatusCode

    from models.cluster import OperationKind
    from models.naming import entity_workflow_id
    from models.operations import (
        RotateCaRequest,
        RotateCaResult,
        RotateCertificatesRequest,
        RotateCertificatesResult,
    )
    from starter import clusters
    from starter.upgrade_commands import queued_request, until_started
    from starter.watch import operation_running, since_accepted, watch
    from workflows.cluster import ClusterWorkflow

    settings, client = await _connect()
    handle = clusters.entity(client, cluster_id)
    who = clusters.whoami()
    request: Any = (
        RotateCaRequest(requested_by=who, maintenance_override=override)
        if ca
        else RotateCertificatesRequest(force=force, requested_by=who)
    )
    method: Any = ClusterWorkflow.rotate_ca if ca else ClusterWorkflow.rotate_certificates
    what = "CA rotation" if ca else ("forced certificate rotation" if force else "certificate rotation")
    kind = OperationKind.ROTATE_CA if ca else OperationKind.ROTATE_CERTIFICATES
    was_running = await operation_running(client, cluster_id)  # the status only once accepted
    try:
        update = await handle.start_update(
            method, request, id=f"rotate-{uuid.uuid4()}", wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(_cause(exc)) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise clusters.ClusterNotFound(cluster_id) from None
        raise
    out.print(f"{what} of [bold]{cluster_id}[/] accepted; it runs after any operation ahead of it")
    since = await since_accepted(client, cluster_id, kind, was_running=was_running)
    queued = await queued_request(client, cluster_id, update.id) if ca else None
    if queued is not None and queued.window_opens_at is not None:
        out.print(f"  {escape(queued.message)}; it starts then", soft_wrap=True)
    out.print(f"Temporal UI: {escape(settings.workflow_ui_url(entity_workflow_id(cluster_id)))}", soft_wrap=True)
    if watch_:
        if queued is not None and queued.window_opens_at is not None:
            await until_started(client, cluster_id, update.id)
        await watch(client, cluster_id, since=since)
    try:
        result = await update.result()
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(f"{what} of {cluster_id} failed: {_cause(exc)}") from None
    status = await clusters.get_status(client, cluster_id)
    if isinstance(result, RotateCaResult):
        out.print(f"[green]CA rotated:[/] issuer {escape(result.ca_issuer_id)} issues and is the only CA trusted")
        out.print(
            f"  {len(result.certificates)} certificates re-issued; nodes rolled: {', '.join(result.restarted_nodes)}"
        )
        out.print("  user kubeconfigs signed by the old CA no longer work: hand out new ones ('tenantctl kubeconfig')")
    elif isinstance(result, RotateCertificatesResult):
        out.print(f"[green]rotated:[/] {len(result.reissued)} of {len(result.certificates)} certificates re-issued")
        out.print(f"  nodes restarted: {', '.join(result.restarted_nodes) or 'none (nothing was due)'}")
    out.print(f"  earliest expiry: {_at(status.earliest_expiry)}; next scheduled rotation: {_at(status.next_rotation)}")


# --- schedule -----------------------------------------------------------------------------------------
@schedule_app.command("show")
@run_command
async def schedule_show(cluster_id: ClusterArg, output: OutputOption = OutputFormat.TABLE) -> None:
    """Interval, pause state, next runs and recent runs of the rotation schedule."""
    from starter.render import dump
    from starter.schedules import describe_schedule, schedule_table

    _, client = await _connect(need_worker=False)  # the Schedules API alone: no worker involved
    view = await describe_schedule(client, cluster_id)
    if output is OutputFormat.TABLE:
        out.print(schedule_table(view))
    else:
        out.print(dump(view, output), markup=False, highlight=False)


@schedule_app.command("pause")
@run_command
async def schedule_pause(
    cluster_id: ClusterArg,
    reason: Annotated[str, typer.Option("--reason", help="why; kept in the schedule's note")] = "",
) -> None:
    """Stop scheduled rotations (on-demand 'tenantctl rotate' still works). Certificates expire after their TTL!"""
    from starter import clusters

    _, client = await _connect()
    note = f"paused by {clusters.whoami()} with tenantctl" + (f": {reason}" if reason else "")
    await _set_paused(client, cluster_id, paused=True, note=note)
    ttl = (await clusters.get_status(client, cluster_id)).earliest_expiry
    out.print(f"rotation schedule of [bold]{cluster_id}[/] [yellow]paused[/] ({escape(note)})")
    out.print(f"  the earliest certificate expires {_at(ttl)}: resume (or rotate) before then")


@schedule_app.command("resume")
@run_command
async def schedule_resume(cluster_id: ClusterArg) -> None:
    """Resume scheduled rotations."""
    from starter import clusters

    _, client = await _connect()
    synced = await _set_paused(client, cluster_id, paused=False, note=f"resumed by {clusters.whoami()} with tenantctl")
    out.print(f"rotation schedule of [bold]{cluster_id}[/] [green]active[/]; next rotation {_at(synced.next_rotation)}")


async def _set_paused(client: Client, cluster_id: str, paused: bool, note: str) -> SyncScheduleResult:
    from temporalio.service import RPCError, RPCStatusCode

    from models.naming import rotation_schedule_id
    from models.schedules import SyncScheduleRequest
    from starter import clusters
    from starter.schedules import ScheduleMissing
    from workflows.cluster import ClusterWorkflow

    handle = client.get_schedule_handle(rotation_schedule_id(cluster_id))
    try:
        if paused:
            await handle.pause(note=note)
        else:
            await handle.unpause(note=note)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ScheduleMissing(cluster_id) from None
        raise
    # The entity shows the next rotation in its status: have it read the schedule again.
    synced: SyncScheduleResult = await clusters.update(
        client, cluster_id, ClusterWorkflow.sync_schedule, SyncScheduleRequest(requested_by=clusters.whoami())
    )
    return synced


# --- kubeconfig ---------------------------------------------------------------------------------------
async def kubeconfig(
    cluster_id: ClusterArg,
    user: Annotated[str, typer.Option("--user", "-u", help="Kubernetes user name (the certificate's CN)")],
    group: Annotated[list[str], typer.Option("--group", "-g", help="Kubernetes group (O); repeat for more")],
    ttl: Annotated[
        str, typer.Option("--ttl", help="lifetime, e.g. 8h; capped by the cluster's TTL")
    ] = DEFAULT_USER_TTL,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write (default ./<id>-<user>.kubeconfig)")
    ] = None,
) -> None:
    """Write a kubeconfig for a user of the tenant cluster; the key is made here, only a CSR is sent."""
    import yaml
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from models.durations import format_duration, parse_duration
    from models.pki import SignedUserCertificate, SignUserCertificateRequest
    from starter import clusters
    from starter.kubeconfigs import kubeconfig_document, make_key_and_csr, write_private_file
    from workflows.cluster import ClusterWorkflow

    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        raise typer.BadParameter(f"{ttl[:64]!r} {exc}", param_hint="--ttl") from None
    if not isinstance(lifetime, timedelta) or lifetime <= timedelta(0):
        raise typer.BadParameter(f"{ttl[:64]!r} is not a duration such as 8h or 1d", param_hint="--ttl")
    if not user.strip() or not all(g.strip() for g in group):
        raise typer.BadParameter("user and groups must not be empty", param_hint="--user/--group")
    settings, client = await _connect()
    status = await clusters.get_status(client, cluster_id)
    key, csr_pem = make_key_and_csr(user, group)
    signed: SignedUserCertificate = await clusters.update(
        client,
        cluster_id,
        ClusterWorkflow.sign_user_certificate,
        SignUserCertificateRequest(csr_pem=csr_pem, ttl=lifetime, requested_by=clusters.whoami()),
    )
    certificate = x509.load_pem_x509_certificate(signed.certificate_pem.encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise clusters.RequestRefused("the signed certificate does not carry this request's public key; not written")
    server = settings.tenant_api_url(cluster_id, status.spec.base_domain)
    path = output or Path(f"{cluster_id}-{user}.kubeconfig")
    document = kubeconfig_document(cluster_id, server, user, signed, key)
    write_private_file(path, yaml.safe_dump(document, sort_keys=False))
    out.print(
        f"wrote [bold]{escape(str(path))}[/] (mode 0600) for user [bold]{escape(signed.common_name)}[/] "
        f"in groups {escape(', '.join(signed.groups))}"
    )
    out.print(f"  server {escape(server)}; certificate {signed.serial} valid until {_at(signed.not_after)}")
    if signed.ttl_capped:
        out.print(
            f"  [yellow]the TTL was capped to the cluster's certificate TTL "
            f"({format_duration(status.spec.certificates.ttl)})[/]"
        )
    out.print(f"  use it: KUBECONFIG={escape(str(path))} kubectl get nodes")


# --- wiring -------------------------------------------------------------------------------------------
def register(app: typer.Typer) -> None:
    """Add ``rotate``, ``schedule`` and ``kubeconfig`` to the ``tenantctl`` app."""
    app.command("rotate")(run_command(rotate))
    app.add_typer(schedule_app, name="schedule")
    app.command("kubeconfig")(run_command(kubeconfig))


def _at(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _cause(exc: BaseException) -> str:
    message, cause = str(exc), getattr(exc, "cause", None) or exc.__cause__
    while cause is not None:
        message = str(cause) or message
        cause = getattr(cause, "cause", None) or cause.__cause__
    return message
