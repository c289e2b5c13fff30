"""``tenantctl rotate | schedule | kubeconfig``: certificate rotation, its schedule, and user key pairs.

- ``rotate ID [--force] [--ca] [--watch]`` asks the cluster entity for a rotation (it queues behind a
  running operation) and prints what was re-issued and which nodes restarted.
- ``schedule show|pause|resume ID`` works on the Temporal Schedule ``cert-rotation/<id>`` directly
  (the Schedules API), then has the entity re-read it so ``status`` shows the next rotation.
- ``kubeconfig ID --user U --group G`` makes a key on this machine, sends only a CSR, and writes a
  kubeconfig (mode 0600) with the signed certificate: the private key never enters Temporal.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, Field
from rich.table import Table
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings, load_settings
from models.durations import Duration, format_duration, parse_duration
from models.naming import entity_workflow_id, rotation_schedule_id
from models.operations import RotateCaRequest, RotateCaResult, RotateCertificatesRequest, RotateCertificatesResult
from models.pki import DEFAULT_USER_CERTIFICATE_TTL, SignedUserCertificate, SignUserCertificateRequest
from models.schedules import SyncScheduleRequest, SyncScheduleResult
from starter import clusters
from starter.command import ClusterArg, OutputOption, out, run_command
from starter.render import OutputFormat, dump
from starter.watch import watch
from worker.clients import connect_temporal
from workflows.cluster import ClusterWorkflow

T = TypeVar("T")
RECENT_RUNS_SHOWN = 5
NEXT_RUNS_SHOWN = 3


schedule_app = typer.Typer(
    name="schedule",
    help="Show, pause or resume a cluster's certificate-rotation schedule (cert-rotation/<id>).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class ScheduleMissing(clusters.UserError, LookupError):
    def __init__(self, cluster_id: str) -> None:
        super().__init__(
            f"cluster {cluster_id} has no rotation schedule ({rotation_schedule_id(cluster_id)}); "
            "it is made once the cluster is Ready, and removed when it is deleted"
        )


async def _connect() -> tuple[Settings, Client]:
    settings = load_settings()
    return settings, await connect_temporal(settings)


# --- rotate -------------------------------------------------------------------------------------------
async def rotate(
    cluster_id: ClusterArg,
    ca: Annotated[
        bool, typer.Option("--ca", help="rotate the cluster's root CA (phased, rolls every node 3x)")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="re-issue every leaf, due or not")] = False,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow the rotation step by step")] = False,
) -> None:
    """Rotate a cluster's certificates now (or its CA with --ca); waits behind a running operation."""
    if ca and force:
        raise typer.BadParameter("a CA rotation re-issues every leaf anyway; drop --force", param_hint="--force")
    settings, client = await _connect()
    handle = clusters.entity(client, cluster_id)
    who = clusters.whoami()
    request: Any = RotateCaRequest(requested_by=who) if ca else RotateCertificatesRequest(force=force, requested_by=who)
    method: Any = ClusterWorkflow.rotate_ca if ca else ClusterWorkflow.rotate_certificates
    what = "CA rotation" if ca else ("forced certificate rotation" if force else "certificate rotation")
    since = (await clusters.get_status(client, cluster_id)).operations_started  # --watch shows what follows
    try:
        update = await handle.start_update(method, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(_cause(exc)) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise clusters.ClusterNotFound(cluster_id) from None
        raise
    out.print(f"{what} of [bold]{cluster_id}[/] accepted; it runs after any operation ahead of it")
    out.print(f"Temporal UI: {settings.workflow_ui_url(entity_workflow_id(cluster_id))}")
    if watch_:
        await watch(client, cluster_id, since=since)
    try:
        result = await update.result()
    except WorkflowUpdateFailedError as exc:
        raise clusters.RequestRefused(f"{what} of {cluster_id} failed: {_cause(exc)}") from None
    status = await clusters.get_status(client, cluster_id)
    if isinstance(result, RotateCaResult):
        out.print(f"[green]CA rotated:[/] issuer {result.ca_issuer_id} issues and is the only CA trusted")
        out.print(
            f"  {len(result.certificates)} certificates re-issued; nodes rolled: {', '.join(result.restarted_nodes)}"
        )
        out.print("  user kubeconfigs signed by the old CA no longer work: hand out new ones ('tenantctl kubeconfig')")
    elif isinstance(result, RotateCertificatesResult):
        out.print(f"[green]rotated:[/] {len(result.reissued)} of {len(result.certificates)} certificates re-issued")
        out.print(f"  nodes restarted: {', '.join(result.restarted_nodes) or 'none (nothing was due)'}")
    out.print(f"  earliest expiry: {_at(status.earliest_expiry)}; next scheduled rotation: {_at(status.next_rotation)}")


# --- schedule -----------------------------------------------------------------------------------------
class ScheduleRun(BaseModel):
    scheduled_at: datetime
    started_at: datetime | None = None
    workflow_id: str = ""
    status: str = ""


class ScheduleView(BaseModel):
    """What ``schedule show`` prints (and ``-o json|yaml`` dumps)."""

    schedule_id: str
    cluster_id: str
    interval: Duration | None = None
    paused: bool = False
    note: str = ""
    overlap: str = ""
    catchup_window: Duration | None = None
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[ScheduleRun] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)
    actions_taken: int = 0
    skipped_overlap: int = 0
    missed_catchup_window: int = 0


