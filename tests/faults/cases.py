"""The fault suite's parts (issue 14): a local stack with two workers and an AWS fault proxy, the
operations of both providers, faults injected at random moments, and the count of what exists.

Used by ``make faults`` (``tests.faults.suite``: every case, figures printed) and by the quick
subset that runs in CI as ordinary tests (``tests/faults/test_fault_suite_quick.py``).

Every case checks its outcome by counting what exists, never by trusting the status alone: host
objects by label (KVM), AWS resources by tag, the cluster's Vault mount, roles and policy, its valid
leaf certificates against its stored key pairs (a valid leaf no key pair holds is debris), and its
nodes. After a teardown nothing of the cluster may be left anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hvac
from cryptography import x509
from kubernetes import client as k8s
from pydantic import SecretStr
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode

from activities.aws.resources import TRUST_BUNDLE
from config.settings import Settings, load_settings
from devstack.stack import LocalStack, StackEndpoints, StackPorts
from models.cluster import ClusterPhase, ClusterStatus
from models.naming import CLUSTER_LABEL, aws_secret_name, rotation_schedule_id
from models.operations import (
    DeleteRequest,
    RotateCaRequest,
    RotateCertificatesRequest,
    ScaleRequest,
    UpgradeRequest,
)
from models.pki import certificate_requests, pki_mount, role_specs, vault_policy_name
from models.reconcile import ReconcileRequest
from models.spec import ClusterSpec
from models.versions import SemVer
from starter import clusters
from tests.aws_inventory import counts, everything, expected_counts
from tests.e2e.conftest import WorkerProcess
from tests.faults.fault_proxy import FaultPlan, fault_proxy
from tests.specs import example, small_kvm, unique_id
from worker.clients import AwsClients, aws_clients
from workflows.cluster import ClusterWorkflow

SETTLE_TIMEOUT_SECONDS = 900.0
PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"
"""What every PEM private key (PKCS#1, PKCS#8, EC) carries: never in a history or a log."""
PRIVATE_KEY_MARKERS = (
    PRIVATE_KEY_MARKER,
    # the same text base64-encoded (a Secret's data, a payload), at each of base64's three alignments
    *(base64.b64encode(b"\0" * shift + PRIVATE_KEY_MARKER)[4:-4] for shift in range(3)),
)
OPERATIONS = ("create", "scale", "upgrade", "rotate", "rotate-ca", "reconcile", "teardown")
PROVIDERS = ("kvm", "aws")


# --- AWS faults: throttling in front of moto ---------------------------------------------------------
def aws_throttling(key: str, headers: Any) -> tuple[int, bytes, str]:
    """An AWS error as the service's protocol spells it: half ``Throttling`` 400s, half
    ``ServiceUnavailable`` 503s (JSON for the JSON protocols, an XML error document otherwise)."""
    status, code = (400, "Throttling") if random.random() < 0.5 else (503, "ServiceUnavailable")
    if "json" in str(headers.get("Content-Type", "")):
        body = json.dumps({"__type": f"{code}Exception" if status == 400 else code, "message": "Rate exceeded"})
        return status, body.encode(), "application/x-amz-json-1.1"
    xml = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>Rate exceeded</Message>"
        "</Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
    )
    return status, xml.encode(), "text/xml"


# --- the stack ---------------------------------------------------------------------------------------
@dataclass
class FaultStack:
    """A local stack (no worker of its own), two workers on one queue, AWS reached through a proxy."""

    stack: LocalStack
    endpoints: StackEndpoints
    env: dict[str, str]
    workers: list[WorkerProcess]
    aws_faults: FaultPlan
    client: Client | None = None
    queue: str = ""

    def settings(self) -> Settings:
        return load_settings().model_copy(update={"temporal_task_queue": self.queue})

    def root_vault(self) -> hvac.Client:
        return hvac.Client(url=self.endpoints.vault_addr, token=self.stack.vault_root_token())

    def aws(self) -> AwsClients:
        """Straight to moto (not through the fault proxy): the count must not be throttled."""
        return aws_clients(
            Settings(
                aws_endpoint_url=self.endpoints.aws_endpoint_url,
                aws_region=self.endpoints.aws_region,
                aws_access_key_id=self.endpoints.aws_access_key_id,
                aws_secret_access_key=SecretStr(self.endpoints.aws_secret_access_key.get_secret_value()),
            )
        )

    def kube(self) -> k8s.ApiClient:
        return k8s.ApiClient(k8s.Configuration(host=self.endpoints.kube_api_url))

    def pid(self, service: str) -> int:
        found = next(s for s in self.stack.status() if s.name == service)
        assert found.pid is not None, f"{service} is not running"
        return found.pid

    def restart_workers(self) -> None:
        for worker in self.workers:
            if worker.proc is None or worker.proc.poll() is not None:
                worker.start()

    def logs(self) -> list[Path]:
        return [log for worker in self.workers for log in worker.logs]


