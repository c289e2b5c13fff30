"""Errors of the local stack: every message says what is wrong and what to do about it."""

from __future__ import annotations


class StackError(RuntimeError):
    """The local stack could not be brought to the requested state; the message says why."""


class PortInUseError(StackError):
    """A port the stack needs is taken by a process that is not part of this stack."""

    def __init__(self, port: int, purpose: str, owner: str | None = None, field: str = "") -> None:
        self.port, self.purpose, self.owner, self.field = port, purpose, owner, field
        by = f"another process ({owner})" if owner else "another process"
        super().__init__(f"port {port} ({purpose}) is already in use by {by}; stop it or set other ports")