async def describe_schedule(client: Client, cluster_id: str) -> ScheduleView:
    handle = client.get_schedule_handle(rotation_schedule_id(cluster_id))
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ScheduleMissing(cluster_id) from None
        raise
    recent = []
    for action in desc.info.recent_actions[-RECENT_RUNS_SHOWN:]:
        workflow_id = getattr(action.action, "workflow_id", "")
        state = ""
        if workflow_id:
            try:
                described = await client.get_workflow_handle(workflow_id).describe()
                state = described.status.name.lower() if described.status else ""
            except RPCError:
                state = "unknown"
        recent.append(
            ScheduleRun(
                scheduled_at=action.scheduled_at, started_at=action.started_at, workflow_id=workflow_id, status=state
            )
        )
    intervals = desc.schedule.spec.intervals
    policy = desc.schedule.policy
    return ScheduleView(
        schedule_id=handle.id,
        cluster_id=cluster_id,
        interval=intervals[0].every if intervals else None,
        paused=desc.schedule.state.paused,
        note=desc.schedule.state.note or "",
        overlap=policy.overlap.name.lower(),
        catchup_window=policy.catchup_window,
        next_runs=list(desc.info.next_action_times[:NEXT_RUNS_SHOWN]),
        recent_runs=recent,
        running=[getattr(a, "workflow_id", "") for a in desc.info.running_actions],
        actions_taken=desc.info.num_actions,
        skipped_overlap=desc.info.num_actions_skipped_overlap,
        missed_catchup_window=desc.info.num_actions_missed_catchup_window,
    )


def schedule_table(view: ScheduleView) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("schedule", f"{view.schedule_id} (cluster {view.cluster_id})")
    table.add_row("interval", format_duration(view.interval) if view.interval else "-")
    table.add_row("state", f"[yellow]paused[/]: {view.note}" if view.paused else "active")
    table.add_row("policy", f"overlap {view.overlap}, catch-up window {_duration(view.catchup_window)}")
    table.add_row("next runs", ", ".join(_at(t) for t in view.next_runs) or "-")
    table.add_row(
        "runs",
        f"{view.actions_taken} started, {view.skipped_overlap} skipped (overlap), "
        f"{view.missed_catchup_window} missed (catch-up window)",
    )
    if view.running:
        table.add_row("running", ", ".join(view.running))
    for run in reversed(view.recent_runs):
        table.add_row("recent", f"{_at(run.scheduled_at)}  {run.workflow_id}  {run.status}")
    return table