@contextlib.contextmanager
def fault_stack(state_dir: Path, logs_dir: Path) -> Iterator[FaultStack]:
    stack = LocalStack(state_dir, ports=StackPorts.free(), with_worker=False, emulator_ready_delay=0.3)
    endpoints = stack.up()
    plan = FaultPlan(error_rate=0.0)
    with fault_proxy(endpoints.aws_endpoint_url, plan) as aws_proxy:
        queue = f"faults-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            **endpoints.as_env(),
            "TENANTCTL_STATE_DIR": str(state_dir),
            "TENANTCTL_TEMPORAL_TASK_QUEUE": queue,
            "TENANTCTL_AWS_ENDPOINT_URL": aws_proxy,
        }
        # the in-process clients (load_settings) read this stack from the environment; it is put
        # back afterwards, or every later test in the session would talk to a stack that is gone
        saved = dict(os.environ)
        os.environ.update({**endpoints.as_env(), "TENANTCTL_STATE_DIR": str(state_dir)})
        workers = [WorkerProcess(env=env, log=logs_dir / f"worker-{n}") for n in (1, 2)]
        faults = FaultStack(stack=stack, endpoints=endpoints, env=env, workers=workers, aws_faults=plan, queue=queue)
        try:
            for worker in workers:
                worker.start()
            yield faults
        finally:
            for worker in workers:
                worker.stop()
            stack.down(purge=True)
            os.environ.clear()
            os.environ.update(saved)


async def connect(faults: FaultStack) -> Client:
    if faults.client is None:
        faults.client = await clusters.connect(faults.settings())
    return faults.client


def spec_for(provider: str) -> ClusterSpec:
    if provider == "kvm":
        return small_kvm(id=unique_id("fkvm"), drift_check={"paused": True})
    region = "eu-central-1"
    return example(
        "aws-cluster.yaml",
        id=unique_id("faws"),
        deletion_protection=False,
        aws={"region": region, "availability_zones": [f"{region}a", f"{region}b"], "vpc_cidr": "10.0.0.0/16"},
        masters={"count": 1},
        workers={"count": 2, "instance_type": "m5.large"},
    )


# --- operations ---------------------------------------------------------------------------------------
async def settled(client: Client, cluster_id: str) -> ClusterStatus:
    began = time.monotonic()
    while time.monotonic() - began < SETTLE_TIMEOUT_SECONDS:
        try:
            status = await clusters.get_status(client, cluster_id)
        except clusters.UserError:  # a moment without a worker (a kill), or Temporal restarting
            await asyncio.sleep(0.5)
            continue
        if status.current is None and status.phase in (ClusterPhase.READY, ClusterPhase.FAILED, ClusterPhase.DELETED):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"{cluster_id} did not settle within {SETTLE_TIMEOUT_SECONDS:.0f}s")


async def make_drift(faults: FaultStack, spec: ClusterSpec) -> None:
    """Something for the drift repair to put back: a stored key pair deleted behind the cluster's back."""
    if spec.provider == "kvm":
        with faults.kube() as api:
            k8s.CoreV1Api(api).delete_namespaced_secret("cert-apiserver", f"tenant-{spec.id}")
    else:
        faults.aws().client("secretsmanager").delete_secret(
            SecretId=f"tenantctl/{spec.id}/apiserver", ForceDeleteWithoutRecovery=True
        )


async def run_operation(faults: FaultStack, spec: ClusterSpec, operation: str) -> tuple[ClusterStatus, str]:
    """Run ``operation`` on the cluster and wait until it settles; returns the status and an error, if any."""
    client = await connect(faults)
    if operation == "create":
        await clusters.start_cluster(client, spec, faults.queue)
        return await settled(client, spec.id), ""
    status = await clusters.get_status(client, spec.id)
    method, request = {
        "scale": (ClusterWorkflow.scale, lambda: ScaleRequest(workers=status.spec.workers.count + 1)),
        "upgrade": (ClusterWorkflow.upgrade, lambda: UpgradeRequest(version=next_patch(status.kubernetes_version))),
        "rotate": (ClusterWorkflow.rotate_certificates, lambda: RotateCertificatesRequest(force=True)),
        "rotate-ca": (ClusterWorkflow.rotate_ca, RotateCaRequest),
        "reconcile": (ClusterWorkflow.reconcile, lambda: ReconcileRequest(requested_by="fault suite")),
        "teardown": (ClusterWorkflow.delete, lambda: DeleteRequest(requested_by="fault suite")),
    }[operation]
    if operation == "reconcile":
        await make_drift(faults, spec)
    handle = await clusters.entity(client, spec.id).start_update(
        method, request(), wait_for_stage=WorkflowUpdateStage.ACCEPTED
    )
    error = ""
    while True:
        try:
            await handle.result()
            break
        except WorkflowUpdateFailedError as exc:
            error = str(exc.cause or exc)
            break
        except RPCError as exc:  # the poll for the outcome broke (Temporal restarting): ask again
            if exc.status not in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise
            await asyncio.sleep(0.5)
    return await settled(client, spec.id), error


