"""Activities replaced by name, for workflow-logic tests on the time-skipping server.

The real activities are tested against their real backends in tests/activities; these keep a
small in-memory world so workflows can be checked for order, idempotency and what remains.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity

from models.drift import Backend, DriftItem, DriftKind, DriftReport, ObserveInput
from models.pki import (
    CaInput,
    CaResult,
    CertificateRecord,
    CertificatesResult,
    EnsureCertificatesInput,
    NodeCertificatesInput,
    NodeCertificatesResult,
    RevokeResult,
    certificate_requests,
)
from models.provider import (
    ClusterRef,
    EnsureResult,
    NodeObservation,
    NodeRef,
    NodesResult,
    ResourceChange,
    ResourceList,
    ResourceOutcome,
    WaitNodesInput,
)
from models.schedules import RotationScheduleInput, RotationScheduleResult, ScheduleRef
from models.tenant import HealthInput, HealthResult, NodeHealth


def typed_activity(name: str, arg_type: type, result_type: type) -> Callable[[Callable[..., Any]], Any]:
    """Register ``fn`` as activity ``name``, typed before decoration so the converter hands it a
    model, not a dict."""

    def wrap(fn: Callable[..., Any]) -> Any:
        fn.__annotations__ = {"arg": arg_type, "return": result_type}
        return activity.defn(name=name)(fn)

    return wrap


@dataclass
class FakeBackends:
    """In-memory stand-ins with the real activity names; ``calls`` lists (name, detail) in order."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)
    serial: int = 0
    schedules: dict[str, timedelta] = field(default_factory=dict)
    objects: set[str] = field(default_factory=set)
    node_versions: dict[str, str] = field(default_factory=dict)
    pki_mounts: set[str] = field(default_factory=set)
    issued: dict[str, list[str]] = field(default_factory=dict)  # certificate name -> serials, oldest first
    revoked: set[str] = field(default_factory=set)  # serials
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, name: str, detail: str = "") -> None:
        with self.lock:
            self.calls.append((name, detail))
        if name in self.fail:
            raise self.fail[name]

    def stored_key_pairs(self) -> set[str]:
        """Names of the certificates whose key pair is stored (what ``pki.observe`` finds)."""
        with self.lock:
            return {o.removeprefix("secret/cert-") for o in self.objects if o.startswith("secret/cert-")}

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    def _add(self, *keys: str) -> EnsureResult:
        outcomes = []
        with self.lock:
            for key in keys:
                kind, name = key.split("/", 1)
                change = ResourceChange.UNCHANGED if key in self.objects else ResourceChange.CREATED
                self.objects.add(key)
                outcomes.append(ResourceOutcome(kind=kind, name=name, change=change))
        return EnsureResult(outcomes=outcomes)

    def _remove(self, *keys: str) -> EnsureResult:
        outcomes = []
        with self.lock:
            for key in keys:
                kind, name = key.split("/", 1)
                change = ResourceChange.DELETED if key in self.objects else ResourceChange.ABSENT
                self.objects.discard(key)
                outcomes.append(ResourceOutcome(kind=kind, name=name, change=change))
        return EnsureResult(outcomes=outcomes)

    def activities(self, provider: str = "kvm") -> list[Callable[..., Any]]:
        backend = self

        defn = typed_activity

        @defn("pki.ensure_ca", CaInput, CaResult)
        def ensure_ca(arg: CaInput) -> CaResult:
            backend._record("pki.ensure_ca", arg.spec.id)
            backend.pki_mounts.add(arg.spec.id)
            return CaResult(
                mount=f"pki/{arg.spec.id}",
                issuer_id="issuer-1",
                common_name=f"{arg.spec.id} root CA",
                not_after=datetime(2036, 1, 1, tzinfo=UTC),
                created=True,
            )

        @defn("pki.ensure_roles", ClusterRef, EnsureResult)
        def ensure_roles(arg: ClusterRef) -> EnsureResult:
            backend._record("pki.ensure_roles")
            return EnsureResult()

        @defn("pki.ensure_policy", ClusterRef, EnsureResult)
        def ensure_policy(arg: ClusterRef) -> EnsureResult:
            backend._record("pki.ensure_policy")
            return EnsureResult()

        @defn("pki.ensure_certificates", EnsureCertificatesInput, CertificatesResult)
        def ensure_certificates(arg: EnsureCertificatesInput) -> CertificatesResult:
            backend._record("pki.ensure_certificates", str(len(arg.requests)))
            now = datetime.now(UTC)
            records = []
            for request in arg.requests:
                backend.serial += 1
                backend._add(f"secret/cert-{request.name}")
                backend.issued.setdefault(request.name, []).append(f"{backend.serial:02x}")
                records.append(
                    CertificateRecord(
                        name=request.name,
                        common_name=request.common_name,
                        serial=f"{backend.serial:02x}",
                        not_before=now,
                        not_after=now + arg.spec.certificates.ttl,
                        issuer_id="issuer-1",
                        destination=f"secret/cert-{request.name}",
                    )
                )
            return CertificatesResult(records=records, issued=[r.name for r in records])

        @defn("pki.ensure_certificates_absent", ClusterRef, EnsureResult)
        def ensure_certificates_absent(arg: ClusterRef) -> EnsureResult:
            backend._record("pki.ensure_certificates_absent")
            return backend._remove(*sorted(k for k in backend.objects if k.startswith("secret/")))

        @defn("pki.ensure_node_certificates_absent", NodeCertificatesInput, NodeCertificatesResult)
        def ensure_node_certificates_absent(arg: NodeCertificatesInput) -> NodeCertificatesResult:
            backend._record("pki.ensure_node_certificates_absent", ",".join(arg.nodes))
            with backend.lock:
                serials = [s for n in arg.nodes for s in backend.issued.get(f"node-{n}", [])]
                revoked = [s for s in serials if s not in backend.revoked]
                backend.revoked.update(revoked)
            removed = backend._remove(*(f"secret/cert-node-{n}" for n in arg.nodes))
            deleted = [o.name for o in removed.outcomes if o.change is ResourceChange.DELETED]
            return NodeCertificatesResult(revoked=revoked, deleted=deleted)

        @defn("pki.revoke_certificates", ClusterRef, RevokeResult)
        def revoke_certificates(arg: ClusterRef) -> RevokeResult:
            backend._record("pki.revoke_certificates")
            return RevokeResult(revoked=backend.serial if arg.spec.id in backend.pki_mounts else 0)

        @defn("pki.revoke_unheld_certificates", ObserveInput, NodeCertificatesResult)
        def revoke_unheld_certificates(arg: ObserveInput) -> NodeCertificatesResult:
            backend._record("pki.revoke_unheld_certificates")
            return NodeCertificatesResult()

        @defn("pki.ensure_pki_absent", ClusterRef, EnsureResult)
        def ensure_pki_absent(arg: ClusterRef) -> EnsureResult:
            backend._record("pki.ensure_pki_absent")
            existed = arg.spec.id in backend.pki_mounts
            backend.pki_mounts.discard(arg.spec.id)
            change = ResourceChange.DELETED if existed else ResourceChange.ABSENT
            return EnsureResult(outcomes=[ResourceOutcome(kind="pki-mount", name=f"pki/{arg.spec.id}", change=change)])

        @defn(f"{provider}.ensure_foundation", ClusterRef, EnsureResult)
        def ensure_foundation(arg: ClusterRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_foundation")
            return backend._add(f"namespace/tenant-{arg.spec.id}")

        @defn(f"{provider}.ensure_foundation_absent", ClusterRef, EnsureResult)
        def ensure_foundation_absent(arg: ClusterRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_foundation_absent")
            return backend._remove(f"namespace/tenant-{arg.spec.id}")

        @defn(f"{provider}.ensure_endpoint", ClusterRef, EnsureResult)
        def ensure_endpoint(arg: ClusterRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_endpoint")
            return backend._add("service/api", "ingress/api")

        @defn(f"{provider}.ensure_endpoint_absent", ClusterRef, EnsureResult)
        def ensure_endpoint_absent(arg: ClusterRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_endpoint_absent")
            return backend._remove("service/api", "ingress/api")

        @defn(f"{provider}.ensure_node", NodeRef, EnsureResult)
        def ensure_node(arg: NodeRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_node", arg.node)
            backend.node_versions[arg.node] = arg.kubernetes_version
            return backend._add(f"deployment/{arg.node}")

        @defn(f"{provider}.ensure_node_absent", NodeRef, EnsureResult)
        def ensure_node_absent(arg: NodeRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_node_absent", arg.node)
            backend.node_versions.pop(arg.node, None)
            return backend._remove(f"deployment/{arg.node}")

        @defn(f"{provider}.restart_node", NodeRef, EnsureResult)
        def restart_node(arg: NodeRef) -> EnsureResult:
            backend._record(f"{provider}.restart_node", f"{arg.node}:{arg.restart_token}")
            return EnsureResult()

        @defn(f"{provider}.wait_nodes_ready", WaitNodesInput, NodesResult)
        def wait_nodes_ready(arg: WaitNodesInput) -> NodesResult:
            backend._record(f"{provider}.wait_nodes_ready", ",".join(arg.nodes))
            return NodesResult(
                nodes=[
                    NodeObservation(
                        name=n, role=n.rsplit("-", 1)[0], kubernetes_version=arg.kubernetes_version or "", ready=True
                    )
                    for n in arg.nodes
                ]
            )

        @defn(f"{provider}.list_nodes", ClusterRef, NodesResult)
        def list_nodes(arg: ClusterRef) -> NodesResult:
            backend._record(f"{provider}.list_nodes")
            return NodesResult(
                nodes=[
                    NodeObservation(name=n, role=n.rsplit("-", 1)[0], kubernetes_version=v, ready=True)
                    for n, v in sorted(backend.node_versions.items())
                ]
            )

        @defn("tenant.check_health", HealthInput, HealthResult)
        def check_health(arg: HealthInput) -> HealthResult:
            # Node auto-repair's look at the tenant API: every node with a VM is Ready here.
            backend._record("tenant.check_health")
            with backend.lock:
                names = sorted(set(backend.node_versions) | set(arg.expected_nodes))
                up = set(backend.node_versions)
            return HealthResult(
                api_reachable=True,
                nodes=[NodeHealth(name=n, ready=n in up, reason="" if n in up else "not registered") for n in names],
            )

        @defn(f"{provider}.list_resources", ClusterRef, ResourceList)
        def list_resources(arg: ClusterRef) -> ResourceList:
            backend._record(f"{provider}.list_resources")
            return ResourceList(resources=sorted(backend.objects))

        @defn("schedule.ensure_rotation_schedule", RotationScheduleInput, RotationScheduleResult)
        def ensure_rotation_schedule(arg: RotationScheduleInput) -> RotationScheduleResult:
            backend._record("schedule.ensure_rotation_schedule", str(arg.spec.certificates.rotation_interval))
            backend.schedules[arg.spec.id] = arg.spec.certificates.rotation_interval
            return RotationScheduleResult(
                schedule_id=f"cert-rotation/{arg.spec.id}",
                interval=arg.spec.certificates.rotation_interval,
                next_runs=[datetime.now(UTC) + arg.spec.certificates.rotation_interval],
            )

        @defn("schedule.ensure_rotation_schedule_absent", ScheduleRef, EnsureResult)
        def ensure_rotation_schedule_absent(arg: ScheduleRef) -> EnsureResult:
            backend._record("schedule.ensure_rotation_schedule_absent")
            existed = backend.schedules.pop(arg.cluster_id, None) is not None
            change = ResourceChange.DELETED if existed else ResourceChange.ABSENT
            return EnsureResult(
                outcomes=[ResourceOutcome(kind="schedule", name=f"cert-rotation/{arg.cluster_id}", change=change)]
            )

        def observed(backend_name: Backend, missing: set[str], extra: set[str]) -> DriftReport:
            items = [DriftItem(kind=DriftKind.MISSING, object=o) for o in sorted(missing)]
            return DriftReport(
                backend=backend_name, items=items + [DriftItem(kind=DriftKind.EXTRA, object=o) for o in sorted(extra)]
            )

        @defn(f"{provider}.observe", ObserveInput, DriftReport)
        def observe_provider(arg: ObserveInput) -> DriftReport:
            backend._record(f"{provider}.observe")
            expected = {f"namespace/tenant-{arg.spec.id}", "service/api", "ingress/api"}
            expected |= {f"deployment/{n}" for n in arg.nodes}
            with backend.lock:
                have = {o for o in backend.objects if not o.startswith("secret/")}
            return observed(Backend.PROVIDER, expected - have, have - expected)

        @defn("pki.observe", ObserveInput, DriftReport)
        def observe_pki(arg: ObserveInput) -> DriftReport:
            backend._record("pki.observe")
            expected = {f"secret/cert-{r.name}" for r in certificate_requests(arg.spec, list(arg.nodes))}
            have = {f"secret/cert-{name}" for name in backend.stored_key_pairs()}
            mount = set() if arg.spec.id in backend.pki_mounts else {f"vault:mount/pki/{arg.spec.id}"}
            return observed(Backend.VAULT, (expected - have) | mount, have - expected)

        @defn("schedule.observe", ObserveInput, DriftReport)
        def observe_schedule(arg: ObserveInput) -> DriftReport:
            backend._record("schedule.observe")
            missing = set() if arg.spec.id in backend.schedules else {f"schedule/cert-rotation/{arg.spec.id}"}
            return observed(Backend.SCHEDULE, missing, set())

        return [
            observe_provider,
            observe_pki,
            observe_schedule,
            ensure_ca,
            ensure_roles,
            ensure_policy,
            ensure_certificates,
            ensure_certificates_absent,
            ensure_node_certificates_absent,
            revoke_certificates,
            revoke_unheld_certificates,
            ensure_pki_absent,
            ensure_foundation,
            ensure_foundation_absent,
            ensure_endpoint,
            ensure_endpoint_absent,
            ensure_node,
            ensure_node_absent,
            restart_node,
            wait_nodes_ready,
            list_nodes,
            check_health,
            list_resources,
            ensure_rotation_schedule,
            ensure_rotation_schedule_absent,
        ]
