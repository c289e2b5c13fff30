"""The store's copies (``resources.clone``): equal to what was stored, sharing nothing with it."""

from __future__ import annotations

import copy
import json

from devstack.kube_emulator.resources import clone

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "worker-0",
        "labels": {"tenantctl.io/cluster": "acme"},
        "managedFields": [{"manager": "tenantctl", "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
        "generation": 2,
    },
    "spec": {
        "replicas": 1,
        "paused": False,
        "progressDeadlineSeconds": 600,
        "template": {"spec": {"containers": [{"name": "vm", "resources": {"limits": {"cpu": "2"}}}]}},
    },
    "status": {"availableReplicas": None, "ratio": 0.5, "conditions": []},
}


def test_a_clone_equals_the_original_in_value_and_type() -> None:
    copied = clone(DEPLOYMENT)
    assert copied == DEPLOYMENT == copy.deepcopy(DEPLOYMENT)
    assert json.dumps(copied) == json.dumps(DEPLOYMENT)  # 1 stays int, False bool, 0.5 float, None null
    assert copied is not DEPLOYMENT


def test_a_clone_shares_no_container_with_the_original() -> None:
    original = copy.deepcopy(DEPLOYMENT)
    copied = clone(original)
    copied["metadata"]["labels"]["extra"] = "x"
    copied["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"].clear()
    copied["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    copied["status"]["conditions"].append({"type": "Available"})
    assert original == DEPLOYMENT
