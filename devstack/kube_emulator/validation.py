"""Per-kind validation after defaulting: 422 Invalid with apimachinery's field paths and wording.

Checked on every write: names, label keys and values, ConfigMap/Secret keys, immutable fields
(immutable ConfigMaps and Secrets, a Secret's type, a Deployment's selector, a Service's cluster IP),
Deployment replicas/selector/template and pod specs (containers with names and images). All errors of
one write are reported together, as `Kind "name" is invalid: [a: ..., b: ...]`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .resources import DNS1123_LABEL, DNS1123_SUBDOMAIN, ApiError, Obj, ResourceType
from .selectors import match_selector_object

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
LABEL_DETAIL = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
NAME_PART_DETAIL = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
SUBDOMAIN_DETAIL = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_NAME_DETAIL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
CONFIG_KEY_DETAIL = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
IMMUTABLE_SET = "field is immutable when `immutable` is set"


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str  # FieldValueRequired / FieldValueInvalid / FieldValueForbidden
    body: str  # what follows "<field>: "

    @property
    def text(self) -> str:
        return f"{self.field}: {self.body}"


def go_value(value: Any) -> str:
    """How Go's %v / %#v prints the value in an Invalid error (strings quoted, maps Go-typed)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return "map[string]string{" + ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(field, "FieldValueInvalid", f"Invalid value: {go_value(value)}: {detail}")


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(field, "FieldValueForbidden", f"Forbidden: {detail}")


def raise_invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> None:
    if not errors:
        return
    title = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    summary = errors[0].text if len(errors) == 1 else "[" + ", ".join(e.text for e in errors) + "]"
    details = {
        "name": name,
        "group": rt.group,
        "kind": rt.kind,
        "causes": [{"reason": e.reason, "message": e.body, "field": e.field} for e in errors],
    }
    raise ApiError(422, f'{title} "{name}" is invalid: {summary}', details=details)


def validate_name(rt: ResourceType, name: str) -> None:
    raise_invalid(rt, name, _name_errors(rt, name))


def _name_errors(rt: ResourceType, name: str) -> list[FieldError]:
    if not name:
        return [required("metadata.name", "name or generateName is required")]
    if rt.name_rule == "label" and (len(name) > 63 or not DNS1123_LABEL.match(name)):
        return [invalid("metadata.name", name, LABEL_NAME_DETAIL)]
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return [invalid("metadata.name", name, SUBDOMAIN_DETAIL)]
    return []


def _qualified_name_errors(field: str, key: str) -> list[FieldError]:
    prefix, _, part = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return [invalid(field, key, "prefix part " + SUBDOMAIN_DETAIL)]
    if not part:
        return [invalid(field, key, "name part must be non-empty")]
    if len(part) > 63:
        return [invalid(field, key, "name part must be no more than 63 characters")]
    if not _NAME_PART.match(part):
        return [invalid(field, key, NAME_PART_DETAIL)]
    return []


def _labels_errors(field: str, labels: Any) -> list[FieldError]:
    errors: list[FieldError] = []
    for key, value in (labels or {}).items():
        errors += _qualified_name_errors(field, key)
        text = value if isinstance(value, str) else ""
        if len(text) > 63:
            errors.append(invalid(field, text, "must be no more than 63 characters"))
        elif not _LABEL_VALUE.match(text):
            errors.append(invalid(field, text, LABEL_DETAIL))
    return errors


def _meta_errors(meta: Obj, field: str = "metadata") -> list[FieldError]:
    errors = _labels_errors(f"{field}.labels", meta.get("labels"))
    for key in meta.get("annotations") or {}:
        errors += _qualified_name_errors(f"{field}.annotations", key.lower())
    return errors


def _keys_errors(obj: Obj) -> list[FieldError]:
    errors: list[FieldError] = []
    for section in ("data", "binaryData"):
        for key in obj.get(section) or {}:
            if len(key) > 253 or not _CONFIG_KEY.match(key):
                errors.append(invalid(f"{section}[{key}]", key, CONFIG_KEY_DETAIL))
    return errors


def _immutable_data_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    if old is None or not old.get("immutable"):
        return []
    errors = []
    if not obj.get("immutable"):
        errors.append(forbidden("immutable", IMMUTABLE_SET))
    for section in ("data", "binaryData"):
        if (obj.get(section) or {}) != (old.get(section) or {}):
            errors.append(forbidden(section, IMMUTABLE_SET))
    return errors


