"""The ``reconcile`` operation: a drift check, and the repair of what it found."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from models.base import FrozenModel, Model
from models.cluster import OperationStatus
from models.drift import DriftItem
from models.pki import CertificateRecord
from models.spec import ClusterSpec


class IfBusy(StrEnum):
    WAIT = "wait"
    """Queue behind the running operation (on-demand ``tenantctl reconcile``)."""
    SKIP = "skip"
    """Do not check now (the periodic check: the next one comes soon enough)."""


class ReconcileRequest(FrozenModel):
    dry_run: bool = False
    requested_by: str = ""
    if_busy: IfBusy = IfBusy.WAIT


class ReconcileInput(FrozenModel):
    spec: ClusterSpec
    nodes: dict[str, str] = Field(description="node name -> the Kubernetes version it runs")
    dry_run: bool = False


class ReconcileResult(Model):
    drift: list[DriftItem] = Field(default_factory=list, description="what the check found")
    repaired: list[str] = Field(default_factory=list, description="the repair steps that ran")
    restarted: list[str] = Field(default_factory=list, description="nodes restarted for re-issued certificates")
    certificates: list[CertificateRecord] = Field(default_factory=list, description="records of re-issued ones")
    dry_run: bool = False
    waited_for: str = Field(default="", description="the operation this check queued behind, if any")
    skipped: str = Field(default="", description="why no check ran")
    operation: OperationStatus | None = None

    @property
    def in_sync(self) -> bool:
        return not self.drift and not self.skipped
