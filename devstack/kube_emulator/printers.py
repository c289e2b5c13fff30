"""Server-side printing: the meta.k8s.io/v1 Table kubectl asks for (`Accept: ...;as=Table`).

Columns and cell formats follow kube-apiserver's printers (pkg/printers/internalversion): priority-0
columns are what `kubectl get` shows, priority-1 ones are added by `-o wide`. Kinds without a printer
get NAME and AGE.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any

from .resources import TIME_FORMAT, Obj, ResourceType, clone
from .selectors import selector_to_string

Column = tuple[str, str, int]  # (name, type, priority)
Printer = tuple[list[Column], Callable[[Obj], list[Any]]]
NONE = "<none>"


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, as the AGE column prints it."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        return f"{minutes}m" if secs % 60 == 0 else f"{minutes}m{secs % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, hours // 24 % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def since(stamp: str | None) -> str:
    if not stamp:
        return "<unknown>"
    return human_duration(time.time() - calendar.timegm(time.strptime(stamp[:19] + "Z", TIME_FORMAT)))


def age(obj: Obj) -> str:
    return since(obj["metadata"].get("creationTimestamp"))


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _template_containers(obj: Obj) -> list[Obj]:
    return list(((_spec(obj).get("template") or {}).get("spec") or {}).get("containers") or [])


def _names_images(containers: list[Obj]) -> list[str]:
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)]


def _workload_wide(obj: Obj) -> list[Any]:
    return [*_names_images(_template_containers(obj)), selector_to_string(_spec(obj).get("selector") or {}) or NONE]


def _deployment(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    return [
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        age(obj),
        *_workload_wide(obj),
    ]


def _replicaset(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    return [
        spec.get("replicas", 1),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        age(obj),
        *_workload_wide(obj),
    ]


def _pod(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    if not statuses and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    ):
        ready = total
    reason = status.get("reason") or status.get("phase") or "Unknown"
    if obj["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    gates = spec.get("readinessGates") or []
    return [
        f"{ready}/{total}",
        reason,
        restarts,
        age(obj),
        status.get("podIP") or NONE,
        spec.get("nodeName") or NONE,
        status.get("nominatedNodeName") or NONE,
        f"0/{len(gates)}" if gates else NONE,
    ]


def _node_roles(labels: dict[str, str]) -> str:
    roles = sorted(
        {k.removeprefix("node-role.kubernetes.io/") for k in labels if k.startswith("node-role.kubernetes.io/")}
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    return ",".join(r for r in roles if r) or NONE


def _node(obj: Obj) -> list[Any]:
    status, info = _status(obj), _status(obj).get("nodeInfo") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Unknown" if ready is None else {"True": "Ready", "False": "NotReady"}.get(ready.get("status"), "Unknown")
    if _spec(obj).get("unschedulable"):
        state += ",SchedulingDisabled"
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [
        state,
        _node_roles(obj["metadata"].get("labels") or {}),
        age(obj),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP") or NONE,
        addresses.get("ExternalIP") or NONE,
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _service(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    ingress = (_status(obj).get("loadBalancer") or {}).get("ingress") or []
    external = [i.get("ip") or i.get("hostname") for i in ingress] + list(spec.get("externalIPs") or [])
    if spec.get("type") == "ExternalName":
        external = [spec.get("externalName", "")]
    ports = []
    for port in spec.get("ports") or []:
        text = f"{port.get('port')}/{port.get('protocol', 'TCP')}"
        if port.get("nodePort"):
            text = f"{port.get('port')}:{port['nodePort']}/{port.get('protocol', 'TCP')}"
        ports.append(text)
    pending = spec.get("type") == "LoadBalancer" and not external
    selector = spec.get("selector") or {}
    return [
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or NONE,
        ",".join(e for e in external if e) or ("<pending>" if pending else NONE),
        ",".join(ports) or NONE,
        age(obj),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or NONE,
    ]


def _ingress(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
    ingress = (_status(obj).get("loadBalancer") or {}).get("ingress") or []
    addresses = [i.get("ip") or i.get("hostname") for i in ingress]
    return [
        spec.get("ingressClassName") or NONE,
        ",".join(hosts) or "*",
        ",".join(a for a in addresses if a),
        "80, 443" if spec.get("tls") else "80",
        age(obj),
    ]


def _pdb(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    return [
        spec.get("minAvailable", "N/A"),
        spec.get("maxUnavailable", "N/A"),
        _status(obj).get("disruptionsAllowed", 0),
        age(obj),
    ]


def _event(obj: Obj) -> list[Any]:
    involved = obj.get("involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    return [
        since(last),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message", ""),
    ]


def _col(name: str, kind: str = "string", priority: int = 0) -> Column:
    return (name, kind, priority)


WORKLOAD_WIDE = [_col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)]
PRINTERS: dict[str, Printer] = {
    "Deployment": (
        [_col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), _col("Age"), *WORKLOAD_WIDE],
        _deployment,
    ),
    "ReplicaSet": (
        [_col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), _col("Age"), *WORKLOAD_WIDE],
        _replicaset,
    ),
    "Pod": (
        [
            _col("Ready"),
            _col("Status"),
            _col("Restarts"),
            _col("Age"),
            _col("IP", priority=1),
            _col("Node", priority=1),
            _col("Nominated Node", priority=1),
            _col("Readiness Gates", priority=1),
        ],
        _pod,
    ),
    "Node": (
        [
            _col("Status"),
            _col("Roles"),
            _col("Age"),
            _col("Version"),
            _col("Internal-IP", priority=1),
            _col("External-IP", priority=1),
            _col("OS-Image", priority=1),
            _col("Kernel-Version", priority=1),
            _col("Container-Runtime", priority=1),
        ],
        _node,
    ),
    "Namespace": ([_col("Status"), _col("Age")], lambda o: [_status(o).get("phase", ""), age(o)]),
    "Service": (
        [
            _col("Type"),
            _col("Cluster-IP"),
            _col("External-IP"),
            _col("Port(s)"),
            _col("Age"),
            _col("Selector", priority=1),
        ],
        _service,
    ),
    "ConfigMap": (
        [_col("Data", "integer"), _col("Age")],
        lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o)],
    ),
    "Secret": (
        [_col("Type"), _col("Data", "integer"), _col("Age")],
        lambda o: [o.get("type", "Opaque"), len(o.get("data") or {}), age(o)],
    ),
    "Ingress": ([_col("Class"), _col("Hosts"), _col("Address"), _col("Ports"), _col("Age")], _ingress),
    "PodDisruptionBudget": (
        [_col("Min Available"), _col("Max Unavailable"), _col("Allowed Disruptions", "integer"), _col("Age")],
        _pdb,
    ),
    "ServiceAccount": ([_col("Secrets", "integer"), _col("Age")], lambda o: [len(o.get("secrets") or []), age(o)]),
    "Lease": ([_col("Holder"), _col("Age")], lambda o: [_spec(o).get("holderIdentity", ""), age(o)]),
}


def table(rt: ResourceType, items: list[Obj], include: str, rv: str, cont: str | None = None) -> Obj:
    columns, cells = PRINTERS.get(rt.kind, ([_col("Age")], lambda o: [age(o)]))
    if rt.kind == "Event":  # events print no NAME column first
        columns, cells = (
            [
                _col("Last Seen"),
                _col("Type"),
                _col("Reason"),
                _col("Object"),
                _col("Message"),
            ],
            _event,
        )

    def row_object(obj: Obj) -> Obj | None:
        if include == "None":
            return None
        if include == "Object":
            return obj
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": clone(obj["metadata"]),
        }

    named = rt.kind != "Event"
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}] * named
    definitions += [{"name": n, "type": t, "format": "", "description": n, "priority": p} for n, t, p in columns]
    meta: Obj = {"resourceVersion": rv}
    if cont:
        meta["continue"] = cont
    rows = [{"cells": [o["metadata"]["name"]] * named + cells(o), "object": row_object(o)} for o in items]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": definitions,
        "rows": rows,
    }
