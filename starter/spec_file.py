"""Reading a cluster spec file (the only file I/O around specs; models stay pure)."""

from __future__ import annotations

from pathlib import Path

import yaml

from models.spec import ClusterSpec, SpecError, parse_spec


def load_spec(path: str | Path) -> ClusterSpec:
    """Read and validate a cluster spec from a YAML file; errors name the file and each field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(str(path), ["the file must hold a mapping of spec fields"])
    return parse_spec(data, str(path))