def next_patch(version: str) -> str:
    v = SemVer.parse(version)
    return f"{v.major}.{v.minor}.{v.patch + 1}"


async def kill_a_worker_at_random(faults: FaultStack, cluster_id: str, rng: random.Random, within: float) -> str:
    """After a random delay (0..``within`` s), SIGKILL the worker running one of the cluster's
    operation's activities; then time how long until another worker runs it again."""
    client = await connect(faults)
    await asyncio.sleep(rng.uniform(0.0, within))
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            current = (await clusters.get_status(client, cluster_id)).current
        except clusters.UserError:
            return "no kill (no status)"
        if current is None:
            return "no kill (the operation ended first)"
        with contextlib.suppress(RPCError):
            handle = client.get_workflow_handle(current.workflow_id)
            for pending in (await handle.describe()).raw_description.pending_activities:
                if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                    continue
                pid = pending.last_worker_identity.split("@", 1)[0]
                victim = next((w for w in faults.workers if w.proc is not None and str(w.proc.pid) == pid), None)
                if victim is None or victim.proc is None or victim.proc.poll() is not None:
                    continue
                victim.kill()
                killed_at = time.monotonic()
                while time.monotonic() - killed_at < SETTLE_TIMEOUT_SECONDS:
                    again = {
                        p.activity_id: p for p in (await handle.describe()).raw_description.pending_activities
                    }.get(pending.activity_id)
                    if again is None or (
                        again.attempt > pending.attempt
                        and again.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                    ):
                        retaken = time.monotonic() - killed_at
                        return f"killed in {pending.activity_type.name}, retaken after {retaken:.1f}s"
                    await asyncio.sleep(0.05)
        await asyncio.sleep(0.02)
    return "no kill (nothing ran)"