@schedule_app.command("show")
@run_command
async def schedule_show(cluster_id: ClusterArg, output: OutputOption = OutputFormat.TABLE) -> None:
    """Interval, pause state, next runs and recent runs of the rotation schedule."""
    _, client = await _connect()
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
    _, client = await _connect()
    note = f"paused by {clusters.whoami()} with tenantctl" + (f": {reason}" if reason else "")
    await _set_paused(client, cluster_id, paused=True, note=note)
    ttl = (await clusters.get_status(client, cluster_id)).earliest_expiry
    out.print(f"rotation schedule of [bold]{cluster_id}[/] [yellow]paused[/] ({note})")
    out.print(f"  the earliest certificate expires {_at(ttl)}: resume (or rotate) before then")


@schedule_app.command("resume")
@run_command
async def schedule_resume(cluster_id: ClusterArg) -> None:
    """Resume scheduled rotations."""
    _, client = await _connect()
    synced = await _set_paused(client, cluster_id, paused=False, note=f"resumed by {clusters.whoami()} with tenantctl")
    out.print(f"rotation schedule of [bold]{cluster_id}[/] [green]active[/]; next rotation {_at(synced.next_rotation)}")


async def _set_paused(client: Client, cluster_id: str, paused: bool, note: str) -> SyncScheduleResult:
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
def make_key_and_csr(user: str, groups: list[str]) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A new P-256 key and a CSR saying CN=user, O=each group (what Kubernetes RBAC reads)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def kubeconfig_document(
    cluster_id: str, server: str, user: str, signed: SignedUserCertificate, key: ec.EllipticCurvePrivateKey
) -> dict[str, Any]:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    context = f"{user}@{cluster_id}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_id,
                "cluster": {"server": server, "certificate-authority-data": _b64(signed.ca_bundle_pem.encode())},
            }
        ],
        "users": [
            {
                "name": context,
                "user": {
                    "client-certificate-data": _b64(signed.certificate_pem.encode()),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster_id, "user": context}}],
        "current-context": context,
    }


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (0600), also when the file existed with wider rights."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


async def kubeconfig(
    cluster_id: ClusterArg,
    user: Annotated[str, typer.Option("--user", "-u", help="Kubernetes user name (the certificate's CN)")],
    group: Annotated[list[str], typer.Option("--group", "-g", help="Kubernetes group (O); repeat for more")],
    ttl: Annotated[str, typer.Option("--ttl", help="lifetime, e.g. 8h; capped by the cluster's TTL")] = format_duration(
        DEFAULT_USER_CERTIFICATE_TTL
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write (default ./<id>-<user>.kubeconfig)")
    ] = None,
) -> None:
    """Write a kubeconfig for a user of the tenant cluster; the key is made here, only a CSR is sent."""
    lifetime = parse_duration(ttl)
    if not isinstance(lifetime, timedelta) or lifetime <= timedelta(0):
        raise typer.BadParameter(f"{ttl!r} is not a duration such as 8h or 1d", param_hint="--ttl")
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
        f"wrote [bold]{path}[/] (mode 0600) for user [bold]{signed.common_name}[/] in groups {', '.join(signed.groups)}"
    )
    out.print(f"  server {server}; certificate {signed.serial} valid until {_at(signed.not_after)}")
    if signed.ttl_capped:
        out.print(
            f"  [yellow]the TTL was capped to the cluster's certificate TTL "
            f"({format_duration(status.spec.certificates.ttl)})[/]"
        )
    out.print(f"  use it: KUBECONFIG={path} kubectl get nodes")


# --- wiring -------------------------------------------------------------------------------------------
def register(app: typer.Typer) -> None:
    """Add ``rotate``, ``schedule`` and ``kubeconfig`` to the ``tenantctl`` app."""
    app.command("rotate")(run_command(rotate))
    app.add_typer(schedule_app, name="schedule")
    app.command("kubeconfig")(run_command(kubeconfig))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _at(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _duration(value: timedelta | None) -> str:
    return format_duration(value) if value else "-"


def _cause(exc: BaseException) -> str:
    message, cause = str(exc), getattr(exc, "cause", None) or exc.__cause__
    while cause is not None:
        message = str(cause) or message
        cause = getattr(cause, "cause", None) or cause.__cause__
    return message
