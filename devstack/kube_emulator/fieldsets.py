"""Field sets and `metadata.managedFields`: which manager owns which field, as structured-merge-diff keeps it.

A field path is a tuple of FieldsV1 keys (`f:spec`, `k:{"name":"web"}`, `v:"x"`); a set holds every
leaf and every list item. Apply (apply.py) and every other write (create, update, patch) record the
fields they set here; other writes take ownership of what they change without conflicts.
"""

from __future__ import annotations

import json
from typing import Any

from . import schema
from .resources import Obj, ResourceType, clone, now_iso

Path = tuple[str, ...]
FieldSet = set[Path]
MISSING = object()
# Never owned by anyone (the apiserver strips them before computing field sets).
_UNTRACKED_TOP = ("apiVersion", "kind")
_UNTRACKED_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def item_key(item: Any, keys: tuple[str, ...]) -> str:
    return "k:" + _compact({k: item[k] for k in keys if isinstance(item, dict) and k in item})


def tracked_part(rt: ResourceType, obj: Obj, subresource: str = "") -> Obj:
    """The object as field ownership sees it: no identity/system metadata; on kinds whose status is a
    subresource, the main resource owns everything but status and /status owns only status."""
    if subresource == "status":
        return {"status": obj["status"]} if obj.get("status") else {}
    out = {k: v for k, v in obj.items() if k not in _UNTRACKED_TOP}
    if "status" in rt.subresources:
        out.pop("status", None)
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _UNTRACKED_META}
    if meta:
        out["metadata"] = meta
    else:
        out.pop("metadata", None)
    return out


def field_set(rt: ResourceType, obj: Obj, subresource: str = "") -> FieldSet:
    out: FieldSet = set()
    _collect(tracked_part(rt, obj, subresource), schema.root(rt), (), out)
    return out


def _collect(value: Any, node: Obj | None, prefix: Path, out: FieldSet) -> None:
    node = node if node is not None else {}
    if isinstance(value, dict) and value and not schema.is_atomic_map(node) and schema.types(node):
        for key, sub in value.items():
            _collect(sub, schema.child(node, key), (*prefix, f"f:{key}"), out)
        return
    if isinstance(value, list) and value:
        kind, keys = schema.list_type(node)
        if kind == "set":
            out.update((*prefix, "v:" + _compact(v)) for v in value)
            return
        if kind == "map":
            for item in value:
                item_path = (*prefix, item_key(item, keys))
                out.add(item_path)
                _collect(item, schema.items(node), item_path, out)
            return
    if prefix:
        out.add(prefix)


def map_paths(rt: ResourceType, obj: Obj, subresource: str = "") -> FieldSet:
    """Non-empty granular maps (labels, data): an Update that adds one owns the map itself too."""
    out: FieldSet = set()

    def walk(value: Any, node: Obj | None, prefix: Path) -> None:
        if not isinstance(value, dict) or node is None or schema.is_atomic_map(node):
            return
        if not schema.is_struct(node) and "object" in schema.types(node):
            if value and prefix:
                out.add(prefix)
            return
        for key, sub in value.items():
            walk(sub, schema.child(node, key), (*prefix, f"f:{key}"))
        # list items are not descended into: their "." comes from the item path already

    walk(tracked_part(rt, obj, subresource), schema.root(rt), ())
    return out


def value_at(obj: Any, path: Path) -> Any:
    cur = obj
    for elem in path:
        tag, _, rest = elem.partition(":")
        if tag == "f":
            cur = cur.get(rest, MISSING) if isinstance(cur, dict) else MISSING
        elif tag == "k" and isinstance(cur, list):
            want = json.loads(rest)
            cur = next((i for i in cur if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())), MISSING)
        elif tag == "v" and isinstance(cur, list):
            cur = json.loads(rest) if json.loads(rest) in cur else MISSING
        else:
            return MISSING
        if cur is MISSING:
            return MISSING
    return cur


