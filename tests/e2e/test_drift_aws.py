"""Issue 12 drift on AWS (moto on the real local stack), from outside the product as an operator's
colleague would cause it: a worker instance terminated, a Secrets Manager key pair deleted, a
security-group rule revoked. ``tenantctl reconcile --dry-run`` reports each and changes nothing,
``tenantctl reconcile`` restores each; then the same three are broken again and the entity's own
periodic check (every minute here) restores them; an extra tagged instance is reported, never
deleted; a check of the repaired cluster finds it in sync."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from activities.aws import network, resources
from models.naming import CLUSTER_LABEL, NODE_LABEL
from models.spec import ClusterSpec
from tests.aws_inventory import everything, tags_of
from tests.e2e.conftest import Stack, WorkerProcess, stack_settings, write_spec
from tests.e2e.test_aws_lifecycle import aws_spec, stack_aws
from tests.e2e.test_drift_kvm import last_in_place_check_seconds
from worker.clients import AwsClients, connect_temporal

pytestmark = pytest.mark.stack

SECRET = "apiserver"
RULE_FIELDS = ("IpProtocol", "FromPort", "ToPort", "IpRanges")


def secret_names(aws: AwsClients, spec: ClusterSpec) -> set[str]:
    return {s["Name"].removeprefix(f"tenantctl/{spec.id}/") for s in everything(aws, spec)["secret"]}


def group_of(aws: AwsClients, spec: ClusterSpec) -> dict[str, Any]:
    name = resources.security_group_name(spec, network.Part.WORKERS_GROUP)
    groups = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": f"tag:{CLUSTER_LABEL}", "Values": [spec.id]}, {"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]
    assert len(groups) == 1, groups
    return groups[0]


def rules_of(group: dict[str, Any]) -> set[str]:
    """Each ingress permission as one comparable line (protocol, ports, sources)."""
    return {
        json.dumps({k: v for k, v in p.items() if k in RULE_FIELDS}, sort_keys=True)
        + json.dumps(sorted(g["GroupId"] for g in p.get("UserIdGroupPairs", [])))
        for p in group["IpPermissions"]
    }


def break_three_things(aws: AwsClients, spec: ClusterSpec) -> tuple[str, str]:
    """Terminate worker-0's instance, delete a key pair, revoke a rule: returns (instance id, group name)."""
    ec2 = aws.client("ec2")
    instance = next(i for i in everything(aws, spec)["instance"] if tags_of(i)[NODE_LABEL] == "worker-0")
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    aws.client("secretsmanager").delete_secret(
        SecretId=f"tenantctl/{spec.id}/{SECRET}", ForceDeleteWithoutRecovery=True
    )
    group = group_of(aws, spec)
    revoked = group["IpPermissions"][0]
    ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[revoked])
    assert len(rules_of(group_of(aws, spec))) == len(rules_of(group)) - 1
    return str(instance["InstanceId"]), str(group["GroupName"])


def assert_restored(aws: AwsClients, spec: ClusterSpec, before: dict[str, Any], terminated: str) -> None:
    after = everything(aws, spec)
    by_node = {tags_of(i)[NODE_LABEL]: i["InstanceId"] for i in after["instance"]}
    assert set(by_node) == set(before["nodes"]), by_node  # every node has one live instance again
    assert by_node["worker-0"] != terminated
    assert {n: i for n, i in by_node.items() if n != "worker-0"} == {
        n: i for n, i in before["nodes"].items() if n != "worker-0"
    }  # nothing else was replaced
    assert SECRET in secret_names(aws, spec)
    assert rules_of(group_of(aws, spec)) == before["rules"]


def observed(aws: AwsClients, spec: ClusterSpec) -> dict[str, Any]:
    return {
        "nodes": {tags_of(i)[NODE_LABEL]: i["InstanceId"] for i in everything(aws, spec)["instance"]},
        "rules": rules_of(group_of(aws, spec)),
        "secrets": secret_names(aws, spec),
    }


