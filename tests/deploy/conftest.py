"""The deploy tests reuse the end-to-end fixtures: a real local stack and worker processes."""

from __future__ import annotations

from tests.e2e.conftest import local_stack

__all__ = ["local_stack"]
