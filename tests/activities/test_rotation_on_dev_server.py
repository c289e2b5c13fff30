"""Rotation on a real Temporal dev server: the real Schedule, and a whole cluster on real backends.

1. The schedule ``cert-rotation/<id>`` as the entity keeps it (PKI and nodes simulated): created on
   create with the spec's interval, a triggered run makes the entity rotate, an interval change
   updates it, a pause shows in the status, delete removes it.
2. A 3-master/3-worker cluster on real OpenBao (PKI) and the host API emulator (KVM provider):
   nothing due right after create restarts nothing; a forced rotation re-issues every leaf and
   rolls every node one at a time (timed); a CA rotation is checked after *every* activity for the
   property it must keep: every leaf any node presents verifies against the trust of every other
   node; a user kubeconfig through the CLI; no private key in any history of the cluster.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.kvm import manifests
from activities.kvm.key_pairs import TRUST_BUNDLE_SECRET
from activities.kvm.provider import KvmProvider
from activities.pki.rotation_schedule import RotationSchedules
from activities.pki.vault import VaultPki, verifies
from activities.providers.contract import Providers, provider_activities
from models.cluster import ClusterPhase, OperationKind
from models.naming import entity_workflow_id, kvm_namespace, rotation_schedule_id
from models.operations import (
    ConfigureRequest,
    DeleteRequest,
    RotateCaRequest,
    RotateCertificatesRequest,
    RotateCertificatesResult,
)
from models.pki import certificate_requests, pki_mount
from models.provider import NodeRef, ResourceChange
from models.schedules import SyncScheduleRequest
from models.spec import ClusterSpec
from tests.activities.provider_helpers import local_stack_nodes
from tests.fakes_rotation import SimulatedPki
from tests.history_checks import assert_no_private_key
from tests.servers import OpenBao
from tests.specs import small_kvm
from tests.workflows.helpers import run_cli, start_entity, wait_settled
from worker.registry import activities_of, build_worker
from workflows.cluster import ClusterWorkflow
from workflows.node_rolls import restart_token
from workflows.rotate_certificates import node_serials

MASTERS = ["master-0", "master-1", "master-2"]
WORKERS = ["worker-0", "worker-1", "worker-2"]


def real_schedule_activities(client: Client, queue: str, backend: SimulatedPki) -> list[Any]:
    schedules = activities_of(RotationSchedules(client, queue))
    real = {activity._Definition.from_callable(fn).name for fn in schedules}  # type: ignore[union-attr]
    fakes = [fn for fn in backend.activities() if activity._Definition.from_callable(fn).name not in real]  # type: ignore[union-attr]
    return [*fakes, *schedules]


async def eventually_async(check: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# --- 1. the real Schedule ---------------------------------------------------------------------------
async def test_the_schedule_follows_the_cluster(temporal_env: WorkflowEnvironment) -> None:
    client, backend, queue = temporal_env.client, SimulatedPki(), f"sched-{uuid.uuid4().hex[:8]}"
    spec = small_kvm()
    schedule = client.get_schedule_handle(rotation_schedule_id(spec.id))
    async with build_worker(client, queue, real_schedule_activities(client, queue, backend)):
        handle = await start_entity(client, spec, queue)
        await wait_settled(handle)
        # Ready comes a moment before the schedule: the entity makes it once the create succeeded.
        status = await eventually_async(lambda: _with_next_rotation(handle), what="the schedule to be made")

        desc = await schedule.describe()
        assert [i.every for i in desc.schedule.spec.intervals] == [timedelta(hours=24)]
        assert desc.schedule.policy.catchup_window == timedelta(hours=24)
        assert status.next_rotation == desc.info.next_action_times[0]

        # a run of the schedule asks the entity, which rotates (nothing due yet: no restarts)
        await schedule.trigger()
        rotated = await eventually_async(
            lambda: _recent_rotation(handle), what="the triggered run to make the entity rotate"
        )
        assert rotated.requested_by == "schedule" and rotated.state.value == "succeeded"
        run_id = (await schedule.describe()).info.recent_actions[-1].action.workflow_id  # type: ignore[attr-defined]
        assert run_id.startswith(f"cert-rotation/{spec.id}")
        run_result = await client.get_workflow_handle(run_id, result_type=RotateCertificatesResult).result()
        assert run_result.reissued == [] and run_result.restarted_nodes == []
        run = await client.get_workflow_handle(run_id).describe()
        assert run.workflow_type == "ScheduledRotation" and run.status is WorkflowExecutionStatus.COMPLETED

        # the interval follows the spec
        faster = spec.certificates.model_copy(update={"rotation_interval": timedelta(hours=12)})
        changed = await handle.execute_update(ClusterWorkflow.configure, ConfigureRequest(certificates=faster))
        assert changed.changed == ["certificates"]
        desc = await schedule.describe()
        assert [i.every for i in desc.schedule.spec.intervals] == [timedelta(hours=12)]
        assert desc.schedule.policy.catchup_window == timedelta(hours=12)

        # a pause through the Schedules API shows once the entity re-reads it
        await schedule.pause(note="paused by a test")
        synced = await handle.execute_update(ClusterWorkflow.sync_schedule, SyncScheduleRequest())
        assert synced.paused and (await handle.query(ClusterWorkflow.get_status)).next_rotation is None
        assert (await schedule.describe()).schedule.state.note == "paused by a test"
        await schedule.unpause()
        synced = await handle.execute_update(ClusterWorkflow.sync_schedule, SyncScheduleRequest())
        assert not synced.paused and synced.next_rotation is not None

        # teardown deletes it
        await handle.execute_update(ClusterWorkflow.delete, DeleteRequest())
        await handle.result()
    with pytest.raises(RPCError) as gone:
        await schedule.describe()
    assert gone.value.status is RPCStatusCode.NOT_FOUND


async def _with_next_rotation(handle: Any) -> Any:
    status = await handle.query(ClusterWorkflow.get_status)
    return status if status.next_rotation is not None else None


async def _recent_rotation(handle: Any) -> Any:
    status = await handle.query(ClusterWorkflow.get_status)
    found = [op for op in status.recent if op.kind is OperationKind.ROTATE_CERTIFICATES]
    return found[0] if found else None


# --- 2. a whole cluster on real backends -------------------------------------------------------------
@dataclass
class TrustWatch:
    """Checks, after every activity of a cluster, what each node would present and trust.

    A node loads its Secrets when it (re)starts: at ``ensure_node`` and at a ``restart_node`` that
    rolled it. Stored: every Secret's leaf must verify against every Secret's ca.crt (and the
    published bundle). Loaded: every leaf a node loaded must verify against what every node loaded.
    """

    spec: ClusterSpec
    core: k8s.CoreV1Api
    loaded: dict[str, tuple[list[x509.Certificate], list[x509.Certificate]]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    checks: int = 0
    bundle_sizes: list[int] = field(default_factory=list)
    timeline: list[tuple[str, str, float]] = field(default_factory=list)  # activity, node(s), finished
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stored(self) -> dict[str, tuple[x509.Certificate, list[x509.Certificate]]]:
        found = {}
        for secret in self.core.list_namespaced_secret(kvm_namespace(self.spec.id)).items:
            name = secret.metadata.name if secret.metadata and secret.metadata.name else ""
            data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
            if name == TRUST_BUNDLE_SECRET:
                self.bundle_sizes.append(len(x509.load_pem_x509_certificates(data["ca.crt"])))
                continue
            if "tls.crt" in data:
                leaf = x509.load_pem_x509_certificate(data["tls.crt"])
                found[name] = (leaf, x509.load_pem_x509_certificates(data["ca.crt"]))
        return found

    def after(self, name: str, arg: Any, result: Any) -> None:
        with self.lock:  # the create runs activities in parallel
            self._after(name, arg, result)

    def _after(self, name: str, arg: Any, result: Any) -> None:
        try:
            stored = self.stored()
        except k8s.ApiException as exc:
            if exc.status == 404:  # no namespace yet (early create) or any more (teardown)
                return
            raise
        if name in ("kvm.ensure_node", "kvm.restart_node") and isinstance(arg, NodeRef):
            rolled = name == "kvm.ensure_node" or any(o.change is ResourceChange.UPDATED for o in result.outcomes)
            if rolled:
                consumed = [f"cert-{r.name}" for r in certificate_requests(self.spec) if arg.node in r.consumers]
                leaves = [stored[s][0] for s in consumed if s in stored]
                trust = [ca for s in consumed if s in stored for ca in stored[s][1]]
                self.loaded[arg.node] = (leaves, trust)
        self.timeline.append((name, getattr(arg, "node", ",".join(getattr(arg, "nodes", []))), time.monotonic()))
        self.checks += 1
        for a, (leaf, _) in stored.items():
            for b, (_, trust) in stored.items():
                if not verifies(leaf, trust):
                    self.violations.append(f"after {name}: stored {a} does not verify against ca.crt of {b}")
        for a, (leaves, _) in self.loaded.items():
            for b, (_, trust) in self.loaded.items():
                if not all(verifies(leaf, trust) for leaf in leaves):
                    self.violations.append(f"after {name}: node {a} presents a leaf node {b} does not trust")


class TrustWatchInterceptor(Interceptor):
    def __init__(self, watch: TrustWatch) -> None:
        self.watch = watch

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.watch)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, watch: TrustWatch) -> None:
        super().__init__(next)
        self.watch = watch

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        name = activity.info().activity_type
        arg = input.args[0] if input.args else None
        # The check reads the host API (blocking): off the event loop, before the workflow goes on.
        await asyncio.to_thread(self.watch.after, name, arg, result)
        return result


@pytest.fixture
def apis(kube_emulator: Any) -> Iterator[k8s.ApiClient]:
    with k8s.ApiClient(k8s.Configuration(host=kube_emulator.url)) as api:
        yield api


def deployment_tokens(apps: k8s.AppsV1Api, spec: ClusterSpec) -> dict[str, str | None]:
    tokens = {}
    for node in spec.node_names():
        template = apps.read_namespaced_deployment(node, kvm_namespace(spec.id)).spec.template  # type: ignore[union-attr]
        annotations = (template.metadata.annotations if template.metadata else None) or {}
        tokens[node] = annotations.get(manifests.RESTART_TOKEN_ANNOTATION)
    return tokens


def one_at_a_time(timeline: list[tuple[str, str, float]]) -> list[str]:
    """Nodes restarted in order; each restart's wait for that node alone finished before the next restart."""
    order, waiting = [], None
    for name, nodes, _ in timeline:
        if name == "kvm.restart_node":
            assert waiting is None, f"{nodes} restarted while {waiting} was not ready yet"
            waiting = nodes
            order.append(nodes)
        elif name == "kvm.wait_nodes_ready" and waiting is not None:
            assert nodes == waiting, f"waited for {nodes}, not {waiting} alone"
            waiting = None
    return order


