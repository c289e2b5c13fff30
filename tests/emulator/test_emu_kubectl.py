"""The real kubectl (v1.32 here; Debian's kubernetes-client in CI) against the emulator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devstack.kube_emulator import Emulator

KUBECTL = shutil.which("kubectl")
SKIP_REASON = "kubectl is not installed (Debian package kubernetes-client): kubectl conformance tests skipped"
if KUBECTL is None and sys.__stderr__ is not None:  # said out loud, not only in pytest's -rs summary
    sys.__stderr__.write(f"\n{SKIP_REASON}\n")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason=SKIP_REASON)

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {image}
        env: [{{name: MODE, value: "{mode}"}}]
        ports: [{{containerPort: 80}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config, namespace: {ns}}}
data: {{mode: "{mode}"}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 80}}]
"""


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}  # private cache dir
    result = subprocess.run([KUBECTL, *args], check=False, env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_kubectl_get_apply_delete(
    kubeconfig: Path, apps: client.AppsV1Api, core: client.CoreV1Api, ns: str, tmp_path: Path, kit: Any
) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST.format(ns=ns, image="nginx:1.27", mode="one"))
    out = kubectl(kubeconfig, "apply", "-f", str(manifest)).stdout  # default --validate=strict
    assert "deployment.apps/web created" in out and "configmap/web-config created" in out
    assert "service/web created" in out
    dep = apps.read_namespaced_deployment("web", ns)
    assert "kubectl.kubernetes.io/last-applied-configuration" in dep.metadata.annotations

    table = kubectl(kubeconfig, "get", "deployments,configmaps", "-n", ns).stdout
    assert "NAME" in table and "deployment.apps/web" in table and "configmap/web-config" in table
    listed = json.loads(kubectl(kubeconfig, "get", "deploy", "-n", ns, "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]
    assert kubectl(kubeconfig, "get", "ns", ns, "-o", "jsonpath={.status.phase}").stdout == "Active"
    missing = kubectl(kubeconfig, "get", "deploy", "absent", "-n", ns, check=False)
    assert missing.returncode != 0 and '"absent" not found' in missing.stderr
    kit.wait_for(lambda: apps.read_namespaced_deployment("web", ns).status.available_replicas == 2)

    manifest.write_text(MANIFEST.format(ns=ns, image="nginx:1.28", mode="two"))
    out = kubectl(kubeconfig, "apply", "-f", str(manifest)).stdout  # GET + strategic merge PATCH
    assert "deployment.apps/web configured" in out and "configmap/web-config configured" in out
    assert "service/web unchanged" in out
    dep = apps.read_namespaced_deployment("web", ns)
    container = dep.spec.template.spec.containers[0]
    assert container.image == "nginx:1.28" and container.env[0].value == "two" and dep.metadata.generation == 2
    assert core.read_namespaced_config_map("web-config", ns).data == {"mode": "two"}

    out = kubectl(kubeconfig, "delete", "-f", str(manifest)).stdout  # waits for the objects to be gone
    assert 'deployment.apps "web" deleted' in out and 'configmap "web-config" deleted' in out
    _, body = kit.api_error(apps.read_namespaced_deployment, "web", ns)
    assert body["reason"] == "NotFound"
    assert not core.list_namespaced_service(ns).items


def test_kubectl_against_a_tenant_cluster(emulator: Emulator, tmp_path: Path, kit: Any) -> None:
    tenant = kit.unique("kubectl")
    kubeconfig = emulator.write_tenant_kubeconfig(tenant, tmp_path / "tenant.kubeconfig")
    with kit.tenant_client(emulator, tenant, tmp_path) as api:
        core = client.CoreV1Api(api)
        core.create_node({"metadata": {"name": "n1"}})
        for i in range(2):
            core.create_namespaced_pod(
                "default",
                {
                    "metadata": {"name": f"p{i}", "labels": {"app": "x"}},
                    "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
                },
            )
        assert "n1" in kubectl(kubeconfig, "get", "nodes").stdout
        out = kubectl(kubeconfig, "drain", "n1", "--force", "--ignore-daemonsets", "--timeout=30s")
        assert "node/n1 cordoned" in out.stdout and "node/n1 drained" in out.stdout
        assert core.read_node("n1").spec.unschedulable is True
        assert not core.list_namespaced_pod("default").items  # evicted through pods/eviction


def test_generators_get_a_415_naming_the_json_workaround(kubeconfig: Path, emulator: Emulator) -> None:
    """kubectl's generators POST protobuf: the emulator answers 415 with the JSON workaround, and that
    workaround (client-side dry run piped into apply) creates the object."""
    name = f"gen-{os.getpid()}"
    failed = kubectl(kubeconfig, "create", "configmap", name, "--from-literal=a=b", check=False)
    assert failed.returncode != 0 and "unknown format (application/vnd.kubernetes.protobuf)" in failed.stderr
    assert "--dry-run=client -o yaml | kubectl apply -f -" in failed.stderr
    generated = kubectl(kubeconfig, "create", "configmap", name, "--from-literal=a=b", "--dry-run=client", "-o", "yaml")
    applied = subprocess.run(
        [str(KUBECTL), "apply", "-f", "-"],
        input=generated.stdout,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert json.loads(kubectl(kubeconfig, "get", "configmap", name, "-o", "json").stdout)["data"] == {"a": "b"}
