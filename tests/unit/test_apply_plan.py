"""The plan of ``tenantctl apply``: the field diff, the refusals, the operations in a safe order."""

from __future__ import annotations

from typing import Any

from models.desired import ApplyStep, diff, plan_apply
from models.spec import ClusterSpec
from tests.specs import example


def spec(**changes: Any) -> ClusterSpec:
    return example("kvm-cluster.yaml", **changes)


def workers(count: int, base: ClusterSpec) -> dict[str, Any]:
    return {**base.workers.model_dump(), "count": count}


def test_unchanged_file_plans_nothing() -> None:
    live = spec()
    plan = plan_apply(live, spec())
    assert plan.unchanged and plan.operations == [] and plan.refusals == []


def test_scale_up_after_upgrade_scale_down_before_it() -> None:
    live = spec()
    newer = "1.32.5" if live.kubernetes_version != "1.32.5" else "1.32.6"
    up = plan_apply(live, spec(workers=workers(5, live), kubernetes_version=newer))
    assert [o.step for o in up.operations] == [ApplyStep.UPGRADE, ApplyStep.SCALE]
    assert up.operations[1].workers == 5 and up.operations[0].version == newer
    assert f"workers.count: {live.workers.count} -> 5" in [c.describe() for c in up.changes]
    down = plan_apply(live, spec(workers=workers(1, live), kubernetes_version=newer))
    assert [o.step for o in down.operations] == [ApplyStep.SCALE, ApplyStep.UPGRADE]


def test_settings_come_first() -> None:
    live = spec()
    wanted = spec(
        workers=workers(live.workers.count + 1, live),
        deletion_protection=not live.deletion_protection,
        certificates={**live.certificates.model_dump(mode="json"), "ttl": "96h"},
    )
    plan = plan_apply(live, wanted)
    assert [o.step for o in plan.operations] == [ApplyStep.CONFIGURE, ApplyStep.SCALE]
    assert "deletion protection" in plan.operations[0].description
    assert "certificate timing" in plan.operations[0].description
    assert any(c.field == "certificates.ttl" for c in plan.changes)


def test_immutable_fields_refused_each_named_with_old_and_new() -> None:
    live = spec()
    wanted = spec(
        id="other-id",
        base_domain="example.org",
        masters={**live.masters.model_dump(), "count": 1 if live.masters.count != 1 else 3},
        networking={"pod_cidr": "10.9.0.0/16", "service_cidr": live.networking.service_cidr},
        workers=workers(live.workers.count + 1, live),
    )
    plan = plan_apply(live, wanted)
    assert plan.operations == []  # nothing starts
    text = "\n".join(plan.refusals)
    assert f"id: {live.id} -> other-id" in text
    assert f"base_domain: {live.base_domain} -> example.org" in text
    assert "masters.count" in text and f"networking.pod_cidr: {live.networking.pod_cidr} -> 10.9.0.0/16" in text
    assert "workers.count" not in text


def test_aws_region_and_zones_are_immutable() -> None:
    live = example("aws-cluster.yaml")
    assert live.aws is not None
    aws = {**live.aws.model_dump(mode="json"), "region": "eu-west-1", "availability_zones": ["eu-west-1a"]}
    plan = plan_apply(live, example("aws-cluster.yaml", aws=aws))
    fields = {r.split(":", 1)[0] for r in plan.refusals}
    assert {"aws.region", "aws.availability_zones"} <= fields and plan.operations == []


def test_diff_lists_each_leaf_once() -> None:
    live = spec()
    changes = diff(live, spec(deletion_protection=not live.deletion_protection))
    assert [c.field for c in changes] == ["deletion_protection"]


def test_drift_check_setting_is_applied_as_a_setting() -> None:
    live = spec()
    wanted = spec(drift_check={"interval": "1m", "paused": False})
    plan = plan_apply(live, wanted)
    assert plan.refusals == [] and [o.step for o in plan.operations] == [ApplyStep.CONFIGURE]
    assert "periodic drift check" in plan.operations[0].description
    assert {c.field for c in plan.changes} == {"drift_check.interval", "drift_check.paused"}


def test_node_repair_setting_is_applied_as_a_setting() -> None:
    live = spec()
    wanted = spec(node_repair={"unhealthy_after": "10m", "max_unhealthy": "20%", "paused": True})
    plan = plan_apply(live, wanted)
    assert plan.refusals == [] and [o.step for o in plan.operations] == [ApplyStep.CONFIGURE]
    assert "node auto-repair" in plan.operations[0].description
    assert {c.field for c in plan.changes} == {
        "node_repair.unhealthy_after",
        "node_repair.max_unhealthy",
        "node_repair.paused",
    }
