"""``kubectl kustomize`` of the deploy/ overlays, as parsed objects."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("kvm", "aws", "kvm-aws")
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = "kubectl is not installed (Debian package kubernetes-client): deploy/ cannot be rendered"

Obj = dict[str, Any]


@functools.cache
def rendered_text(overlay: str) -> str:
    assert KUBECTL is not None, NO_KUBECTL
    result = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return result.stdout


def render(overlay: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rbac_rules(role: Obj) -> set[tuple[str, str, str]]:
    """A ClusterRole's rules expanded to (apiGroup, resource, verb); wildcards kept as '*'."""
    expanded = set()
    for rule in role.get("rules") or []:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    expanded.add((group, resource, verb))
    return expanded
