"""Reading a cluster spec file (the only file I/O around specs; models stay pure).

A spec file is small, UTF-8, one YAML document holding one mapping. Anything else is refused with
one line naming the file and what is wrong — before YAML builds anything from it: the file's size is
checked first, then its encoding, then its shape (documents, nesting, aliases) from the event stream,
which needs no recursion and builds no objects; only then is it loaded, with duplicate keys refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from models.spec import ClusterSpec, SpecError, parse_spec, shown

MAX_SPEC_BYTES = 256 * 1024
"""A cluster spec is well under a kilobyte; a quarter megabyte leaves room for comments."""
MAX_NESTING = 16
"""The spec nests three levels deep (``aws.availability_zones[0]``); deeper is not a spec."""
MAX_YAML_ERROR_LENGTH = 200


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML says keys are unique;
    PyYAML silently keeps the last, which would hide a typo'd override)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_line.get(key)
            except TypeError:  # a list or mapping used as a key
                raise ConstructorError(None, None, "a mapping key must be a plain value", key_node.start_mark) from None
            if first is not None:
                raise ConstructorError(
                    None, None, f"key {shown(key)} appears twice in one mapping (first on line {first})",
                    key_node.start_mark,
                )  # fmt: skip
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _line(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark is not None else 0


def _check_shape(text: str) -> str | None:
    """Why the YAML stream is not one plain document, or None; reads events only (no recursion)."""
    depth = documents = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                return f"holds more than one YAML document (a second one starts on line {_line(event)})"
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                return f"nests deeper than {MAX_NESTING} levels (line {_line(event)}); a spec is flat"
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            return f"uses a YAML alias (line {_line(event)}); write the values out"
    return None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's messages quote the offending text and its context: one line, bounded.
    text = " ".join(str(exc).split())
    if len(text) > MAX_YAML_ERROR_LENGTH:
        text = text[:MAX_YAML_ERROR_LENGTH] + "..."
    return f"not valid YAML: {text}"


def read_spec_data(path: str | Path) -> Any:
    """The file's YAML document as plain data; SpecError with one line when it is not a spec file."""
    path = Path(path)
    source = str(path)

    def refuse(problem: str) -> SpecError:
        return SpecError(source, [f"<file>: {problem}"])

    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise refuse(f"larger than {MAX_SPEC_BYTES // 1024} KiB; a cluster spec is a few hundred bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    text = text.removeprefix("\ufeff")
    try:
        shape = _check_shape(text)
        if shape is not None:
            raise refuse(shape)
        data = yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        raise refuse(_yaml_problem(exc)) from None
    except RecursionError:  # a guard behind _check_shape: complex keys can nest too
        raise refuse(f"nests deeper than {MAX_NESTING} levels; a spec is flat") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise refuse(f"the file must hold a mapping of spec fields (it is {kind})")
    return data


def load_spec(path: str | Path) -> ClusterSpec:
    """Read and validate a cluster spec from a YAML file; errors name the file and each field."""
    data = read_spec_data(path)
    return parse_spec(data, str(path))