def wait_until(predicate: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def test_aws_drift_is_reported_repaired_on_demand_and_by_the_periodic_check(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    aws = stack_aws(local_stack)
    spec = aws_spec(masters={"count": 1}, workers={"count": 2, "instance_type": "m5.xlarge"})
    local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch")
    assert "in sync: nothing differs" in local_stack.cli("reconcile", spec.id).stdout
    before = observed(aws, spec)

    # --- on demand ------------------------------------------------------------------------------
    terminated, group = break_three_things(aws, spec)
    broken = observed(aws, spec)
    dry = local_stack.cli("reconcile", spec.id, "--dry-run").stdout
    assert "missing  ec2:instance/worker-0" in dry, dry
    assert f"tenantctl/{spec.id}/{SECRET}" in dry, dry
    assert f"ec2:security-group/{group} (missing rules:" in dry, dry
    assert "dry run: nothing changed" in dry
    assert observed(aws, spec) == broken

    repaired = local_stack.cli("reconcile", spec.id, timeout=600).stdout
    assert "repaired:" in repaired and "node worker-0" in repaired, repaired
    assert "aws foundation" in repaired and "key pairs (apiserver)" in repaired, repaired
    assert_restored(aws, spec, before, terminated)
    again = local_stack.cli("reconcile", spec.id).stdout
    assert "in sync: nothing differs; nothing changed, no node restarted" in again, again

    # --- an extra tagged instance is reported, and left alone ---------------------------------------
    ec2 = aws.client("ec2")
    image = everything(aws, spec)["instance"][0]["ImageId"]
    stray = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": CLUSTER_LABEL, "Value": spec.id}, {"Key": NODE_LABEL, "Value": "worker-99"}],
            }
        ],
    )["Instances"][0]["InstanceId"]
    extra = local_stack.cli("reconcile", spec.id).stdout
    assert f"extra    ec2:instance/worker-99 ({stray})" in extra, extra
    assert "1 extra object(s) reported, not deleted" in extra
    live = {i["InstanceId"] for i in everything(aws, spec)["instance"]}
    assert stray in live
    ec2.terminate_instances(InstanceIds=[stray])

    # --- the periodic check, every minute -----------------------------------------------------------
    before = observed(aws, spec)
    previous = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)["last_check"]["at"]
    local_stack.cli("reconcile", spec.id, "--every", "1m")
    started = time.monotonic()
    terminated, _ = break_three_things(aws, spec)

    def repaired_by_the_check() -> bool:
        status = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)
        check = status.get("last_check") or {}
        fresh = check.get("at") != previous  # a check after the ones asked for above
        return fresh and check.get("outcome") == "repaired" and "node worker-0" in check.get("repaired", [])

    wait_until(repaired_by_the_check, "the periodic check to repair the cluster", timeout=240)
    waited = time.monotonic() - started
    assert_restored(aws, spec, before, terminated)
    status = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)
    assert any("ec2:instance/worker-0" in d for d in status["last_check"]["drift"]), status["last_check"]

    # the next periodic check finds the repaired cluster in sync, in the entity (no child), restarting nothing
    repaired_at, operations = status["last_check"]["at"], status["operations_started"]

    def checked_again() -> bool:
        return bool(
            json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)["last_check"]["at"] != repaired_at
        )

    wait_until(checked_again, "the next periodic check", timeout=150)
    status = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)
    assert status["last_check"]["outcome"] == "in sync" and not status["last_check"]["restarted"], status["last_check"]
    assert status["operations_started"] == operations
    temporal = await connect_temporal(stack_settings(local_stack))
    in_sync = last_in_place_check_seconds(await temporal.get_workflow_handle(f"cluster/{spec.id}").fetch_history())
    local_stack.cli("reconcile", spec.id, "--pause-checks")
    local_stack.cli("delete", spec.id, timeout=600)
    print(  # noqa: T201
        f"\nAWS drift e2e: periodic check (1m) repaired 3 findings {waited:.0f}s after they were made; "
        f"an in-sync periodic check took {in_sync * 1000:.0f} ms (timer fired -> task completed)"
    )
