"""The provider contract: what every infrastructure provider (KVM-in-Kubernetes, AWS) brings.

The runbooks are written once, against the operations of ``models.provider.ProviderOp``; a
provider is a class with one method per operation, taking and returning the models of
``models.provider``. Besides the operations a provider brings three things the rest of the worker
needs and must not guess:

- ``key_pairs``: where its clusters' key pairs are stored (the PKI activities write there, and the
  tenant API client reads the admin pair from there): host Secrets for KVM, Secrets Manager for AWS;
- ``tenant_admin_credentials``: how the tenant API's admin credentials are obtained;
- ``simulated_nodes`` (local stack only): the one hook through which both providers tell a stand-in
  for the kubelets that a node was ensured or removed, since nothing real joins the tenant API there.

``provider_activities`` turns a provider object into its Temporal activities: it derives every name
(``<provider>.<operation>``, the names recorded histories hold) from the contract and refuses a
provider that lacks an operation, so a forgotten one fails the worker at start instead of leaving a
task waiting on a queue nobody serves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from temporalio import activity

from activities.providers.key_pairs import CertificateSink
from models.drift import DriftReport, ObserveInput
from models.errors import MissingPrerequisite, PermanentError
from models.provider import (
    ClusterRef,
    EnsureResult,
    NodeRef,
    NodesResult,
    ProviderOp,
    ResourceList,
    WaitNodesInput,
    provider_activity,
)
from models.spec import ClusterSpec, Provider

ADMIN_CERTIFICATE: Final = "admin"
"""The certificate (CN tenantctl-admin, O=system:masters) the tenant API activities present."""


@dataclass(frozen=True)
class AdminCredentials:
    """The tenant API's admin key pair; it exists only inside one activity call."""

    certificate: str
    private_key: str = field(repr=False)  # never in a repr, a traceback or a log line
    ca: str
    """The CA bundle the tenant API server's certificate is verified against."""
    source: str
    """Where it was read, for messages: 'secret tenant-acme/cert-admin'."""


@dataclass(frozen=True)
class HostObjectMetadata:
    """Annotations and labels a stand-in needs on a node's host object (KVM: its Deployment)."""

    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class SimulatedNodes(Protocol):
    """The local stack's stand-in for kubelets joining the tenant cluster (never set in production)."""

    def vm_metadata(self, spec: ClusterSpec, node: str, version: str) -> HostObjectMetadata:
        """What the stand-in reads from ``node``'s host object at ``version``.

        The provider writes it with the object itself, so the VM is written once instead of
        created and then patched (on the local stack's host API, that patch was a fifth of its CPU
        during 100 creates). Empty where the stand-in reads nothing from the host object."""
        ...

    def node_ensured(self, spec: ClusterSpec, node: str, version: str, vm: dict[str, Any] | None = None) -> None:
        """``node`` now exists at ``version``; its kubelet would register (again) at that version.

        ``vm`` is the node's host object as the provider just left it (KVM: the Deployment), so
        the stand-in does not read it again."""
        ...

    def node_removed(self, spec: ClusterSpec, node: str) -> None:
        """``node`` is gone; its Node leaves the tenant cluster."""
        ...


class InfrastructureProvider(Protocol):
    """One provider: the operations the runbooks call, and what it brings besides them."""

    @property
    def provider(self) -> Provider:
        """Which ``spec.provider`` this serves; its activities are named ``<provider>.<op>``."""
        ...

    @property
    def key_pairs(self) -> CertificateSink:
        """Where this provider's clusters' key pairs are stored."""
        ...

    def tenant_admin_credentials(self, spec: ClusterSpec) -> AdminCredentials:
        """The admin key pair of the cluster's tenant API, read where this provider stores it."""
        ...

    # --- the operations (one per ProviderOp, same names) -------------------------------------------
    def ensure_foundation(self, input: ClusterRef) -> EnsureResult: ...
    def ensure_foundation_absent(self, input: ClusterRef) -> EnsureResult: ...
    def ensure_endpoint(self, input: ClusterRef) -> EnsureResult: ...
    def ensure_endpoint_absent(self, input: ClusterRef) -> EnsureResult: ...
    def ensure_node(self, input: NodeRef) -> EnsureResult: ...
    def ensure_node_absent(self, input: NodeRef) -> EnsureResult: ...
    def wait_nodes_ready(self, input: WaitNodesInput) -> NodesResult: ...
    def restart_node(self, input: NodeRef) -> EnsureResult: ...
    def list_nodes(self, input: ClusterRef) -> NodesResult: ...
    def list_resources(self, input: ClusterRef) -> ResourceList: ...
    def observe(self, input: ObserveInput) -> DriftReport: ...


