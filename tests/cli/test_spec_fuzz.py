"""Property-based fuzzing of the spec loader and of ``tenantctl create -f`` (Hypothesis).

Specs start from the shipped examples and are mutated: any field (or an unknown one) set to nulls,
huge numbers, infinities, markup, control characters, emoji, long strings, lists and mappings; some
files are then damaged at the byte level (cut, bytes inserted, not UTF-8, extra documents, deep
nesting, duplicate keys). Whatever comes in: no traceback, no crash, an accepted spec or a refusal
whose every line names a field (or, for a file that is no spec at all, the file).
"""

from __future__ import annotations

import collections
import re
import socket
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from models.spec import ClusterSpec, SpecError
from starter.cli import app
from starter.spec_file import load_spec
from tests.specs import EXAMPLES

FUZZED_SPECS = 1000
COUNTS: collections.Counter[str] = collections.Counter()


def field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted field path of the spec (``masters.cpu``, ``aws.availability_zones``)."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        annotation = info.annotation
        for candidate in (annotation, *typing.get_args(annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                paths |= field_paths(candidate, f"{path}.")
    return paths


PATHS = field_paths(ClusterSpec)
SECTIONS = sorted(p for p in PATHS if "." in p)
INDEX = re.compile(r"\.\d+")


def names_a_field(line: str) -> bool:
    if line.startswith("<file>: ") or re.fullmatch(r"\.\.\. and \d+ more problems", line):
        return True
    path, sep, message = line.partition(": ")
    return bool(sep) and (INDEX.sub("", path) in PATHS or "unknown field" in message)


# --- strategies -------------------------------------------------------------------------------------
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["[/]", "[bold]x[/bold]", "[red", "\x00", "a\nb", "\u202e", "😀", "quay.io/😀", "-PT1H", "P99999999D",
         "99999999999999h", "1e400", "NaN", ".inf", "8Gi\n", "acme\n", " ", "", "null", "~", "yes", "0x10"]
    ),
    st.integers(min_value=1, max_value=20_000).map(lambda n: "y" * n),
)  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)),
    max_leaves=12,
)


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return data


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[last] = value


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    data = example(draw(st.sampled_from(["kvm-cluster.yaml", "aws-cluster.yaml"])))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        path = draw(st.one_of(st.sampled_from(sorted(PATHS)), st.sampled_from(SECTIONS), nasty_text))
        if not path or path.startswith(".") or path.endswith(".") or ".." in path:
            path = "x"
        if draw(st.integers(0, 9)) == 0 and "." not in path:
            data.pop(path, None)
        else:
            set_path(data, path, draw(values))
    return data


def damage(text: bytes, how: int, at: int, extra: bytes) -> bytes:
    at = at % (len(text) + 1)
    return [
        lambda: text,
        lambda: text[:at],
        lambda: text[:at] + extra + text[at:],
        lambda: text + b"\n---\n" + text,
        lambda: text + b"\nid: again\n",
        lambda: text + b"\nx: " + b"[" * 200 + b"]" * 200 + b"\n",
        lambda: b"\xef\xbb\xbf" + text,
        lambda: text.replace(b"acme", b"\xc3\x28"),
    ][how]()


@st.composite
def spec_files(draw: st.DrawFn) -> bytes:
    data = draw(mutated_specs())
    try:
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, UnicodeEncodeError):
        text = repr(data).encode("utf-8", "replace")
    if draw(st.integers(0, 3)) == 0:
        text = damage(text, draw(st.integers(0, 7)), draw(st.integers(0, 10**6)), draw(st.binary(max_size=12)))
    return text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


FUZZ = settings(
    max_examples=FUZZED_SPECS,
    deadline=None,
    derandomize=True,  # the same 1,000 specs on every run: a failure here reproduces
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(data=mutated_specs())
def test_loader_accepts_or_names_the_field(data: dict[str, Any]) -> None:
    from models.spec import parse_spec

    try:
        spec = parse_spec(data, "fuzz")
    except SpecError as exc:
        COUNTS["loader refused"] += 1
        assert exc.problems, exc
        for line in exc.problems:
            assert names_a_field(line), line
            assert len(line) <= 320, line
        return
    COUNTS["loader accepted"] += 1
    # What is accepted crosses the workflow boundary as JSON: it must come back the same.
    assert ClusterSpec.model_validate_json(spec.model_dump_json()) == spec


@FUZZ
@given(content=spec_files())
def test_create_refuses_with_field_names_and_no_traceback(
    content: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path: Path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(content)
    env = {"TENANTCTL_TEMPORAL_ADDRESS": f"127.0.0.1:{PORT}", "TENANTCTL_STATE_DIR": str(path.parent), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["create", "-f", str(path)], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "error: unexpected" not in result.output, result.output
    assert len(result.output) < 12_000, len(result.output)
    if result.exit_code == 3:  # valid: refused only because nothing listens at the Temporal address
        COUNTS["cli valid, Temporal unreachable"] += 1
        assert "cannot reach Temporal" in result.output, result.output
        return
    assert result.exit_code == 2, result.output
    try:
        load_spec(path)
    except SpecError as exc:
        problems = exc.problems
    else:
        raise AssertionError(f"the CLI refused a spec the loader accepts: {result.output}")
    COUNTS["cli refused: file" if problems[0].startswith("<file>") else "cli refused: fields"] += 1
    for line in problems:
        assert names_a_field(line), line


PORT = _closed_port()


def test_report_counts() -> None:
    """Runs after the fuzz tests in this module: prints what they saw (pytest -s shows it)."""
    print(f"\nfuzzed specs: {dict(sorted(COUNTS.items()))}")  # noqa: T201
    total_cli = sum(v for k, v in COUNTS.items() if k.startswith("cli"))
    total_loader = sum(v for k, v in COUNTS.items() if k.startswith("loader"))
    # Each fuzz test ran FUZZED_SPECS examples, unless it was deselected (-k) and counted nothing.
    assert total_cli in (0,) or total_cli >= FUZZED_SPECS, COUNTS
    assert total_loader in (0,) or total_loader >= FUZZED_SPECS, COUNTS
