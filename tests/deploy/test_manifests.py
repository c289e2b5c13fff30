"""deploy/ renders, validates against the real OpenAPI schemas, and says what the worker reads.

Rendering is ``kubectl kustomize`` (the machine's kubectl; Helm is not installable here); schema
validation is PyPI's ``kubernetes-validate`` (the API server's OpenAPI schemas, offline, strict:
unknown fields fail); ``kubectl apply --dry-run=server`` goes to the host API emulator, which runs
admission of every kind it serves without persisting anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config.settings import ENV_PREFIX, Settings
from tests.deploy.rendering import KUBECTL, NO_KUBECTL, OVERLAYS, Obj, one, render
from worker.health import TERMINATION_GRACE
from worker.registry import GRACEFUL_SHUTDOWN

pytestmark = pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)

SCHEMA_VERSIONS = ("1.30.0", "1.33.0")
"""The oldest host cluster version supported and a current one."""


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_rendered_objects_pass_strict_schema_validation(overlay: str, version: str) -> None:
    objects = render(overlay)
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lives_in_the_tenantctl_namespace(overlay: str) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in render(overlay):
        namespace = obj["metadata"].get("namespace")
        assert namespace == (None if obj["kind"] in cluster_scoped else "tenantctl"), obj["metadata"]["name"]


def worker_env_names(objects: list[Obj]) -> set[str]:
    """Every variable the worker container gets: the settings ConfigMap's keys and explicit env."""
    container = one_container(one(objects, "Deployment", "tenantctl-worker")["spec"]["template"]["spec"]["containers"])
    names = {env["name"] for env in container.get("env", [])}
    for source in container.get("envFrom", []):
        config_map = one(objects, "ConfigMap", source["configMapRef"]["name"])
        names |= set(config_map["data"])
    return names


def one_container(containers: list[Obj]) -> Obj:
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_in_the_manifests_is_a_setting(overlay: str) -> None:
    objects = render(overlay)
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    names = worker_env_names(objects)
    unknown = sorted(names - fields)
    assert not unknown, f"{overlay}: the worker would ignore {unknown} (no such field in config/settings.py)"
    assert {"TENANTCTL_TEMPORAL_ADDRESS", "TENANTCTL_VAULT_ADDR", "TENANTCTL_HEALTH_ADDRESS"} <= names
    # the values the ConfigMap gives parse as settings (a typo in a bool or an address fails here)
    data = one(objects, "ConfigMap", "tenantctl-worker-settings")["data"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    parsed = subprocess.run(
        [
            "python",
            "-c",
            "import json; from config.settings import Settings; print(Settings().model_dump_json())",
        ],
        env={**env, **data},
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert parsed.returncode == 0, parsed.stderr
    settings = json.loads(parsed.stdout)
    assert settings["kube_in_cluster"] is True and settings["health_address"] == "0.0.0.0:8080"
    if "aws" in overlay:
        assert "TENANTCTL_AWS_SECRET_ACCESS_KEY" in names


def test_overlays_differ_only_by_provider() -> None:
    kinds = {overlay: {(o["kind"], o["metadata"]["name"]) for o in render(overlay)} for overlay in OVERLAYS}
    rbac = {("ClusterRole", "tenantctl-worker"), ("ClusterRoleBinding", "tenantctl-worker")}
    assert kinds["kvm"] - kinds["aws"] == rbac
    assert kinds["kvm-aws"] == kinds["kvm"] | kinds["aws"]
    aws_env = worker_env_names(render("aws"))
    assert "TENANTCTL_AWS_REGION" in aws_env and "TENANTCTL_AWS_REGION" not in worker_env_names(render("kvm"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_deployment_is_hardened_and_probed(overlay: str) -> None:
    objects = render(overlay)
    deployment = one(objects, "Deployment", "tenantctl-worker")
    pod = deployment["spec"]["template"]["spec"]
    container = one_container(pod["containers"])
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == "tenantctl-worker"
    # graceful shutdown: the pod is killed only after the worker's own shutdown had its time
    assert pod["terminationGracePeriodSeconds"] == TERMINATION_GRACE.total_seconds()
    assert TERMINATION_GRACE > GRACEFUL_SHUTDOWN
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}  # the only writable place
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"} and set(resources["limits"]) == {"cpu", "memory"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    settings = one(objects, "ConfigMap", "tenantctl-worker-settings")["data"]
    assert settings["TENANTCTL_HEALTH_ADDRESS"].endswith(f":{ports['health']}")
    assert settings["TENANTCTL_METRICS_ADDRESS"].endswith(f":{ports['metrics']}")
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}

    pdb = one(objects, "PodDisruptionBudget", "tenantctl-worker")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["minAvailable"] == 1
    policy = one(objects, "NetworkPolicy", "tenantctl-worker")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["metrics"]
    namespace = one(objects, "Namespace", "tenantctl")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
    return subprocess.run(
        [KUBECTL, *args], input=stdin, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_server_side_dry_run_against_the_host_api_emulator(kube_emulator: Any, tmp_path: Path) -> None:
    """Every kind the emulator serves goes through its admission in dry-run; none is stored.

    The emulator serves no rbac.authorization.k8s.io API (it emulates what the KVM provider
    touches), so ClusterRole/ClusterRoleBinding are checked by schema validation above only; the
    test says so and fails if the emulator starts serving RBAC without them being included.
    """
    kubeconfig = kube_emulator.write_kubeconfig(tmp_path / "kubeconfig")
    groups = json.loads(kubectl(kubeconfig, "get", "--raw", "/apis").stdout)
    served_groups = {group["name"] for group in groups["groups"]} | {""}
    objects = render("kvm-aws")
    served = [o for o in objects if o["apiVersion"].rpartition("/")[0] in served_groups]
    unserved = {o["kind"] for o in objects} - {o["kind"] for o in served}
    assert unserved == {"ClusterRole", "ClusterRoleBinding"}, f"the emulator now serves more: {unserved}"

    # A server-side dry run of namespaced objects needs their namespace to exist, as on a real API server.
    namespace = [o for o in served if o["kind"] == "Namespace"]
    created = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(namespace))
    assert created.returncode == 0, created.stderr
    try:
        rest = [o for o in served if o["kind"] != "Namespace"]
        dry = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(rest))
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.strip().splitlines()
        assert len(lines) == len(rest) and all(line.endswith("created (server dry run)") for line in lines), dry.stdout
        stored = kubectl(
            kubeconfig, "get", "deployments,configmaps,services,pdb,netpol", "-n", "tenantctl", "-o", "name"
        )
        assert stored.returncode == 0 and stored.stdout.strip() == "", stored.stdout
    finally:
        kubectl(kubeconfig, "delete", "namespace", "tenantctl", "--wait=false")
