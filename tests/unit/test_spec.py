"""The cluster spec: the examples load, and every invalid field is refused with its name and rule."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.spec import ClusterSpec, Provider, SpecError, parse_spec
from models.versions import upgrade_refusal
from starter.spec_file import load_spec
from tests.specs import EXAMPLES


def kvm(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / "kvm-cluster.yaml").read_text())
    data.update(changes)
    return data


def aws(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / "aws-cluster.yaml").read_text())
    data.update(changes)
    return data


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.problems


@pytest.mark.parametrize("name", ["kvm-cluster.yaml", "aws-cluster.yaml"])
def test_examples_load(name: str) -> None:
    spec = load_spec(EXAMPLES / name)
    assert isinstance(spec, ClusterSpec)
    assert spec.certificates.ttl == timedelta(hours=72)
    assert spec.certificates.rotation_interval == timedelta(hours=24)


def test_defaults_follow_the_talk() -> None:
    data = kvm()
    del data["certificates"]
    spec = parse_spec(data)
    assert spec.certificates.ttl == timedelta(hours=72)
    assert spec.certificates.rotation_interval == timedelta(hours=24)
    assert spec.deletion_protection is False
    assert spec.provider is Provider.KVM
    assert spec.api_domain == "api.acme-prod.k8s.example.com"
    assert spec.networking.api_service_ip == "172.31.0.1"


def test_durations_accept_human_and_iso_forms() -> None:
    spec = parse_spec(kvm(certificates={"ttl": "3d", "rotation_interval": "PT12H", "ca_ttl": 315360000}))
    assert spec.certificates.ttl == timedelta(days=3)
    assert spec.certificates.rotation_interval == timedelta(hours=12)
    # round trip through JSON (how it crosses the workflow boundary)
    assert ClusterSpec.model_validate_json(spec.model_dump_json()) == spec


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("uppercase id", kvm(id="Acme"), "id", "DNS-1123"),
    ("long id", kvm(id="a" * 41), "id", "at most 40"),
    ("id with dot", kvm(id="acme.prod"), "id", "DNS-1123"),
    ("owner", kvm(owner="Acme Corp"), "owner", "DNS-1123"),
    ("provider", kvm(provider="gcp"), "provider", "'kvm' or 'aws'"),
    ("version format", kvm(kubernetes_version="1.32"), "kubernetes_version", "semantic version"),
    ("version too new", kvm(kubernetes_version="1.40.0"), "kubernetes_version", "supported range"),
    ("version too old", kvm(kubernetes_version="1.20.5"), "kubernetes_version", "supported range"),
    ("base domain", kvm(base_domain="localhost"), "base_domain", "DNS domain"),
    ("even masters", kvm(masters={"count": 2, "cpu": 2, "memory": "4Gi"}), "masters.count", "1, 3 or 5"),
    ("no workers", kvm(workers={"count": 0, "cpu": 2, "memory": "4Gi"}), "workers.count", "greater than or equal to 1"),
    ("memory unit", kvm(workers={"count": 1, "cpu": 2, "memory": "4GB"}), "workers.memory", "Mi or Gi"),
    ("cpu", kvm(workers={"count": 1, "cpu": 0, "memory": "4Gi"}), "workers.cpu", "greater than or equal to 1"),
    ("kvm without cpu", kvm(masters={"count": 1, "memory": "4Gi"}), "<spec>", "masters: provider kvm needs cpu"),
    ("bad cidr", kvm(networking={"pod_cidr": "10.2.0.1/16"}), "networking.pod_cidr", "CIDR"),
    ("not a cidr", kvm(networking={"service_cidr": "banana"}), "networking.service_cidr", "CIDR"),
    ("overlap", kvm(networking={"pod_cidr": "10.0.0.0/8", "service_cidr": "10.96.0.0/12"}), "networking", "overlaps"),
    (
        "interval >= ttl",
        kvm(certificates={"ttl": "24h", "rotation_interval": "24h"}),
        "certificates",
        "rotation_interval (1d) must be shorter than ttl (1d)",
    ),
    ("bad duration", kvm(certificates={"ttl": "three days"}), "certificates.ttl", "duration"),
    ("unknown field", kvm(replicas=3), "replicas", "unknown field"),
    (
        "unknown nested",
        kvm(masters={"count": 1, "cpu": 1, "memory": "1Gi", "disk": "10Gi"}),
        "masters.disk",
        "unknown field",
    ),
    ("protection type", kvm(deletion_protection="maybe"), "deletion_protection", "boolean"),
    ("missing id", {k: v for k, v in kvm().items() if k != "id"}, "id", "required field is missing"),
    ("wrong section", kvm(aws={"region": "eu-central-1"}), "<spec>", "section 'aws' does not apply"),
    ("aws needs instance type", aws(workers={"count": 2}), "<spec>", "workers.instance_type is required"),
    (
        "aws with cpu",
        aws(masters={"count": 1, "cpu": 2}),
        "<spec>",
        "masters: provider aws sizes nodes by instance_type",
    ),
    (
        "zone outside region",
        aws(aws={"region": "eu-central-1", "availability_zones": ["us-east-1a"]}),
        "aws",
        "not a zone",
    ),
    (
        "vpc overlap",
        aws(aws={"vpc_cidr": "10.2.0.0/16"}),
        "<spec>",
        "aws.vpc_cidr 10.2.0.0/16 overlaps networking.pod_cidr",
    ),
    (
        "surge and unavailable 0",
        kvm(workers={"count": 1, "cpu": 1, "memory": "1Gi", "max_surge": 0}),
        "workers",
        "cannot both be 0",
    ),
]


@pytest.mark.parametrize(("case", "data", "field", "rule"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_field_is_named_with_its_rule(case: str, data: dict[str, Any], field: str, rule: str) -> None:
    found = problems(data)
    assert any(p.startswith(f"{field}: ") and rule in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(kvm(id="Bad", owner="Bad Owner", kubernetes_version="2.0.0"))
    assert {p.split(":")[0] for p in found} >= {"id", "owner", "kubernetes_version"}


def test_spec_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed")
    with pytest.raises(SpecError, match=r"bad\.yaml"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read file"):
        load_spec(tmp_path / "missing.yaml")
    bad.write_text("- a list\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(bad)


@pytest.mark.parametrize(
    ("current", "target", "refused"),
    [
        ("1.32.4", "1.32.5", None),
        ("1.32.4", "1.32.9", None),
        ("1.32.4", "1.33.0", None),
        ("1.32.4", "1.33.7", None),
        ("1.32.4", "1.34.0", "one minor at a time"),
        ("1.32.4", "1.32.3", "downgrades"),
        ("1.32.4", "1.31.9", "downgrades"),
        ("1.32.4", "1.32.4", "already runs"),
        ("1.35.1", "1.36.0", "supported range"),
        ("1.32.4", "v1.32.x", "semantic version"),
    ],
)
def test_upgrade_policy(current: str, target: str, refused: str | None) -> None:
    reason = upgrade_refusal(current, target)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason
