"""A simulated PKI and node fleet for rotation logic tests on the time-skipping server.

Unlike ``FakeBackends`` (which issues everything every time, on the real clock), ``SimulatedPki``
keeps each leaf's serial, issuer and lifetime, re-issues only what is due, and reads *simulated*
time (the activity's scheduled time follows the test server's clock; ``datetime.now()`` does not).
It also models what each node has *loaded* (its leaves and the CAs it trusts, as of its last
restart), and after every call checks the property a CA rotation must never break: every leaf a
node presents verifies against the trust of every other node (``violations`` collects breaches).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.errors import MissingPrerequisite
from models.pki import (
    CaInput,
    CaResult,
    CertificateRecord,
    CertificatesResult,
    EnsureCertificatesInput,
    IssuerResult,
    NextIssuerInput,
    SetDefaultIssuerInput,
    SignedUserCertificate,
    SignUserCsrInput,
    TrustBundleInput,
    TrustBundleResult,
    certificate_requests,
    next_issuer_name,
)
from models.provider import (
    EnsureResult,
    NodeObservation,
    NodeRef,
    NodesResult,
    ResourceChange,
    ResourceOutcome,
    WaitNodesInput,
)
from models.schedules import RotationScheduleInput, RotationScheduleResult
from models.spec import ClusterSpec
from tests.fakes import FakeBackends, typed_activity


def simulated_now() -> datetime:
    """The test server's time: when this attempt was scheduled (it does not move while it runs)."""
    return activity.info().current_attempt_scheduled_time


@dataclass
class Loaded:
    """What a node runs with since its last (re)start: its leaves' issuers and the CAs it trusts."""

    leaf_issuers: set[str]
    trust: set[str]


