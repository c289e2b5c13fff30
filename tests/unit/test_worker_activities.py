"""The worker registers every activity and workflow the runbooks call by name.

Workflows call activities by name (``workflows.activity_stubs``) and the entity starts its
children by type name, so a forgotten registration shows only when a workflow runs: a task
that waits forever on a queue nobody serves. This checks the wiring without any server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

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
    names = set()
    for fn in build_activities(settings, temporal):
        definition = activity._Definition.from_callable(fn)
        assert definition is not None and definition.name
        names.add(definition.name)
    return names


def test_every_activity_a_workflow_calls_is_registered(tmp_path: Path) -> None:
    source = Path(activity_stubs.__file__).read_text()
    called = set(re.findall(r'"((?:pki|schedule|entity)\.[a-z_]+)"', source))
    called |= {provider_activity(Provider.KVM, op) for op in ProviderOp}
    assert {"pki.ensure_next_issuer", "pki.publish_trust_bundle", "entity.request_rotation"} <= called
    missing = called - registered_activities(tmp_path)
    assert not missing, f"activities called by workflows but not registered: {sorted(missing)}"


def test_every_child_workflow_the_entity_starts_is_registered() -> None:
    registered = {workflow._Definition.from_class(w).name for w in WORKFLOWS}  # type: ignore[union-attr]
    children = {value for name, value in vars(entity).items() if name.endswith("_WORKFLOW") and isinstance(value, str)}
    assert {"RotateCertificates", "RotateCa", "ProvisionCluster", "TeardownCluster"} <= children
    assert children <= registered, f"child workflows not registered: {sorted(children - registered)}"
    assert "ScheduledRotation" in registered  # started by the schedule, not by the entity
