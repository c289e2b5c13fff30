"""The three patch types kube-apiserver accepts for built-in kinds.

No maintained strategic-merge-patch library exists on PyPI, so this is a small implementation driven
by the real schemas' `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` (the Go struct
tags). Lists without a merge strategy are replaced wholesale, as for Go fields without one.
"""

from __future__ import annotations

import json
from typing import Any

import jsonpatch

from . import schema
from .resources import ApiError, Obj, clone

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _list_strategy(node: Obj | None) -> tuple[bool, str | None]:
    """(merge, merge key) from the field's `x-kubernetes-patch-strategy` / `-merge-key` (the Go tags)."""
    node = node or {}
    merge = "merge" in str(node.get("x-kubernetes-patch-strategy", "")).split(",")
    return merge, node.get("x-kubernetes-patch-merge-key")


def strategic_merge(target: Any, patch: Any, node: Obj | None = None) -> Any:
    """Strategic merge patch along the schema (`node`), incl. `$patch: replace|delete`, `$retainKeys`,
    `$deleteFromPrimitiveList`; lists without a merge strategy are replaced, as in Go."""
    if not isinstance(patch, dict):
        return clone(patch)
    node = node or {}
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue  # element order is cosmetic here
        sub = schema.child(node, key) if node else None
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [x for x in result.get(field) or [] if x not in value]
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge(result.get(key), value, sub)
        elif isinstance(value, list) and (strategy := _list_strategy(sub))[0]:
            merge_key = strategy[1]
            current = list(result.get(key) or [])
            if merge_key is None:  # a merged list of primitives (finalizers): union, never replace
                result[key] = current + [x for x in value if x not in current]
            else:
                result[key] = _merge_list(current, value, merge_key, schema.items(sub or {}))
        else:
            result[key] = clone(value)
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _merge_list(target: list[Any], patch: list[Any], mkey: str, node: Obj) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [strategic_merge({}, i, node) for i in patch if not (isinstance(i, dict) and i.get("$patch"))]
    result = clone(target)
    for item in patch:
        if not isinstance(item, dict) or mkey not in item:
            result.append(clone(item))
            continue
        idx = next((n for n, cur in enumerate(result) if isinstance(cur, dict) and cur.get(mkey) == item[mkey]), None)
        if item.get("$patch") == "delete":
            result = [c for c in result if not (isinstance(c, dict) and c.get(mkey) == item[mkey])]
        elif idx is None:
            result.append(strategic_merge({}, item, node))
        else:
            result[idx] = strategic_merge(result[idx], item, node)
    return result


PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)


def patch_type(content_type: str) -> str:
    """The patch type of a PATCH request, or the real server's 415 (checked before the object is read)."""
    ctype = content_type.split(";", maxsplit=1)[0].strip().lower()
    if ctype not in PATCH_TYPES:
        raise ApiError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(PATCH_TYPES),
        )
    return ctype


def apply_patch(ctype: str, target: Obj, raw: bytes, node: Obj) -> Obj:
    """A JSON, merge or strategic merge patch (`ctype` from patch_type; apply is apply.py's)."""
    try:
        patch = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, f"error decoding patch: {exc}") from exc
    if ctype == JSON_PATCH:
        if not isinstance(patch, list):
            raise ApiError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            result = jsonpatch.apply_patch(target, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, TypeError) as exc:
            raise ApiError(
                422, f"the server rejected our request due to an error in our request: {exc}", "Invalid"
            ) from exc
    elif not isinstance(patch, dict):
        raise ApiError(400, "json: cannot unmarshal array into Go value of type map[string]interface {}")
    elif ctype == MERGE_PATCH:
        result = merge_patch(target, patch)
    else:
        result = strategic_merge(target, patch, node)
    if not isinstance(result, dict):
        raise ApiError(422, "patch did not produce an object", "Invalid")
    return result
