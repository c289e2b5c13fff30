"""ReplicaSets behind Deployments, with revisions, as the deployment controller keeps them.

Each pod template a Deployment has had is one ReplicaSet `<deployment>-<pod-template-hash>`, controlled
by the Deployment (ownerReference with controller and blockOwnerDeletion, so garbage collection takes
them along). The ReplicaSet of the current template carries the highest `deployment.kubernetes.io/revision`
(an old template coming back, as with `kubectl rollout undo`, is re-numbered), the Deployment carries
the same revision, old ReplicaSets are scaled to 0 once the rollout is done and pruned beyond
`spec.revisionHistoryLimit`. Pods are not created: ReplicaSet status follows the Deployment's.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import DEPLOYMENTS, REPLICASETS, Obj, clone
from .store import Store

REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.SafeEncodeString alphabet
# Deployment annotations the controller does not copy onto its ReplicaSets.
_NOT_COPIED = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
)


def _normal(value: Any) -> Any:
    """Without nulls and empty maps/lists: a template read back through a typed client (`rollout undo`
    sends `creationTimestamp: null`, `resources: {}`) is the same template."""
    if isinstance(value, dict):
        out = {k: _normal(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


SHAPES_KEPT = 20_000
"""Templates whose digest and hash are kept: a few per Deployment; past it, start over."""
_shapes: dict[int, tuple[Obj | None, str, str]] = {}


def _shape(template: Obj | None) -> tuple[str, str]:
    """The SHA-1 of the template's normal form (as sorted JSON) and its pod-template-hash, computed
    once per stored template.

    Every sync compares and hashes the templates of a Deployment and its ReplicaSets again, which
    was a tenth of the emulator's CPU during 100 creates. The templates come from stored objects,
    which are never changed once committed (``store.py``), so a template that is still the same
    dict has the same shape; the entry holds the dict, so its id is not reused meanwhile. Only the
    digest is kept, not the normal form: that was a copy of every template (100 MiB at 1,000
    clusters).
    """
    hit = _shapes.get(id(template))
    if hit is not None and hit[0] is template:
        return hit[1], hit[2]
    digest = hashlib.sha1(json.dumps(_normal(without_hash(template)), sort_keys=True).encode()).hexdigest()
    number = int(digest[:15], 16)
    out = ""
    while len(out) < 10:
        out += _SAFE[number % len(_SAFE)]
        number //= len(_SAFE)
    if len(_shapes) >= SHAPES_KEPT:
        _shapes.clear()
    _shapes[id(template)] = (template, digest, out)
    return digest, out


def same_template(a: Obj | None, b: Obj | None) -> bool:
    """Whether two stored templates are one pod template: the same normal form (read-only: see ``_shape``)."""
    return _shape(a)[0] == _shape(b)[0]


def template_hash(template: Obj | None) -> str:
    """The ``pod-template-hash`` of a stored template (read-only: see ``_shape``)."""
    return _shape(template)[1]


def replicaset_name(d: Obj) -> str:
    return f"{d['metadata']['name']}-{template_hash((d.get('spec') or {}).get('template'))}"


def _revision(rs: Obj) -> int:
    value = (rs["metadata"].get("annotations") or {}).get(REVISION, "0")
    return int(value) if value.isdigit() else 0


def without_hash(template: Obj | None) -> Obj:
    """The template without its pod-template-hash label; shares everything else with ``template``
    (callers only read it: a deep copy of every template on every sync was most of the emulator's CPU)."""
    out = dict(template or {})
    meta = out.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("labels"), dict) and HASH_LABEL in meta["labels"]:
        out["metadata"] = {**meta, "labels": {k: v for k, v in meta["labels"].items() if k != HASH_LABEL}}
    return out


