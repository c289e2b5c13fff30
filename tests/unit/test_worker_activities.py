"""The worker registers every activity and workflow the runbooks call by name.

Workflows call activities by name (``workflows.activity_stubs``) and the entity starts its
children by type name, so a forgotten registration shows only when a workflow runs: a task
that waits forever on a queue nobody serves. This checks the wiring without any server, for
every provider: their activities come from the provider contract, which refuses a provider that
lacks an operation.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow

from activities.providers.contract import (
    InfrastructureProvider,
    ProviderContractError,
    Providers,
    provider_activities,
)
from config.settings import Settings
from models.provider import ProviderOp, provider_activity
from models.spec import Provider
from worker.backends import build_activities
from worker.registry import WORKFLOWS
from workflows import activity_stubs
from workflows import cluster as entity


def registered_activities(tmp_path: Path) -> set[str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    settings = Settings(_env_file=None, vault_token="unused", kubeconfig=kubeconfig)
    temporal: Any = object()  # only stored by the schedule activities; nothing connects here
    names = []
    for fn in build_activities(settings, temporal):
        definition = activity._Definition.from_callable(fn)
        assert definition is not None and definition.name
        names.append(definition.name)
    assert len(names) == len(set(names)), "an activity name is registered twice"
    return set(names)


def test_every_activity_a_workflow_calls_is_registered(tmp_path: Path) -> None:
    source = Path(activity_stubs.__file__).read_text()
    called = set(re.findall(r'"((?:pki|schedule|entity|tenant)\.[a-z_]+)"', source))
    assert {"pki.ensure_next_issuer", "pki.publish_trust_bundle", "entity.request_rotation"} <= called
    missing = called - registered_activities(tmp_path)
    assert not missing, f"activities called by workflows but not registered: {sorted(missing)}"


@pytest.mark.parametrize("provider", list(Provider))
def test_every_provider_registers_every_operation(tmp_path: Path, provider: Provider) -> None:
    expected = {provider_activity(provider, op) for op in ProviderOp}
    registered = {name for name in registered_activities(tmp_path) if name.startswith(f"{provider.value}.")}
    assert registered == expected


def test_the_contract_protocol_and_the_operations_agree() -> None:
    """The Protocol's methods are exactly the operations the runbooks call (plus what a provider
    brings), each typed with the shared input and result models."""
    methods = {
        name
        for name, value in vars(InfrastructureProvider).items()
        if callable(value) and not name.startswith("_") and name != "tenant_admin_credentials"
    }
    assert methods == {op.value for op in ProviderOp}
    for op in ProviderOp:
        hints = typing.get_type_hints(getattr(InfrastructureProvider, op.value))
        assert set(hints) == {"input", "return"}


def test_a_provider_missing_an_operation_fails_at_registration(tmp_path: Path) -> None:
    class HalfAProvider:
        provider = Provider.KVM
        key_pairs = object()

        def tenant_admin_credentials(self, spec: Any) -> Any:
            raise AssertionError("not called")

        def ensure_foundation(self, input: Any) -> Any:
            raise AssertionError("not called")

    incomplete: Any = HalfAProvider()
    with pytest.raises(ProviderContractError, match="provider kvm does not implement ensure_foundation_absent"):
        provider_activities(incomplete)
    with pytest.raises(ProviderContractError, match="list_resources"):
        Providers([incomplete])


def test_a_provider_that_brings_no_key_pair_store_is_refused() -> None:
    class NoStore:
        provider = Provider.AWS

        def tenant_admin_credentials(self, spec: Any) -> Any:
            raise AssertionError("not called")

    for op in ProviderOp:
        setattr(NoStore, op.value, lambda self, input: None)
    candidate: InfrastructureProvider = NoStore()  # type: ignore[assignment]
    with pytest.raises(ProviderContractError, match="does not implement key_pairs"):
        provider_activities(candidate)


def test_every_child_workflow_the_entity_starts_is_registered() -> None:
    registered = {workflow._Definition.from_class(w).name for w in WORKFLOWS}  # type: ignore[union-attr]
    children = {value for name, value in vars(entity).items() if name.endswith("_WORKFLOW") and isinstance(value, str)}
    assert {"RotateCertificates", "RotateCa", "ProvisionCluster", "TeardownCluster"} <= children
    assert children <= registered, f"child workflows not registered: {sorted(children - registered)}"
    assert "ScheduledRotation" in registered  # started by the schedule, not by the entity