@dataclass
class SimulatedPki(FakeBackends):
    leaves: dict[str, CertificateRecord] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)  # name -> issuer ids in its ca.crt
    issuers: dict[str, str] = field(default_factory=dict)  # issuer id -> name
    default_issuer: str = ""
    bundle: list[str] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    loaded: dict[str, Loaded] = field(default_factory=dict)
    restarts: list[tuple[str, str, datetime]] = field(default_factory=list)  # node, token, when
    issued_at: dict[str, list[tuple[str, datetime]]] = field(default_factory=dict)  # name -> (serial, when)
    violations: list[str] = field(default_factory=list)
    hold_ready: threading.Event | None = None
    """When set to an unset Event, ``wait_nodes_ready`` blocks (heartbeating) until it is set."""
    fail_once: dict[str, BaseException] = field(default_factory=dict)
    """'<activity name>:<detail>[#n]' -> error raised by the first (or n-th) such call only: an interruption."""
    seen: dict[str, int] = field(default_factory=dict)
    schedule_paused: bool = False

    # --- the model ---------------------------------------------------------------------------------
    def _consumed(self, spec: ClusterSpec, node: str) -> list[str]:
        return [r.name for r in certificate_requests(spec) if node in r.consumers]

    def _load(self, spec: ClusterSpec, node: str) -> None:
        names = [n for n in self._consumed(spec, node) if n in self.leaves]
        trust = set().union(*(set(self.chains.get(n, [])) for n in names)) if names else set()
        self.loaded[node] = Loaded(leaf_issuers={self.leaves[n].issuer_id for n in names}, trust=trust)

    def check(self, when: str) -> None:
        """Every node's leaves verify against every node's trust, and every stored leaf against its ca.crt."""
        for a, left in self.loaded.items():
            for b, right in self.loaded.items():
                if not left.leaf_issuers <= right.trust:
                    self.violations.append(f"{when}: {a} presents {left.leaf_issuers}, {b} trusts {right.trust}")
        for name, record in self.leaves.items():
            if record.issuer_id not in self.chains.get(name, []):
                self.violations.append(f"{when}: stored {name} from {record.issuer_id}, ca.crt {self.chains.get(name)}")

    def _maybe_fail(self, name: str, detail: str) -> None:
        key = f"{name}:{detail}"
        with self.lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            failure = self.fail_once.pop(key, None) or self.fail_once.pop(f"{key}#{self.seen[key]}", None)
        if failure is not None:
            raise failure

    # --- activities ---------------------------------------------------------------------------------
    def stored_key_pairs(self) -> set[str]:
        return set(self.leaves)  # the drift check's view of the simulated key-pair store

    def activities(self, provider: str = "kvm") -> list[Callable[..., Any]]:
        replaced: dict[str, Callable[..., Any]] = {}
        backend = self

        def defn(name: str, arg_type: type, result_type: type) -> Callable[[Callable[..., Any]], Any]:
            def wrap(fn: Callable[..., Any]) -> Any:
                replaced[name] = typed_activity(name, arg_type, result_type)(fn)
                return replaced[name]

            return wrap

        @defn("pki.ensure_ca", CaInput, CaResult)
        def ensure_ca(arg: CaInput) -> CaResult:
            backend._record("pki.ensure_ca", arg.spec.id)
            backend.pki_mounts.add(arg.spec.id)
            if not backend.default_issuer:
                backend.issuers["issuer-1"] = "root-1"
                backend.default_issuer = "issuer-1"
            return CaResult(
                mount=f"pki/{arg.spec.id}",
                issuer_id=backend.default_issuer,
                common_name=f"{arg.spec.id} root CA",
                not_after=simulated_now() + arg.spec.certificates.ca_ttl,
                created=True,
            )

        @defn("pki.ensure_certificates", EnsureCertificatesInput, CertificatesResult)
        def ensure_certificates(arg: EnsureCertificatesInput) -> CertificatesResult:
            backend._record("pki.ensure_certificates", f"{len(arg.requests)} force={arg.force}")
            now = simulated_now()
            issuer = backend.default_issuer
            if backend.bundle is not None and issuer not in backend.bundle:
                raise ApplicationError(
                    "default issuer not in the bundle", type=MissingPrerequisite.__name__, non_retryable=True
                )
            issued, kept = [], []
            with backend.lock:
                for request in arg.requests:
                    old = backend.leaves.get(request.name)
                    due = old is None or arg.force or old.issuer_id != issuer or old.not_after - now <= arg.renew_before
                    if not due:
                        kept.append(request.name)
                        continue
                    backend.serial += 1
                    record = CertificateRecord(
                        name=request.name,
                        common_name=request.common_name,
                        serial=f"{backend.serial:04x}",
                        not_before=now,
                        not_after=now + arg.spec.certificates.ttl,
                        issuer_id=issuer,
                        destination=f"secret/cert-{request.name}",
                    )
                    backend.leaves[request.name] = record
                    backend.chains[request.name] = list(backend.bundle or [issuer])
                    backend.issued_at.setdefault(request.name, []).append((record.serial, now))
                    backend.objects.add(f"secret/cert-{request.name}")
                    issued.append(request.name)
                records = [backend.leaves[r.name] for r in arg.requests]
                backend.check("ensure_certificates")
            return CertificatesResult(records=records, issued=issued, kept=kept)

        @defn("pki.ensure_next_issuer", NextIssuerInput, IssuerResult)
        def ensure_next_issuer(arg: NextIssuerInput) -> IssuerResult:
            backend._record("pki.ensure_next_issuer", arg.after_issuer_id)
            after = arg.after_issuer_id or backend.default_issuer
            name = next_issuer_name(backend.issuers[after])
            found = [i for i, n in backend.issuers.items() if n == name]
            created = not found
            issuer_id = found[0] if found else f"issuer-{len(backend.issuers) + 1}"
            backend.issuers[issuer_id] = name
            return IssuerResult(
                issuer_id=issuer_id,
                name=name,
                common_name=f"{arg.spec.id} root CA ({name})",
                not_after=simulated_now() + arg.spec.certificates.ca_ttl,
                is_default=issuer_id == backend.default_issuer,
                created=created,
                previous_issuer_id=after,
                published_trust=list(backend.bundle or []),
            )

        @defn("pki.set_default_issuer", SetDefaultIssuerInput, EnsureResult)
        def set_default_issuer(arg: SetDefaultIssuerInput) -> EnsureResult:
            backend._record("pki.set_default_issuer", arg.issuer_id)
            change = ResourceChange.UNCHANGED if backend.default_issuer == arg.issuer_id else ResourceChange.UPDATED
            backend.default_issuer = arg.issuer_id
            return EnsureResult(
                outcomes=[ResourceOutcome(kind="pki-default-issuer", name=arg.issuer_id, change=change)]
            )

        @defn("pki.publish_trust_bundle", TrustBundleInput, TrustBundleResult)
        def publish_trust_bundle(arg: TrustBundleInput) -> TrustBundleResult:
            backend._record("pki.publish_trust_bundle", ",".join(arg.issuer_ids))
            backend._maybe_fail("pki.publish_trust_bundle", ",".join(arg.issuer_ids))
            with backend.lock:
                untrusted = [n for n, r in backend.leaves.items() if r.issuer_id not in arg.issuer_ids]
                if untrusted:
                    raise ApplicationError(
                        f"would not verify {untrusted}", type=MissingPrerequisite.__name__, non_retryable=True
                    )
                backend.bundle = list(arg.issuer_ids)
                for name in backend.leaves:
                    backend.chains[name] = list(arg.issuer_ids)
                backend.check("publish_trust_bundle")
            return TrustBundleResult(issuer_ids=arg.issuer_ids, fingerprints=arg.issuer_ids)

        @defn("pki.sign_user_csr", SignUserCsrInput, SignedUserCertificate)
        def sign_user_csr(arg: SignUserCsrInput) -> SignedUserCertificate:
            backend._record("pki.sign_user_csr")
            ttl = min(arg.ttl, arg.spec.certificates.ttl)
            return SignedUserCertificate(
                certificate_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                ca_bundle_pem="",
                serial="ff",
                not_after=simulated_now() + ttl,
                common_name="user",
                issuer_id=backend.default_issuer,
                ttl_capped=arg.ttl > ttl,
            )

        @defn(f"{provider}.ensure_node", NodeRef, EnsureResult)
        def ensure_node(arg: NodeRef) -> EnsureResult:
            backend._record(f"{provider}.ensure_node", arg.node)
            backend.node_versions[arg.node] = arg.kubernetes_version
            with backend.lock:
                backend._load(arg.spec, arg.node)  # a new VM boots with what is stored now
            return backend._add(f"deployment/{arg.node}")

        @defn(f"{provider}.restart_node", NodeRef, EnsureResult)
        def restart_node(arg: NodeRef) -> EnsureResult:
            backend._record(f"{provider}.restart_node", f"{arg.node}:{arg.restart_token}")
            with backend.lock:
                if backend.tokens.get(arg.node) == arg.restart_token:
                    change = ResourceChange.UNCHANGED
                else:
                    backend.tokens[arg.node] = arg.restart_token
                    backend.restarts.append((arg.node, arg.restart_token, simulated_now()))
                    backend._load(arg.spec, arg.node)
                    change = ResourceChange.UPDATED
                backend.check(f"restart {arg.node}")
            return EnsureResult(outcomes=[ResourceOutcome(kind="deployment", name=arg.node, change=change)])

        @defn(f"{provider}.wait_nodes_ready", WaitNodesInput, NodesResult)
        def wait_nodes_ready(arg: WaitNodesInput) -> NodesResult:
            backend._record(f"{provider}.wait_nodes_ready", ",".join(arg.nodes))
            backend._maybe_fail(f"{provider}.wait_nodes_ready", ",".join(arg.nodes))
            gate = backend.hold_ready
            while gate is not None and not gate.wait(0.1):
                activity.heartbeat("held by the test")
            return _nodes_result(arg)

        @defn("schedule.ensure_rotation_schedule", RotationScheduleInput, RotationScheduleResult)
        def ensure_rotation_schedule(arg: RotationScheduleInput) -> RotationScheduleResult:
            interval = arg.spec.certificates.rotation_interval
            backend._record("schedule.ensure_rotation_schedule", str(interval))
            backend.schedules[arg.spec.id] = interval
            if arg.paused is not None:
                backend.schedule_paused = arg.paused
            return RotationScheduleResult(
                schedule_id=f"cert-rotation/{arg.spec.id}",
                interval=interval,
                paused=backend.schedule_paused,
                next_runs=[simulated_now() + interval],
            )

        base = [fn for fn in super().activities(provider) if _name(fn) not in replaced]
        return base + list(replaced.values())


def _name(fn: Callable[..., Any]) -> str:
    definition = activity._Definition.from_callable(fn)
    assert definition is not None and definition.name is not None
    return definition.name


def _nodes_result(arg: WaitNodesInput) -> NodesResult:
    return NodesResult(
        nodes=[
            NodeObservation(
                name=n, role=n.rsplit("-", 1)[0], kubernetes_version=arg.kubernetes_version or "", ready=True
            )
            for n in arg.nodes
        ]
    )


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll (real time) until ``predicate`` holds, e.g. until a worker thread reached an activity."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def remaining(records: dict[str, CertificateRecord], now: datetime) -> timedelta:
    """Lifetime left of the first leaf to expire."""
    return min(r.not_after for r in records.values()) - now
