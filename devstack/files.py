"""Small file helpers of the local stack: private atomic writes, dotenv quoting, config digests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def env_quote(value: str) -> str:
    """dotenv: bare unless the value needs quoting (single quotes are literal)."""
    if value and all(c.isalnum() or c in "-_.:/{}@%+,=" for c in value):
        return value
    return "'" + value.replace("'", "\\'") + "'"


def digest(parts: Any) -> str:
    """A short stable hash of what a service was started with: a change means restart."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