def remove_at(obj: Any, path: Path) -> None:
    parent = value_at(obj, path[:-1])
    tag, _, rest = path[-1].partition(":")
    if tag == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif tag == "k" and isinstance(parent, list):
        want = json.loads(rest)
        parent[:] = [i for i in parent if not (isinstance(i, dict) and all(i.get(k) == v for k, v in want.items()))]
    elif tag == "v" and isinstance(parent, list):
        parent[:] = [i for i in parent if i != json.loads(rest)]


def path_string(path: Path) -> str:
    """structured-merge-diff's notation: `.spec.containers[name="web"].image`, `.metadata.finalizers[="x"]`."""
    out = ""
    for elem in path:
        tag, _, rest = elem.partition(":")
        if tag == "f":
            out += f".{rest}"
        elif tag == "k":
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(rest).items()) + "]"
        else:
            out += f"[={rest}]"
    return out


# --- FieldsV1 ------------------------------------------------------------------------------------


def to_fields_v1(fields: FieldSet) -> Obj:
    tree: Obj = {}
    for path in sorted(fields):
        node = tree
        for elem in path:
            node = node.setdefault(elem, {})
    for path in fields:  # a member that also has members below it is marked with "."
        node = tree
        for elem in path:
            node = node[elem]
        if node and "." not in node:
            node["."] = {}
    return tree


def from_fields_v1(tree: Obj, prefix: Path = ()) -> FieldSet:
    out: FieldSet = set()
    for key, sub in (tree or {}).items():
        if key == ".":
            out.add(prefix)
        elif sub:
            out |= from_fields_v1(sub, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


# --- managedFields bookkeeping -------------------------------------------------------------------


def entries(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def entry_fields(entry: Obj) -> FieldSet:
    return from_fields_v1(entry.get("fieldsV1") or {})


def same_entry(entry: Obj, manager: str, operation: str, subresource: str) -> bool:
    return (
        entry.get("manager") == manager
        and entry.get("operation") == operation
        and entry.get("subresource", "") == subresource
    )


def set_entries(obj: Obj, managed: list[tuple[Obj, FieldSet]]) -> None:
    """Write back the entries, dropping managers that own nothing any more."""
    out = []
    for entry, fields in managed:
        if fields:
            out.append({**entry, "fieldsV1": to_fields_v1(fields)})
    meta = obj.setdefault("metadata", {})
    if out:
        meta["managedFields"] = out
    else:
        meta.pop("managedFields", None)


def new_entry(rt: ResourceType, manager: str, operation: str, subresource: str) -> Obj:
    entry: Obj = {
        "manager": manager,
        "operation": operation,
        "apiVersion": rt.api_version,
        "time": now_iso(),
        "fieldsType": "FieldsV1",
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def record_update(rt: ResourceType, old: Obj | None, new: Obj, manager: str, subresource: str = "") -> None:
    """A non-apply write by `manager`: it owns what it changed; nobody keeps what it removed."""
    part = subresource if subresource == "status" else ""  # /scale writes spec.replicas
    old_fields = field_set(rt, old, part) if old is not None else set()
    new_fields = field_set(rt, new, part)
    changed = {p for p in new_fields if p not in old_fields or value_at(old, p) != value_at(new, p)}
    changed |= {p for p in map_paths(rt, new, part) if old is None or value_at(old, p) is MISSING}
    removed = old_fields - new_fields
    if old is not None:
        removed |= {p for p in map_paths(rt, old, part) if value_at(new, p) is MISSING}
    managed = [(e, entry_fields(e)) for e in entries(old)] if old is not None else []
    if not changed and not removed:
        set_entries(new, managed)
        return
    taken = changed | removed
    managed = [(e, f - taken) for e, f in managed]
    mine = next((i for i, (e, _) in enumerate(managed) if same_entry(e, manager, "Update", subresource)), None)
    if changed:
        if mine is None:
            managed.append((new_entry(rt, manager, "Update", subresource), set(changed)))
        else:
            entry, fields = managed[mine]
            managed[mine] = ({**entry, "time": now_iso(), "apiVersion": rt.api_version}, fields | changed)
    set_entries(new, managed)


def carry_over(old: Obj, new: Obj) -> None:
    """Keep the stored managedFields when a writer sent none or an edited copy (they are the server's)."""
    new.setdefault("metadata", {})["managedFields"] = clone(entries(old))
