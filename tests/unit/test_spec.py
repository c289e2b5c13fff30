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
    ("kvm without cpu", kvm(masters={"count": 1, "memory": "4Gi"}), "masters.cpu", "provider kvm needs cpu"),
    ("bad cidr", kvm(networking={"pod_cidr": "10.2.0.1/16"}), "networking.pod_cidr", "CIDR"),
    ("not a cidr", kvm(networking={"service_cidr": "banana"}), "networking.service_cidr", "CIDR"),
    (
        "overlap",
        kvm(networking={"pod_cidr": "10.0.0.0/8", "service_cidr": "10.96.0.0/12"}),
        "networking.service_cidr",
        "overlaps",
    ),
    (
        "interval >= ttl",
        kvm(certificates={"ttl": "24h", "rotation_interval": "24h"}),
        "certificates.rotation_interval",
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
    ("wrong section", kvm(aws={"region": "eu-central-1"}), "aws", "section 'aws' does not apply"),
    ("aws needs instance type", aws(workers={"count": 2}), "workers.instance_type", "required for provider aws"),
    (
        "aws with cpu",
        aws(masters={"count": 1, "cpu": 2}),
        "masters.cpu",
        "provider aws sizes nodes by instance_type",
    ),
    (
        "zone outside region",
        aws(aws={"region": "eu-central-1", "availability_zones": ["us-east-1a"]}),
        "aws.availability_zones.0",
        "not a zone",
    ),
    (
        "vpc overlap",
        aws(aws={"vpc_cidr": "10.2.0.0/16"}),
        "aws.vpc_cidr",
        "aws.vpc_cidr 10.2.0.0/16 overlaps networking.pod_cidr",
    ),
    (
        "surge and unavailable 0",
        kvm(workers={"count": 1, "cpu": 1, "memory": "1Gi", "max_surge": 0}),
        "workers.max_surge",
        "cannot both be 0",
    ),
    # Bounded before arithmetic: refused with the field, never an OverflowError.
    ("huge human ttl", kvm(certificates={"ttl": "99999999999999h"}), "certificates.ttl", "at most 36500d"),
    ("huge iso ttl", kvm(certificates={"ttl": "P99999999D"}), "certificates.ttl", "at most 36500d"),
    ("huge seconds", kvm(certificates={"ca_ttl": 10**30}), "certificates.ca_ttl", "at most 36500d"),
    ("infinite ttl", kvm(certificates={"ttl": float("inf")}), "certificates.ttl", "at most 36500d"),
    ("negative ttl", kvm(certificates={"ttl": "-PT1H"}), "certificates.ttl", "at least 5m"),
    ("long duration text", kvm(certificates={"ttl": "1h" * 100}), "certificates.ttl", "200 characters"),
    # null where a value is needed names the field
    ("null cpu", kvm(masters={"count": 3, "cpu": None, "memory": "4Gi"}), "masters.cpu", "(got null)"),
    ("null owner", kvm(owner=None), "owner", "a value is required here (got null)"),
    ("null masters", kvm(masters=None), "masters", "(got null)"),
    # an image repository is an OCI reference, without tag (the tag is the Kubernetes version)
    ("image emoji", kvm(kvm={"image_repository": "quay.io/\U0001f600"}), "kvm.image_repository", "OCI image"),
    ("image newline", kvm(kvm={"image_repository": "quay.io/a\nb"}), "kvm.image_repository", "OCI image"),
    ("image trailing newline", kvm(kvm={"image_repository": "quay.io/a\n"}), "kvm.image_repository", "OCI image"),
    ("image long", kvm(kvm={"image_repository": "a/" * 500 + "b"}), "kvm.image_repository", "at most 255"),
    ("image tag", kvm(kvm={"image_repository": "quay.io/a/b:1.2"}), "kvm.image_repository", "without tag"),
    ("image uppercase", kvm(kvm={"image_repository": "quay.io/Acme/node"}), "kvm.image_repository", "OCI image"),
    ("ingress class", kvm(kvm={"ingress_class": "Nginx Ingress"}), "kvm.ingress_class", "Kubernetes object name"),
    ("id trailing newline", kvm(id="acme\n"), "id", "DNS-1123"),
    ("markup memory", kvm(workers={"count": 1, "cpu": 2, "memory": "[/]"}), "workers.memory", "got '[/]'"),
    ("memory too large", kvm(workers={"count": 1, "cpu": 2, "memory": "99999Gi"}), "workers.memory", "between"),
    ("memory too small", kvm(workers={"count": 1, "cpu": 2, "memory": "1Mi"}), "workers.memory", "between"),
    ("region", aws(aws={"region": "Mars-1"}), "aws.region", "eu-central-1"),
    ("ami prefix", aws(aws={"ami_name_prefix": "x y" * 60}), "aws.ami_name_prefix", "tenantctl-node"),
    ("instance type", aws(workers={"count": 1, "instance_type": "m5.large\n"}), "workers.instance_type", "m5.large"),
]


@pytest.mark.parametrize(("case", "data", "field", "rule"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_field_is_named_with_its_rule(case: str, data: dict[str, Any], field: str, rule: str) -> None:
    found = problems(data)
    assert any(p.startswith(f"{field}: ") and rule in p for p in found), found


def test_long_values_are_shown_shortened() -> None:
    found = problems(kvm(owner="x" * 10_000_000, base_domain="y" * 5000))
    assert all(len(p) <= 320 for p in found), [len(p) for p in found]
    assert any(p.startswith("owner: ") and "10000000 characters" in p for p in found), found


def test_unknown_keys_are_bounded_too() -> None:
    found = problems(kvm(**{"k" * 5000: 1}))
    assert len(found) == 1 and len(found[0]) < 200 and "unknown field" in found[0], found


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


BAD_FILES: list[tuple[str, bytes, str]] = [
    ("not utf-8", b"id: acme\nowner: \xff\xfe\n", "not UTF-8 text (byte 0xff at offset 16)"),
    ("two documents", b"id: a\n---\nid: b\n", "more than one YAML document"),
    ("deeply nested", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests deeper than 16 levels"),
    ("deep block nesting", b"".join(b"  " * i + b"k:\n" for i in range(40)), "nests deeper than 16 levels"),
    ("huge", b"id: " + b"a" * (300 * 1024) + b"\n", "larger than 256 KiB"),
    ("duplicate key", b"id: a\nowner: acme\nid: b\n", "key 'id' appears twice in one mapping (first on line 1)"),
    ("duplicate nested", b"masters:\n  cpu: 1\n  cpu: 2\n", "key 'cpu' appears twice"),
    ("duplicate in flow", b"masters: {cpu: 1, cpu: 2}\n", "key 'cpu' appears twice"),
    ("alias", b"a: &x [1]\nb: *x\n", "uses a YAML alias"),
    ("empty", b"", "it is empty"),
    ("scalar", b"hello\n", "it is a str"),
    ("list key", b"? [a, b]\n: c\n", "plain value"),
    ("python tag", b"id: !!python/object:os.system {}\n", "not valid YAML"),
    ("unclosed", b"id: [unclosed\n" + b"x" * 1000, "not valid YAML"),
]


@pytest.mark.parametrize(("case", "content", "problem"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_are_refused_with_one_line(tmp_path: Path, case: str, content: bytes, problem: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert len(info.value.problems) == 1, info.value.problems
    line = info.value.problems[0]
    assert line.startswith("<file>: ") and problem in line and len(line) < 320, line


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (EXAMPLES / "kvm-cluster.yaml").read_bytes())
    assert load_spec(path).id == "acme-prod"


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
