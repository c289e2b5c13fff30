"""Activities replaced by name, for workflow-logic tests (the real ones are tested against their
backends in tests/activities). Each fake records its calls so tests can check order and count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity

from models.pki import CaInput, CaResult, CertificateRecord, CertificatesResult, EnsureCertificatesInput
from models.provider import (
    ClusterRef,
    EnsureResult,
    NodeObservation,
    NodeRef,
    NodesResult,
    WaitNodesInput,
)
from models.schedules import RotationScheduleInput, RotationScheduleResult


@dataclass
class FakeBackends:
    """In-memory stand-ins with the real activity names; ``calls`` lists (name, detail) in order."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)
    serial: int = 0
    schedules: dict[str, timedelta] = field(default_factory=dict)

    def _record(self, name: str, detail: str = "") -> None:
        self.calls.append((name, detail))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    def activities(self, provider: str = "kvm") -> list[Callable[..., Any]]:
        backend = self

        @activity.defn(name="pki.ensure_ca")
        def ensure_ca(arg: CaInput) -> CaResult:
            backend._record("pki.ensure_ca", arg.spec.id)
            return CaResult(
                mount=f"pki/{arg.spec.id}",
                issuer_id="issuer-1",
                common_name=f"{arg.spec.id} root CA",
                not_after=datetime(2036, 1, 1, tzinfo=UTC),
                created=True,
            )

        @activity.defn(name="pki.ensure_roles")
        def ensure_roles(arg: ClusterRef) -> EnsureResult:
            backend._record("pki.ensure_roles")
            return EnsureResult()

        @activity.defn(name="pki.ensure_policy")
        def ensure_policy(arg: ClusterRef) -> EnsureResult:
            backend._record("pki.ensure_policy")
            return EnsureResult()

        @activity.defn(name="pki.ensure_certificates")
        def ensure_certificates(arg: EnsureCertificatesInput) -> CertificatesResult:
            backend._record("pki.ensure_certificates", str(len(arg.requests)))
            now = datetime.now(UTC)
            records = []
            for request in arg.requests:
                backend.serial += 1
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

        def provider_op(op: str, arg_type: type) -> Callable[..., Any]:
            def run(arg: Any) -> EnsureResult:
                detail = getattr(arg, "node", "")
                backend._record(f"{provider}.{op}", detail)
                return EnsureResult()

            # typed before decoration, so the converter hands the activity a model, not a dict
            run.__annotations__ = {"arg": arg_type, "return": EnsureResult}
            return activity.defn(name=f"{provider}.{op}")(run)

        @activity.defn(name=f"{provider}.wait_nodes_ready")
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

        @activity.defn(name="schedule.ensure_rotation_schedule")
        def ensure_rotation_schedule(arg: RotationScheduleInput) -> RotationScheduleResult:
            backend._record("schedule.ensure_rotation_schedule", str(arg.spec.certificates.rotation_interval))
            backend.schedules[arg.spec.id] = arg.spec.certificates.rotation_interval
            return RotationScheduleResult(
                schedule_id=f"cert-rotation/{arg.spec.id}",
                interval=arg.spec.certificates.rotation_interval,
                next_runs=[datetime.now(UTC) + arg.spec.certificates.rotation_interval],
            )

        return [
            ensure_rotation_schedule,
            ensure_ca,
            ensure_roles,
            ensure_policy,
            ensure_certificates,
            provider_op("ensure_foundation", ClusterRef),
            provider_op("ensure_endpoint", ClusterRef),
            provider_op("ensure_node", NodeRef),
            wait_nodes_ready,
        ]


def in_days(days: float) -> timedelta:
    return timedelta(days=days)
