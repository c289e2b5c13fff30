"""OpenAPI documents built from the real schemas (schema.py): `/openapi/v2` and `/openapi/v3/<group-version>`.

kubectl reads OpenAPI v3 for `kubectl explain`, for the patch metadata of client-side `apply` and to
learn that PATCH takes `fieldValidation`; v2 is its fallback. The schemas are converted the way
kube-apiserver publishes them: nullable type lists become one type, IntOrString and Quantity are
strings with a format, and (v3) a `$ref` with siblings is wrapped in `allOf`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from . import schema
from .resources import RESOURCES, VERSION_INFO, Obj, groups

V2_REF, V3_REF = "#/definitions/", "#/components/schemas/"


def _convert(node: Any, ref: str, v3: bool) -> Any:
    if isinstance(node, list):
        return [_convert(n, ref, v3) for n in node]
    if not isinstance(node, dict):
        return node
    if "oneOf" in node:  # IntOrString, Quantity
        kinds = schema.types(node)
        out: Obj = {k: v for k, v in node.items() if k != "oneOf"}
        out.update({"type": "string", "format": "int-or-string"} if "integer" in kinds else {"type": "string"})
        return out
    out = {}
    for key, value in node.items():
        if key == "$ref":
            out[key] = ref + value.removeprefix(schema.REF_PREFIX)
        elif key == "type" and isinstance(value, list):
            named = [t for t in value if t != "null"]
            if named:
                out[key] = named[0]
        elif key == "properties":
            out[key] = {name: _convert(sub, ref, v3) for name, sub in value.items()}
        else:
            out[key] = _convert(value, ref, v3)
    if v3 and "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


def _definition(name: str, ref: str, v3: bool) -> Obj:
    node: Obj = _convert(schema.definitions()[name], ref, v3)
    if node.get("x-kubernetes-group-version-kind"):  # the validator's own enums, not the server's
        for field in ("apiVersion", "kind"):
            node.get("properties", {}).get(field, {}).pop("enum", None)
    return node


def _closure(names: list[str]) -> list[str]:
    seen: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        text = json.dumps(schema.definitions()[name])
        for part in text.split('"$ref": "')[1:]:
            todo.append(part.split('"', 1)[0].removeprefix(schema.REF_PREFIX))
    return sorted(seen)


def _paths(group: str, version: str) -> Obj:
    """One PATCH operation per kind, only so kubectl sees `fieldValidation` (no requestBody: kubectl
    then takes the patch metadata from the schemas below)."""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths = {}
    for rt in RESOURCES:
        if (rt.group, rt.version) == (group, version):
            item = (
                f"{prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
                if rt.namespaced
                else f"{prefix}/{rt.plural}/{{name}}"
            )
            paths[item] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
    return paths


def v3_root() -> Obj:
    gvs = ["api/v1", *(f"apis/{g}/{v}" for g, vs in groups().items() for v in vs)]
    return {
        "paths": {
            gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=emulator-{VERSION_INFO['gitVersion']}"} for gv in gvs
        }
    }


@functools.cache
def v3_document(group: str, version: str) -> bytes:
    """The schemas of the group-version's kinds and everything they reference (cached: it is large)."""
    kinds = [
        name
        for rt in RESOURCES
        if (rt.group, rt.version) == (group, version)
        and (name := schema.definition_name(rt.group, rt.version, rt.kind))
    ]
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION_INFO["gitVersion"]},
        "paths": _paths(group, version),
        "components": {"schemas": {n: _definition(n, V3_REF, True) for n in _closure(kinds)}},
    }
    return json.dumps(doc).encode()


@functools.cache
def v2_document() -> bytes:
    paths: Obj = {}
    for group, versions in [("", ["v1"]), *groups().items()]:
        for version in versions:
            for path, ops in _paths(group, version).items():
                ops["patch"]["parameters"] = [{"name": "fieldValidation", "in": "query", "type": "string"}]
                paths[path] = ops
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": VERSION_INFO["gitVersion"]},
        "paths": paths,
        "definitions": {n: _definition(n, V2_REF, False) for n in sorted(schema.definitions())},
    }
    return json.dumps(doc).encode()
