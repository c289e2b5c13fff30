"""Input and result of the node repair operation (``workflows.node_repair``, OperationKind repair-node)."""

from __future__ import annotations

from pydantic import Field

from models.base import FrozenModel
from models.cluster import NodeRecord, OperationStatus
from models.durations import Duration
from models.pki import CertificateRecord
from models.spec import ClusterSpec


class NodeRepairInput(FrozenModel):
    spec: ClusterSpec
    node: str = Field(description="the unhealthy node")
    reason: str = Field(description="why it is unhealthy, as observed")
    nodes: list[NodeRecord] = Field(description="every node the cluster has (the next free worker index)")
    repair_number: int = Field(description="numbers the entity's repairs: a master's restart token")
    node_ready_timeout: Duration | None = Field(default=None, description="None: the policy's default")
    drain_timeout: Duration | None = Field(default=None, description="None: the policy's default")


class NodeRepairResult(FrozenModel):
    node: str
    replacement: NodeRecord | None = Field(default=None, description="the new worker (None: restarted in place)")
    restarted: bool = False
    certificates: list[CertificateRecord] = Field(default_factory=list, description="the replacement's")
    drain: str = Field(default="", description="how the old worker's drain ended")
    operation: OperationStatus | None = None

    def describe(self) -> str:
        if self.replacement is not None:
            return f"{self.node} replaced by {self.replacement.name}"
        return f"{self.node} restarted in place" if self.restarted else f"{self.node}: nothing done"
