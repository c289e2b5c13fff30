"""A fleet whose nodes can be made NotReady (node auto-repair tests and the recorded lift scenario).

A node in ``RepairFleet.down`` is NotReady in the tenant API until its VM is created again or
restarted with a new restart token (what a reboot does to a hung kubelet).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.provider import EnsureResult, NodeRef
from tests.fakes import typed_activity
from tests.fakes_upgrade import FakeFleet, _name


@dataclass
class RepairFleet(FakeFleet):
    down: set[str] = field(default_factory=set)

    def _settle(self, node: str) -> None:
        super()._settle(node)
        with self.lock:
            if node in self.down and node in self.tenant:
                self.tenant[node].ready = False

    def activities(self, provider: str = "kvm") -> list[Callable[..., Any]]:
        found = {_name(fn): fn for fn in super().activities(provider)}
        ensure_node = found[f"{provider}.ensure_node"]
        backend = self

        def restarted(arg: NodeRef) -> EnsureResult:
            if arg.restart_token:
                with backend.lock:
                    backend.down.discard(arg.node)
            result: EnsureResult = ensure_node(arg)
            return result

        found[f"{provider}.ensure_node"] = typed_activity(f"{provider}.ensure_node", NodeRef, EnsureResult)(restarted)
        return list(found.values())

    def repair_calls(self) -> list[tuple[str, str]]:
        return self.node_calls("kvm.ensure_node", "kvm.ensure_node_absent", "pki.ensure_node_certificates_absent")
