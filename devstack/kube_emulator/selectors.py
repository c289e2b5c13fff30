"""Label selectors (string and LabelSelector-object forms) and field selectors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .resources import ApiError, Obj, ResourceType

Matcher = Callable[[Obj], bool]
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET = re.compile(r"^(\S+?)\s+(in|notin)\s*\((.*)\)$")
_EQ = re.compile(r"^([^\s!=]+)\s*(==|=|!=)\s*(\S*)$")


def _split(text: str) -> list[str]:
    """Split on commas that are not inside `(...)` value sets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def _bad(text: str, why: str) -> ApiError:
    return ApiError(400, f"unable to parse requirement: {why}: {text!r}", "BadRequest")


Requirement = tuple[str, str, frozenset[str]]  # (key, operator, values)


def _label_ok(labels: dict[str, str], req: Requirement) -> bool:
    key, op, values = req
    value = labels.get(key)
    return {
        "=": value in values,
        "!=": value not in values,
        "in": value in values,
        "notin": value not in values,
        "exists": key in labels,
        "!": key not in labels,
    }[op]


def parse_label_selector(text: str | None) -> Callable[[dict[str, str]], bool]:
    """Equality (=, ==, !=) and set-based (in, notin, key, !key) requirements, ANDed."""
    reqs: list[Requirement] = []
    for raw in _split(text or "") if (text or "").strip() else []:
        req = raw.strip()
        if m := _SET.match(req):
            key, op, values = m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",")]
        elif m := _EQ.match(req):
            key, op, values = m.group(1), "!=" if m.group(2) == "!=" else "=", [m.group(3)]
        elif req.startswith("!"):
            key, op, values = req[1:].strip(), "!", []
        else:
            key, op, values = req, "exists", []
        if not _KEY.match(key):
            raise _bad(req, "invalid label key")
        if not all(_VALUE.match(v) for v in values):
            raise _bad(req, "invalid label value")
        reqs.append((key, op, frozenset(values)))
    return lambda labels: all(_label_ok(labels, r) for r in reqs)


def match_selector_object(selector: Obj | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics: null matches nothing, {} matches everything."""
    if selector is None:
        return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    reqs: list[Requirement] = [(k, "=", frozenset([v])) for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        if expr.get("operator") not in ops:
            return False
        reqs.append((expr.get("key", ""), ops[expr["operator"]], frozenset(expr.get("values") or [])))
    return all(_label_ok(labels, r) for r in reqs)


def selector_to_string(selector: Obj) -> str:
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op, key = expr.get("operator"), expr.get("key")
        vals = ",".join(expr.get("values") or [])
        parts.append(
            {
                "In": f"{key} in ({vals})",
                "NotIn": f"{key} notin ({vals})",
                "Exists": f"{key}",
                "DoesNotExist": f"!{key}",
            }.get(op, "")
        )
    return ",".join(parts)


# Selectable fields whose value is not simply the field of that name (or is defaulted when absent).
FIELD_PATHS = {"source": "source.component"}
FIELD_DEFAULTS = {
    "spec.hostNetwork": "false",
    "spec.restartPolicy": "Always",
    "spec.schedulerName": "default-scheduler",
}


def field_value(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in FIELD_PATHS.get(path, path).split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return FIELD_DEFAULTS.get(path, "") if cur is None else str(cur)


def parse_field_selector(rt: ResourceType, text: str | None) -> Matcher:
    """Only the fields the real server indexes for this kind; others are a 400 like kube-apiserver."""
    checks: list[tuple[str, bool, str]] = []
    allowed = ("metadata.name", "metadata.namespace", *rt.field_labels)
    for raw in (text or "").split(",") if (text or "").strip() else []:
        m = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$", raw)
        if not m:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{raw}'", "BadRequest")
        field, op, value = m.groups()
        if field not in allowed:
            raise ApiError(400, f"field label not supported: {field}", "BadRequest")
        checks.append((field, op == "!=", value))
    return lambda obj: all((field_value(obj, f) == v) != negate for f, negate, v in checks)


def object_matcher(rt: ResourceType, label_selector: str | None, field_selector: str | None) -> Matcher:
    labels_ok = parse_label_selector(label_selector)
    fields_ok = parse_field_selector(rt, field_selector)
    return lambda obj: labels_ok(obj["metadata"].get("labels") or {}) and fields_ok(obj)
