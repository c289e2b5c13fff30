"""``tenantctl apply`` end to end on AWS (moto on the real local stack): 3 -> 5 -> 2 workers; a
version change in the file runs an upgrade whose replaced workers leave no Secrets Manager entry
and no unrevoked leaf behind; ``--dry-run``, an unchanged file and an immutable field (region,
zones) change nothing. "Nothing" is counted: every tagged AWS resource by kind, the instance ids,
the Secrets Manager entries, the cluster's Vault mount and roles, the unrevoked node leaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hvac
import pytest

from models.naming import NODE_LABEL, VERSION_LABEL
from models.pki import pki_mount
from models.spec import ClusterSpec
from tests.aws_inventory import counts, everything, tags_of
from tests.e2e.conftest import Stack, WorkerProcess, root_settings, write_spec
from tests.e2e.test_apply_kvm import valid_worker_leaves, with_workers
from tests.e2e.test_aws_lifecycle import aws_spec, stack_aws
from worker.clients import AwsClients, vault_client

pytestmark = pytest.mark.stack

PATCH = "1.32.5"


def snapshot(stack: Stack, aws: AwsClients, spec: ClusterSpec) -> dict[str, Any]:
    """Everything apply could change, as counted from outside the product."""
    found = everything(aws, spec)
    root: hvac.Client = vault_client(root_settings(stack))
    mount = pki_mount(spec.id)
    mounts = {m.rstrip("/") for m in root.sys.list_mounted_secrets_engines()["data"] if spec.id in m}
    return {
        "resources": counts(found),
        "instances": {tags_of(i)[NODE_LABEL]: i["InstanceId"] for i in found["instance"]},
        "secrets": sorted(s["Name"] for s in found["secret"]),
        "vault mounts": mounts,
        "vault roles": sorted(root.list(f"{mount}/roles")["data"]["keys"]),
        "valid worker leaves": valid_worker_leaves(stack, spec),
    }


def worker_secrets(state: dict[str, Any], spec: ClusterSpec) -> set[str]:
    prefix = f"tenantctl/{spec.id}/node-worker-"
    return {s.removeprefix(f"tenantctl/{spec.id}/") for s in state["secrets"] if s.startswith(prefix)}


def workers_of(state: dict[str, Any]) -> set[str]:
    return {n for n in state["instances"] if n.startswith("worker-")}


async def test_apply_on_aws_scales_upgrades_and_refuses_what_cannot_change(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    aws = stack_aws(local_stack)
    spec = with_workers(aws_spec(masters={"count": 1}), 3)
    assert "creating cluster" in local_stack.cli("apply", "-f", str(write_spec(tmp_path, spec)), "--watch").stdout
    three = snapshot(local_stack, aws, spec)
    assert workers_of(three) == {"worker-0", "worker-1", "worker-2"}
    assert worker_secrets(three, spec) == {f"node-worker-{i}" for i in range(3)}
    assert three["valid worker leaves"] == {f"system:node:worker-{i}" for i in range(3)}
    assert three["vault mounts"] == {pki_mount(spec.id)} and three["vault roles"]

    # an unchanged file and a dry run change nothing
    unchanged = local_stack.cli("apply", "-f", str(write_spec(tmp_path, spec)))
    assert "no changes" in unchanged.stdout
    assert snapshot(local_stack, aws, spec) == three
    five = with_workers(spec, 5)
    dry = local_stack.cli("apply", "-f", str(write_spec(tmp_path, five)), "--dry-run")
    assert "workers.count: 3 -> 5" in dry.stdout and "scale workers 3 -> 5" in dry.stdout
    assert snapshot(local_stack, aws, spec) == three

    # immutable fields: refused before anything starts, each named with its old and new value
    moved = spec.model_copy(
        update={"aws": spec.aws.model_copy(update={"region": "eu-west-1", "availability_zones": ["eu-west-1a"]})}
    )
    refused = local_stack.cli("apply", "-f", str(write_spec(tmp_path, moved)), check=False)
    assert refused.returncode != 0, refused.stdout
    assert "aws.region: eu-central-1 -> eu-west-1: cannot change on a live cluster" in refused.stderr
    assert "aws.availability_zones: ['eu-central-1a', 'eu-central-1b', 'eu-central-1c'] -> ['eu-west-1a']" in (
        refused.stderr
    )
    assert snapshot(local_stack, aws, spec) == three

    # 3 -> 5 -> 2
    local_stack.cli("apply", "-f", str(write_spec(tmp_path, five)))
    after_five = snapshot(local_stack, aws, spec)
    assert workers_of(after_five) == {f"worker-{i}" for i in range(5)}
    assert worker_secrets(after_five, spec) == {f"node-worker-{i}" for i in range(5)}
    assert after_five["valid worker leaves"] == {f"system:node:worker-{i}" for i in range(5)}
    for node, instance in three["instances"].items():  # the ones there before stay as they were
        assert after_five["instances"][node] == instance

    two = with_workers(spec, 2)
    local_stack.cli("apply", "-f", str(write_spec(tmp_path, two)))
    after_two = snapshot(local_stack, aws, spec)
    assert workers_of(after_two) == {"worker-0", "worker-1"}  # the newest went first
    assert worker_secrets(after_two, spec) == {"node-worker-0", "node-worker-1"}
    assert after_two["valid worker leaves"] == {"system:node:worker-0", "system:node:worker-1"}  # others revoked
    assert after_two["resources"]["instance"] == 3 and after_two["resources"]["volume"] == 3

    # a version change in the file runs an upgrade; the replaced workers leave nothing valid behind
    newer = two.model_copy(update={"kubernetes_version": PATCH})
    upgraded = local_stack.cli("apply", "-f", str(write_spec(tmp_path, newer)), timeout=600)
    assert f"kubernetes_version: {spec.kubernetes_version} -> {PATCH}" in upgraded.stdout
    assert f"upgraded {spec.id} to Kubernetes {PATCH}" in upgraded.stdout
    after_upgrade = snapshot(local_stack, aws, spec)
    new_workers = workers_of(after_upgrade)
    assert len(new_workers) == 2 and not new_workers & {"worker-0", "worker-1"}, new_workers
    found = everything(aws, spec)
    assert {tags_of(i)[VERSION_LABEL] for i in found["instance"]} == {PATCH}
    assert worker_secrets(after_upgrade, spec) == {f"node-{w}" for w in new_workers}  # the upgrade leak
    assert after_upgrade["valid worker leaves"] == {f"system:node:{w}" for w in new_workers}
    assert "no changes" in local_stack.cli("apply", "-f", str(write_spec(tmp_path, newer))).stdout

    local_stack.cli("delete", spec.id, timeout=600)
    assert counts(everything(aws, spec)).get("instance", 0) == 0