async def test_a_three_plus_three_cluster_rotates_on_real_backends(
    temporal_env: WorkflowEnvironment, openbao: OpenBao, apis: k8s.ApiClient, tmp_path: Path
) -> None:
    client, queue = temporal_env.client, f"e2e-rot-{uuid.uuid4().hex[:8]}"
    spec = small_kvm(masters={"count": 3, "cpu": 2, "memory": "4Gi"}, workers={"count": 3, "cpu": 2, "memory": "4Gi"})
    core, apps = k8s.CoreV1Api(apis), k8s.AppsV1Api(apis)
    vault = hvac.Client(url=openbao.addr, token=openbao.token)
    kvm = KvmProvider(apis, simulated_nodes=local_stack_nodes(apis), poll_interval=0.05)
    pki = VaultPki(vault, Providers([kvm]))
    watch = TrustWatch(spec, core)
    activities = activities_of(pki, RotationSchedules(client, queue)) + provider_activities(kvm)
    requests = certificate_requests(spec)

    async with build_worker(client, queue, activities, interceptors=[TrustWatchInterceptor(watch)]):
        handle = await start_entity(client, spec, queue)
        created = await wait_settled(handle, attempts=1200)
        assert created.phase is ClusterPhase.READY, created.message
        await eventually_async(lambda: _with_next_rotation(handle), what="the schedule to be made")

        # right after create nothing is due: nothing re-issued, no node restarted
        idle = await handle.execute_update(ClusterWorkflow.rotate_certificates, RotateCertificatesRequest())
        assert idle.reissued == [] and idle.restarted_nodes == []
        assert set(deployment_tokens(apps, spec).values()) == {None}

        # forced: every leaf re-issued, every node rolled one at a time, masters first (timed)
        mark = len(watch.timeline)
        started = time.monotonic()
        forced = await handle.execute_update(ClusterWorkflow.rotate_certificates, RotateCertificatesRequest(force=True))
        forced_seconds = time.monotonic() - started
        assert sorted(forced.reissued) == sorted(r.name for r in requests)
        assert forced.restarted_nodes == MASTERS + WORKERS
        assert one_at_a_time(watch.timeline[mark:]) == MASTERS + WORKERS
        serials = {r.name: r.serial for r in forced.certificates}
        assert deployment_tokens(apps, spec) == {
            n: restart_token(node_serials(requests, serials, n)) for n in MASTERS + WORKERS
        }
        assert {r.serial for r in forced.certificates}.isdisjoint(r.serial for r in created.certificates.values())

        # the CA: checked after every activity of it
        mark, checks_before = len(watch.timeline), watch.checks
        old_issuer = created.ca_issuer_id
        started = time.monotonic()
        rotated = await handle.execute_update(ClusterWorkflow.rotate_ca, RotateCaRequest(requested_by="test"))
        ca_seconds = time.monotonic() - started
        status = await handle.query(ClusterWorkflow.get_status)
        after_ca = await asyncio.to_thread(watch.stored)
        bundle_after_ca = await asyncio.to_thread(_bundle, core, spec)
        new_ca = _issuer(vault, spec, rotated.ca_issuer_id)
        old_ca = _issuer(vault, spec, created.ca_issuer_id)

        kubeconfig = tmp_path / "alice.kubeconfig"
        cli = await asyncio.to_thread(
            run_cli,
            temporal_env,
            queue,
            tmp_path,
            [
                "kubeconfig",
                spec.id,
                "--user",
                "alice",
                "--group",
                "devs",
                "-g",
                "ops",
                "--ttl",
                "2h",
                "-o",
                str(kubeconfig),
            ],
        )
        shown = await asyncio.to_thread(
            run_cli, temporal_env, queue, tmp_path, ["schedule", "show", spec.id, "-o", "yaml"]
        )
        paused = await asyncio.to_thread(run_cli, temporal_env, queue, tmp_path, ["schedule", "pause", spec.id])
        paused_status = await handle.query(ClusterWorkflow.get_status)
        resumed = await asyncio.to_thread(run_cli, temporal_env, queue, tmp_path, ["schedule", "resume", spec.id])
        rotated_by_cli = await asyncio.to_thread(run_cli, temporal_env, queue, tmp_path, ["rotate", spec.id])

        await handle.execute_update(ClusterWorkflow.delete, DeleteRequest())
        await handle.result()

    # every step of the CA rotation kept every node able to verify every peer
    assert watch.violations == []
    assert watch.checks - checks_before >= 7 + 3 * 2 * 6  # every phase's activities, every roll
    assert 2 in watch.bundle_sizes and watch.bundle_sizes[-1] == 1  # the dual bundle was there, then only one
    assert one_at_a_time(watch.timeline[mark:]) == (MASTERS + WORKERS) * 3
    new_issuer = rotated.ca_issuer_id
    assert new_issuer != old_issuer and status.ca_issuer_id == new_issuer
    assert {r.issuer_id for r in status.certificates.values()} == {new_issuer}
    assert [s.state.value for s in status.recent[0].steps] == ["done"] * 7
    assert bundle_after_ca == [new_ca]
    assert len(after_ca) == len(requests)
    for leaf, cas in after_ca.values():
        assert verifies(leaf, [new_ca]) and not verifies(leaf, [old_ca]) and cas == [new_ca]

    # the user's kubeconfig: CN and O as asked, the user's own key, the cluster's CA and API
    assert cli.exit_code == 0, cli.output
    assert stat.S_IMODE(os.stat(kubeconfig).st_mode) == 0o600
    config = yaml.safe_load(kubeconfig.read_text())
    user = config["users"][0]["user"]
    certificate = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    key = serialization.load_pem_private_key(base64.b64decode(user["client-key-data"]), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["devs", "ops"]
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == f"https://{spec.api_domain}"
    assert verifies(
        certificate, x509.load_pem_x509_certificates(base64.b64decode(cluster["certificate-authority-data"]))
    )
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc <= timedelta(hours=2, seconds=30)

    assert shown.exit_code == 0 and yaml.safe_load(shown.output)["interval"] == "1d", shown.output
    assert paused.exit_code == 0 and "paused" in paused.output and paused_status.next_rotation is None
    assert resumed.exit_code == 0 and "active" in resumed.output
    assert rotated_by_cli.exit_code == 0 and "0 of 17 certificates re-issued" in rotated_by_cli.output

    # no history of the cluster holds a private key (the CLI's key included: it never left the test)
    ids = await _workflow_ids(client, spec)
    assert {entity_workflow_id(spec.id), f"cluster/{spec.id}/rotate-ca/4"} <= set(ids)
    for workflow_id in ids:
        assert_no_private_key(await client.get_workflow_handle(workflow_id).fetch_history())
    print(  # noqa: T201
        f"\n3+3 cluster on OpenBao + emulator: forced rotation of {len(forced.reissued)} certificates and "
        f"{len(forced.restarted_nodes)} node restarts took {forced_seconds:.2f}s; CA rotation {ca_seconds:.2f}s"
    )


def _issuer(vault: hvac.Client, spec: ClusterSpec, issuer_id: str) -> x509.Certificate:
    found = vault.read(f"{pki_mount(spec.id)}/issuer/{issuer_id}")["data"]["certificate"]
    return x509.load_pem_x509_certificate(found.encode())


def _bundle(core: k8s.CoreV1Api, spec: ClusterSpec) -> list[x509.Certificate]:
    secret = core.read_namespaced_secret(TRUST_BUNDLE_SECRET, kvm_namespace(spec.id))
    return x509.load_pem_x509_certificates(base64.b64decode((secret.data or {})["ca.crt"]))


async def _workflow_ids(client: Client, spec: ClusterSpec) -> list[str]:
    """The entity (started here without search attributes) and every workflow tagged with the cluster id."""

    async def listed() -> list[str] | None:
        ids = [w.id async for w in client.list_workflows(f'ClusterId = "{spec.id}"')]
        return ids if any("/rotate-ca/" in i for i in ids) else None  # visibility lags a little

    ids: list[str] = await eventually_async(listed, what="visibility to list the cluster's workflows")
    return [entity_workflow_id(spec.id), *ids]