def owned_replicasets(store: Store, cluster: str, d: Obj) -> list[Obj]:
    """The ReplicaSets ``d`` controls, as stored (read-only)."""
    uid = d["metadata"]["uid"]

    def owned(rs: Obj) -> bool:
        return any(r.get("uid") == uid and r.get("controller") for r in rs["metadata"].get("ownerReferences") or [])

    return store.peek_list(cluster, REPLICASETS, d["metadata"]["namespace"], owned)


def _new_replicaset(d: Obj, revision: int, replicas: int) -> Obj:
    meta, spec = d["metadata"], d.get("spec") or {}
    pod_hash = template_hash(spec.get("template"))
    template = clone(spec.get("template") or {})
    template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
    selector = clone(spec.get("selector") or {})
    selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOT_COPIED}
    return {
        "metadata": {
            "name": f"{meta['name']}-{pod_hash}",
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {**annotations, REVISION: str(revision)},
            "ownerReferences": [
                {
                    "apiVersion": DEPLOYMENTS.api_version,
                    "kind": DEPLOYMENTS.kind,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
        "status": {"replicas": 0},
    }


def sync_replicasets(store: Store, cluster: str, d: Obj, done: bool) -> None:
    """Converge the Deployment's ReplicaSets; `done`: the rollout finished (old ones go to 0)."""
    meta, spec = d["metadata"], d.get("spec") or {}
    ns, replicas = meta["namespace"], int(spec.get("replicas", 1))
    with store.lock:
        current = store.peek(cluster, DEPLOYMENTS, ns, meta["name"])
        if current is None or current["metadata"]["uid"] != meta["uid"] or current["metadata"].get("deletionTimestamp"):
            return
        rss = owned_replicasets(store, cluster, d)
        top = max((_revision(rs) for rs in rss), default=0)
        new = next(
            (rs for rs in rss if same_template((rs.get("spec") or {}).get("template"), spec.get("template"))), None
        )
        if new is None:
            revision = top + 1
            new = _new_replicaset(d, revision, replicas)
            store.mutate(cluster, REPLICASETS, ns, new["metadata"]["name"], lambda cur: new if cur is None else None)
        else:
            revision = _revision(new) if _revision(new) == top else top + 1
        for rs in owned_replicasets(store, cluster, d):
            is_new = rs["metadata"]["name"] == new["metadata"]["name"]
            want = replicas if is_new else 0 if done else int((rs.get("spec") or {}).get("replicas", 0))
            ready = want if (done or not is_new) else 0

            def converge(cur: Obj | None, is_new: bool = is_new, want: int = want, ready: int = ready) -> Obj | None:
                if cur is None:
                    return None
                anns = cur["metadata"].setdefault("annotations", {})
                if is_new:
                    anns[REVISION] = str(revision)
                anns.update({DESIRED: str(replicas), MAX_REPLICAS: str(replicas + 1)})
                cur["spec"]["replicas"] = want
                status = {"replicas": want, "observedGeneration": cur["metadata"].get("generation", 1)}
                if ready:
                    status.update(readyReplicas=ready, availableReplicas=ready, fullyLabeledReplicas=want)
                cur["status"] = status
                return cur

            store.mutate(cluster, REPLICASETS, ns, rs["metadata"]["name"], converge, top_level_spec=True)
        old = sorted(
            (rs for rs in owned_replicasets(store, cluster, d) if rs["metadata"]["name"] != new["metadata"]["name"]),
            key=_revision,
        )
        idle = [rs for rs in old if not (rs.get("spec") or {}).get("replicas")]
        for rs in idle[: max(len(idle) - int(spec.get("revisionHistoryLimit", 10)), 0)]:
            store.remove(cluster, REPLICASETS, ns, rs["metadata"]["name"])

        def annotate(cur: Obj | None) -> Obj | None:
            if cur is None or (cur["metadata"].get("annotations") or {}).get(REVISION) == str(revision):
                return None
            cur["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
            return cur

        store.mutate(cluster, DEPLOYMENTS, ns, meta["name"], annotate, top_level_spec=True)