@contextlib.contextmanager
def process_paused(pid: int) -> Iterator[None]:
    """SIGSTOP a process (a hung server: connections open, no answers), SIGCONT it after."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def kill_and_restart(faults: FaultStack, service: str, down_seconds: float) -> None:
    """kill -9 a stack service, leave it down a while, then bring it back as ``dev up`` does (OpenBao
    unsealed again; moto empty: AWS state lost)."""
    os.kill(faults.pid(service), signal.SIGKILL)
    time.sleep(down_seconds)
    faults.stack.up()


def seal_and_unseal(faults: FaultStack, sealed_seconds: float) -> None:
    faults.root_vault().sys.seal()
    time.sleep(sealed_seconds)
    faults.stack.up()  # 'dev up' unseals a sealed OpenBao


# --- counting what exists --------------------------------------------------------------------------------
@dataclass
class Inventory:
    found: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    unheld: int = 0  # valid leaves beyond the stored key pairs

    @property
    def problems(self) -> list[str]:
        kinds = sorted(set(self.found) | set(self.expected))
        return [
            f"{kind}: {self.found.get(kind, 0)} (expected {self.expected.get(kind, 0)})"
            for kind in kinds
            if self.found.get(kind, 0) != self.expected.get(kind, 0)
        ]


def _valid_leaves(vault: hvac.Client, mount: str) -> int:
    if f"{mount}/" not in vault.sys.list_mounted_secrets_engines()["data"]:
        return 0
    now, valid = datetime.now(UTC), 0
    for serial in (vault.list(f"{mount}/certs") or {"data": {"keys": []}})["data"]["keys"]:
        entry = vault.read(f"{mount}/cert/{serial}")["data"]
        if int(entry.get("revocation_time") or 0):
            continue
        certificate = x509.load_pem_x509_certificate(str(entry["certificate"]).encode())
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca and certificate.not_valid_after_utc > now:
            valid += 1
    return valid


def inventory(
    faults: FaultStack, spec: ClusterSpec, status: ClusterStatus | None, leaves_exact: bool = True
) -> Inventory:
    """What exists of the cluster, and what should (``status`` None or Deleted: nothing).

    ``leaves_exact=False`` after a rotation or a killed attempt: leaves that no stored key pair
    holds (superseded, or issued by a failed attempt) stay valid until the next drift repair revokes
    them; they are counted in ``unheld`` instead of failing the count."""
    alive = status is not None and status.phase is not ClusterPhase.DELETED
    nodes = list(status.nodes) if status is not None and alive else []
    current = status.spec if status is not None else spec
    requests = certificate_requests(current, nodes) if alive else []
    vault = faults.root_vault()
    mount = pki_mount(spec.id)
    found: dict[str, int] = {
        "vault mount": int(f"{mount}/" in vault.sys.list_mounted_secrets_engines()["data"]),
        "vault policy": int(vault_policy_name(spec.id) in vault.sys.list_acl_policies()["data"]["keys"]),
        "vault valid leaf certificates": _valid_leaves(vault, mount),
    }
    if found["vault mount"]:
        found["vault roles"] = len((vault.list(f"{mount}/roles") or {"data": {"keys": []}})["data"]["keys"])
    expected: dict[str, int] = {}
    if alive:
        expected = {
            "vault mount": 1,
            "vault policy": 1,
            "vault roles": len(role_specs(current)),
            "vault valid leaf certificates": len(requests),
        }
    if spec.provider == "kvm":
        selector = f"{CLUSTER_LABEL}={spec.id}"
        with faults.kube() as api:
            core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
            found["host namespaces"] = len(core.list_namespace(label_selector=selector).items)
            found["host node deployments"] = len(apps.list_deployment_for_all_namespaces(label_selector=selector).items)
            secrets = core.list_secret_for_all_namespaces(label_selector=selector).items
            found["host key pair secrets"] = len([s for s in secrets if s.metadata.name.startswith("cert-")])
        if alive:
            expected |= {
                "host namespaces": 1,
                "host node deployments": len(nodes),
                "host key pair secrets": len(requests),
            }
    else:
        aws = faults.aws()
        have = {k: v for k, v in counts(everything(aws, spec)).items() if k not in ("tagging-api", "secret")}
        found |= {f"aws {k}": v for k, v in have.items()}
        secrets = everything(aws, spec)["secret"]
        bundle = aws_secret_name(spec.id, TRUST_BUNDLE)  # a CA rotation's published trust bundle: no key pair
        found["aws key pair secrets"] = len([s for s in secrets if not s.get("DeletedDate") and s["Name"] != bundle])
        if alive:
            sized = current.model_copy(
                update={"workers": current.workers.model_copy(update={"count": len(nodes) - current.masters.count})}
            )
            expected |= {f"aws {k}": v for k, v in expected_counts(sized).items()}
            expected["aws key pair secrets"] = len(requests)
    found = {k: v for k, v in found.items() if v or k in expected}
    leaves = "vault valid leaf certificates"
    unheld = max(0, found.get(leaves, 0) - expected.get(leaves, 0))
    if not leaves_exact and leaves in expected:
        expected[leaves] += unheld
    return Inventory(found=found, expected={k: v for k, v in expected.items() if v}, unheld=unheld)


async def schedule_exists(faults: FaultStack, cluster_id: str) -> bool:
    client = await connect(faults)
    try:
        await client.get_schedule_handle(rotation_schedule_id(cluster_id)).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


# --- no private key in any history or log -------------------------------------------------------------------
def holds_private_key(data: bytes) -> bool:
    return any(marker in data for marker in PRIVATE_KEY_MARKERS)


def payload_bytes(node: Any) -> Iterator[bytes]:
    """Every payload's decoded data in a history's JSON form (payloads are base64 there)."""
    if isinstance(node, dict):
        if isinstance(node.get("data"), str) and isinstance(node.get("metadata"), dict):
            with contextlib.suppress(ValueError):
                yield base64.b64decode(node["data"])
        for value in node.values():
            yield from payload_bytes(value)
    elif isinstance(node, list):
        for value in node:
            yield from payload_bytes(value)


def history_holds_private_key(history_json: dict[str, Any]) -> bool:
    raw = json.dumps(history_json).encode()
    return holds_private_key(raw) or any(holds_private_key(data) for data in payload_bytes(history_json))


async def private_keys_in_histories(client: Client) -> tuple[int, int, list[str]]:
    """(histories scanned, events scanned, ids of workflows whose history holds a private key)."""
    scanned, events, holding = 0, 0, []
    async for execution in client.list_workflows():
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        scanned, events = scanned + 1, events + len(history.events)
        if history_holds_private_key(history.to_json_dict()):
            holding.append(execution.id)
    return scanned, events, holding


def private_keys_in_logs(logs: list[Path]) -> list[str]:
    return [str(log) for log in logs if log.exists() and holds_private_key(log.read_bytes())]
