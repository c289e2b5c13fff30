"""A stand-in cluster entity for fleet-rollout logic tests, registered under the entity's type name.

It answers the real entity's ``status`` query and its operation updates (``upgrade``,
``rotate_certificates``, ``rotate_ca``, ``control_upgrade``) with the real request and result
models, runs one operation at a time as the real one does, and records when each ran, so tests
can tell how many clusters were in flight at once. With ``hold`` an operation runs until the test
sends ``release``; with ``fail_message`` an upgrade fails the way a real one does (update failure).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from pydantic import Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from models.base import Model
from models.cluster import ClusterPhase, ClusterStatus, OperationKind, OperationState, OperationStatus
from models.operations import (
    RotateCaRequest,
    RotateCaResult,
    RotateCertificatesRequest,
    RotateCertificatesResult,
    UpgradeAction,
    UpgradeControl,
    UpgradeControlResult,
    UpgradeOutcome,
    UpgradeRequest,
    UpgradeResult,
)
from models.spec import ClusterSpec
from models.versions import upgrade_refusal


class FakeClusterInput(Model):
    spec: ClusterSpec
    phase: ClusterPhase = ClusterPhase.READY
    hold: bool = False
    fail_message: str = ""
    pause_message: str = Field(default="", description="an upgrade pauses with this and waits for release")
    earliest_expiry: datetime | None = None


class FakeOperation(Model):
    kind: str
    requested_by: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str = ""
    node_ready_timeout: timedelta | None = None


class FakeLog(Model):
    operations: list[FakeOperation] = Field(default_factory=list)
    abort_requests: int = 0


@workflow.defn(name="Cluster")
class FakeClusterWorkflow:
    @workflow.init
    def __init__(self, input: FakeClusterInput) -> None:
        self._input = input
        self.status = ClusterStatus(
            cluster_id=input.spec.id,
            spec=input.spec,
            phase=input.phase,
            kubernetes_version=input.spec.kubernetes_version,
            earliest_expiry=input.earliest_expiry,
        )
        self.log = FakeLog()
        self._lock = asyncio.Lock()
        self._released = 0
        self._abort = False
        self._done = False

    @workflow.run
    async def run(self, input: FakeClusterInput) -> None:
        await workflow.wait_condition(lambda: self._done and workflow.all_handlers_finished())

    @workflow.query(name="status")
    def get_status(self) -> ClusterStatus:
        return self.status

    @workflow.query(name="fake_log")
    def get_log(self) -> FakeLog:
        return self.log

    @workflow.signal(name="release")
    def release(self) -> None:
        self._released += 1

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self._done = True

    async def _operate(
        self, kind: str, requested_by: str, node_ready_timeout: timedelta | None = None
    ) -> FakeOperation:
        async with self._lock:
            op = FakeOperation(
                kind=kind, requested_by=requested_by, started_at=workflow.now(), node_ready_timeout=node_ready_timeout
            )
            self.log.operations.append(op)
            if kind == "upgrade" and self._input.pause_message:
                # As the real entity shows a paused upgrade: current operation, state paused, why.
                self.status.current = OperationStatus(
                    kind=OperationKind.UPGRADE,
                    workflow_id=f"cluster/{self.status.cluster_id}/upgrade/2",
                    state=OperationState.PAUSED,
                    requested_by=requested_by,
                    message=self._input.pause_message,
                )
            if self._input.hold or self._input.pause_message:
                held = len(self.log.operations)
                await workflow.wait_condition(lambda: self._released >= held or self._abort)
            op.finished_at = workflow.now()
            self.status.current = None
            return op

    @workflow.update
    async def upgrade(self, request: UpgradeRequest) -> UpgradeResult:
        before = self.status.kubernetes_version
        op = await self._operate("upgrade", request.requested_by, request.node_ready_timeout)
        if self._abort:
            self._abort = False
            op.outcome = "aborted"
            return UpgradeResult(
                outcome=UpgradeOutcome.ABORTED,
                from_version=before,
                to_version=request.version,
                kubernetes_version=before,
            )
        if self._input.fail_message:
            op.outcome = "failed"
            raise ApplicationError(self._input.fail_message, non_retryable=True)
        op.outcome = "succeeded"
        self.status.kubernetes_version = request.version
        return UpgradeResult(
            outcome=UpgradeOutcome.COMPLETED,
            from_version=before,
            to_version=request.version,
            kubernetes_version=request.version,
        )

    @upgrade.validator
    def _validate_upgrade(self, request: UpgradeRequest) -> None:
        refusal = upgrade_refusal(self.status.kubernetes_version, request.version)
        if refusal:
            raise ApplicationError(f"cannot upgrade {self.status.cluster_id}: {refusal}", non_retryable=True)

    @workflow.update
    async def rotate_certificates(self, request: RotateCertificatesRequest) -> RotateCertificatesResult:
        op = await self._operate("rotate-certificates", request.requested_by)
        op.outcome = "succeeded"
        return RotateCertificatesResult()

    @workflow.update
    async def rotate_ca(self, request: RotateCaRequest) -> RotateCaResult:
        op = await self._operate("rotate-ca", request.requested_by)
        op.outcome = "succeeded"
        return RotateCaResult(ca_issuer_id="fake-issuer")

    @workflow.update
    async def control_upgrade(self, control: UpgradeControl) -> UpgradeControlResult:
        running = [op for op in self.log.operations if op.kind == "upgrade" and op.finished_at is None]
        if not running:
            raise ApplicationError(f"no upgrade of {self.status.cluster_id} is running", non_retryable=True)
        if control.action is UpgradeAction.ABORT:
            self.log.abort_requests += 1
            self._abort = True
        return UpgradeControlResult(workflow_id=f"cluster/{self.status.cluster_id}/upgrade/1", action=control.action)
