"""Server-side apply (`application/apply-patch+yaml`): create-or-merge with per-manager field ownership.

The applied configuration is merged into the live object along the schema (list maps by their keys,
sets by value, atomic lists and maps replaced); fields the manager applied before and left out now
are removed unless another manager owns them too. A field another manager owns with a different
value is a conflict (409 naming the fields and the manager) unless `force=true`, which moves the
ownership to the applier.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from . import schema
from .fieldsets import (
    FieldSet,
    Path,
    entries,
    entry_fields,
    field_set,
    new_entry,
    path_string,
    remove_at,
    same_entry,
    set_entries,
    value_at,
)
from .resources import ApiError, Obj, ResourceType, clone


def parse(raw: bytes) -> Obj:
    """The apply body (YAML or JSON); apiVersion and kind are required, as for `kubectl apply`."""
    try:
        body = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ApiError(400, f"error decoding YAML: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "error decoding YAML: the apply configuration must be an object")
    if not body.get("apiVersion") or not body.get("kind"):
        missing = "apiVersion" if not body.get("apiVersion") else "Kind"  # apimachinery's spelling
        raise ApiError(400, f"Object '{missing}' is missing in '{json.dumps(body)}'")
    return body


def check_manager(manager: str | None, force: bool, is_apply: bool) -> None:
    if is_apply and not manager:
        raise ApiError(
            422,
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
        )
    if force and not is_apply:
        raise ApiError(
            422, 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch'
        )


def _merge(live: Any, applied: Any, node: Obj | None) -> Any:
    node = node if node is not None else {}
    if isinstance(applied, dict) and isinstance(live, dict) and not schema.is_atomic_map(node) and schema.types(node):
        out = dict(live)
        for key, value in applied.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = _merge(live.get(key), value, schema.child(node, key))
        return out
    if isinstance(applied, list) and isinstance(live, list):
        kind, keys = schema.list_type(node)
        if kind == "set":
            return [*live, *(v for v in applied if v not in live)]
        if kind == "map":
            out_items = [clone(i) for i in live]
            for item in applied:
                ident = {k: item.get(k) for k in keys} if isinstance(item, dict) else {}
                idx = next(
                    (
                        n
                        for n, cur in enumerate(out_items)
                        if isinstance(cur, dict) and all(cur.get(k) == v for k, v in ident.items())
                    ),
                    None,
                )
                if idx is None:
                    out_items.append(clone(item))
                else:
                    out_items[idx] = _merge(out_items[idx], item, schema.items(node))
            return out_items
    return clone(applied)


def _conflict_error(conflicts: list[tuple[Obj, Path]]) -> ApiError:
    def who(entry: Obj) -> str:
        text = json.dumps(entry["manager"])
        if entry.get("subresource"):
            text += f' with subresource "{entry["subresource"]}"'
        if entry.get("operation") == "Update":
            text += f" using {entry.get('apiVersion')}"
        return text

    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {who(e)}", "field": path_string(p)}
        for e, p in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {who(entry)}: {path_string(path)}"
    else:
        lines: list[str] = []
        for manager in sorted({who(e) for e, _ in conflicts}):
            lines.append(f"conflicts with {manager}:")
            lines.extend(f"- {path_string(p)}" for e, p in conflicts if who(e) == manager)
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, message, "Conflict", {"causes": causes})


def apply(rt: ResourceType, live: Obj, applied: Obj, manager: str, force: bool) -> Obj:
    """The merged object with its managedFields; `live` is {} (plus identity) when creating."""
    managed = [(e, entry_fields(e)) for e in entries(live)]
    mine = next((i for i, (e, _) in enumerate(managed) if same_entry(e, manager, "Apply", "")), None)
    previous: FieldSet = managed[mine][1] if mine is not None else set()
    wanted = field_set(rt, applied)
    leaves = {p for p in wanted if not p[-1].startswith("k:")}
    config = {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")}
    # A conflict is a field another manager owns that this apply would change (an empty map applied
    # over a filled one changes nothing: maps merge).
    probe = _merge(clone(live), config, schema.root(rt))
    conflicts: list[tuple[Obj, Path]] = []
    for i, (entry, fields) in enumerate(managed):
        if i == mine:
            continue
        for path in sorted(fields & leaves):
            if value_at(live, path) != value_at(probe, path):
                conflicts.append((entry, path))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    taken = {p for _, p in conflicts}
    managed = [(e, f - taken) if i != mine else (e, f) for i, (e, f) in enumerate(managed)]
    others: FieldSet = set().union(*(f for i, (_, f) in enumerate(managed) if i != mine))
    base = clone(live)
    for path in sorted(previous - wanted, key=len, reverse=True):
        if path not in others:
            remove_at(base, path)
    merged: Obj = _merge(base, config, schema.root(rt))
    entry = managed[mine][0] if mine is not None else new_entry(rt, manager, "Apply", "")
    if mine is None:
        managed.append((entry, wanted))
    elif previous != wanted:
        managed[mine] = ({**entry, "time": new_entry(rt, manager, "Apply", "")["time"]}, wanted)
    set_entries(merged, managed)
    return merged