BROUGHT: Final = ("provider", "key_pairs", "tenant_admin_credentials")
"""What a provider brings besides its operations (``simulated_nodes`` is optional: local stack only)."""


class ProviderContractError(TypeError):
    """A provider object does not fulfil the contract (raised at worker start, never in an activity)."""


def missing_members(candidate: object) -> list[str]:
    """What ``candidate`` lacks of the contract: operations first, then what it brings."""
    missing = [op.value for op in ProviderOp if not callable(getattr(candidate, op.value, None))]
    return missing + [name for name in BROUGHT if getattr(candidate, name, None) is None]


def provider_activities(candidate: InfrastructureProvider) -> list[Callable[..., Any]]:
    """The activities of one provider, one per operation, named ``<provider>.<operation>``."""
    missing = missing_members(candidate)
    if missing:
        name = getattr(candidate, "provider", None) or type(candidate).__name__
        raise ProviderContractError(f"provider {name} does not implement {', '.join(missing)} of the provider contract")
    return [_as_activity(getattr(candidate, op.value), provider_activity(candidate.provider, op)) for op in ProviderOp]


def _as_activity(method: Callable[[Any], Any], name: str) -> Callable[..., Any]:
    """A sync activity named ``name`` that calls the bound ``method`` (its type hints are kept, so
    the data converter still turns the input into the model the method takes)."""

    @functools.wraps(method)
    def run(input: Any) -> Any:
        return method(input)

    return activity.defn(name=name)(run)


class KeyPairStores(Protocol):
    """Where the clusters of each provider keep their key pairs (what the PKI activities need)."""

    def key_pairs(self, provider: Provider) -> CertificateSink: ...


class Providers:
    """The providers a worker serves, by ``spec.provider``."""

    def __init__(self, providers: Iterable[InfrastructureProvider]) -> None:
        self._by_name: dict[Provider, InfrastructureProvider] = {}
        for candidate in providers:
            missing = missing_members(candidate)
            if missing:
                raise ProviderContractError(
                    f"{type(candidate).__name__} does not implement {', '.join(missing)} of the provider contract"
                )
            if candidate.provider in self._by_name:
                raise ProviderContractError(f"two providers for {candidate.provider.value!r}")
            self._by_name[candidate.provider] = candidate

    def __iter__(self) -> Iterator[InfrastructureProvider]:
        return iter(self._by_name.values())

    def of(self, provider: Provider) -> InfrastructureProvider:
        found = self._by_name.get(provider)
        if found is None:
            raise PermanentError(f"this worker serves no provider {provider.value!r}")
        return found

    def key_pairs(self, provider: Provider) -> CertificateSink:
        """Where clusters of ``provider`` keep their key pairs (the PKI activities write there)."""
        return self.of(provider).key_pairs

    def tenant_admin_credentials(self, spec: ClusterSpec) -> AdminCredentials:
        return self.of(spec.provider).tenant_admin_credentials(spec)

    def activities(self) -> list[Callable[..., Any]]:
        return [fn for candidate in self for fn in provider_activities(candidate)]


def admin_credentials_from(key_pairs: CertificateSink, spec: ClusterSpec) -> AdminCredentials:
    """The admin key pair as ``key_pairs`` stores it; a clear error when it was never issued."""
    where = key_pairs.destination(spec.id, ADMIN_CERTIFICATE)
    stored = key_pairs.read_key_pair(spec.id, ADMIN_CERTIFICATE)
    if stored is None:
        raise MissingPrerequisite(
            f"{where} does not exist: the tenant API of {spec.id} cannot be reached as its admin; "
            "rotate the cluster's certificates to issue the admin key pair again"
        )
    parts = {"certificate": stored.certificate, "private key": stored.private_key, "CA": stored.ca_chain}
    missing = [part for part, value in parts.items() if not value]
    if missing:
        raise MissingPrerequisite(f"{where} lacks its {', '.join(missing)}: not a usable admin key pair")
    return AdminCredentials(
        certificate=stored.certificate, private_key=stored.private_key, ca=stored.ca_chain, source=where
    )