def pod_spec_errors(spec: Any, field: str) -> list[FieldError]:
    spec = spec if isinstance(spec, dict) else {}
    containers = spec.get("containers") or []
    if not containers:
        return [required(f"{field}.containers")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(kind) or []):
            path, name = f"{field}.{kind}[{i}]", (container or {}).get("name") or ""
            if not name:
                errors.append(required(f"{path}.name"))
            elif len(name) > 63 or not DNS1123_LABEL.match(name):
                errors.append(invalid(f"{path}.name", name, LABEL_NAME_DETAIL))
            elif name in seen:
                errors.append(FieldError(f"{path}.name", "FieldValueDuplicate", f"Duplicate value: {json.dumps(name)}"))
            seen.add(name)
            if not (container or {}).get("image"):
                errors.append(required(f"{path}.image"))
    return errors


POD_UPDATE_DETAIL = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _pod_update_errors(obj: Obj, old: Obj) -> list[FieldError]:
    """A pod's spec is fixed once created, but for images, the deadline and added tolerations."""

    def frozen(spec: Any) -> Obj:
        out = dict(spec) if isinstance(spec, dict) else {}
        for key in ("activeDeadlineSeconds", "terminationGracePeriodSeconds", "tolerations"):
            out.pop(key, None)
        for kind in ("containers", "initContainers"):
            out[kind] = [{k: v for k, v in (c or {}).items() if k != "image"} for c in out.get(kind) or []]
        return out

    spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
    kept = all(t in (spec.get("tolerations") or []) for t in old_spec.get("tolerations") or [])
    if frozen(spec) != frozen(old_spec) or not kept:
        return [forbidden("spec", POD_UPDATE_DETAIL)]
    return []


def _selector_text(selector: Any) -> str:
    """Go's %#v of a *v1.LabelSelector, as the immutability error prints it."""
    selector = selector or {}
    labels = selector.get("matchLabels")
    shown = go_value(labels) if labels else "map[string]string(nil)"
    exprs = (
        "[]v1.LabelSelectorRequirement(nil)"
        if not selector.get("matchExpressions")
        else "[]v1.LabelSelectorRequirement{...}"
    )
    return f"v1.LabelSelector{{MatchLabels:{shown}, MatchExpressions:{exprs}}}"


def _deployment_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors: list[FieldError] = []
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        errors.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        errors.append(required("spec.selector"))
    elif not match_selector_object(selector, labels):
        errors.append(invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`"))
    if old is not None and selector != (old.get("spec") or {}).get("selector"):
        errors.append(
            FieldError(
                "spec.selector", "FieldValueInvalid", f"Invalid value: {_selector_text(selector)}: field is immutable"
            )
        )
    errors += _labels_errors("spec.template.metadata.labels", labels)
    errors += pod_spec_errors(template.get("spec"), "spec.template.spec")
    return errors


def _service_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec, old_spec = obj.get("spec") or {}, (old or {}).get("spec") or {}
    errors: list[FieldError] = []
    if spec.get("type") != "ExternalName" and not spec.get("ports") and spec.get("clusterIP") != "None":
        errors.append(required("spec.ports"))
    for i, port in enumerate(spec.get("ports") or []):
        number = (port or {}).get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            errors.append(invalid(f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive"))
    was = old_spec.get("clusterIP")
    kept_type = old_spec.get("type") != "ExternalName" and spec.get("type") != "ExternalName"
    if old is not None and was and kept_type and spec.get("clusterIP") != was:
        errors.append(invalid("spec.clusterIPs[0]", spec.get("clusterIP") or "", "may not change once set"))
    return errors


def validate(rt: ResourceType, obj: Obj, old: Obj | None) -> None:
    """Raise the real server's 422 for everything wrong with this (defaulted) object."""
    meta = obj["metadata"]
    errors = _meta_errors(meta)
    if rt.kind in ("ConfigMap", "Secret"):
        errors += _keys_errors(obj) + _immutable_data_errors(obj, old)
        if rt.kind == "Secret" and old is not None and obj.get("type") != old.get("type"):
            errors.append(invalid("type", obj.get("type") or "", "field is immutable"))
    elif rt.kind == "Deployment":
        errors += _deployment_errors(obj, old)
    elif rt.kind == "Pod":
        errors += pod_spec_errors(obj.get("spec"), "spec") if old is None else _pod_update_errors(obj, old)
    elif rt.kind == "Service":
        errors += _service_errors(obj, old)
    raise_invalid(rt, meta.get("name", ""), errors)
