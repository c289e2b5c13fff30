"""Runbook of the rotation schedule's action: ask the cluster to rotate, wait for the answer.

The entity runs the rotation itself, after whatever operation is ahead of it, so a rotation that
comes due during an upgrade waits instead of racing it. The request's id is this run's workflow
id: a retried request is the same update, and the entity runs it once.
"""

from __future__ import annotations

from temporalio import workflow

from models.operations import RotateCertificatesResult
from models.schedules import ScheduledRotationInput
from workflows import activity_stubs as act
from workflows.names import SCHEDULED_ROTATION_WORKFLOW


@workflow.defn(name=SCHEDULED_ROTATION_WORKFLOW)
class ScheduledRotationWorkflow:
    @workflow.run
    async def run(self, input: ScheduledRotationInput) -> RotateCertificatesResult:
        workflow.set_current_details(f"waiting for cluster {input.cluster_id} to rotate its certificates")
        result = await act.request_rotation(input.cluster_id, request_id=workflow.info().workflow_id)
        workflow.set_current_details(
            f"rotated {len(result.reissued)} certificates of {input.cluster_id}; "
            f"restarted {', '.join(result.restarted_nodes) or 'no nodes'}"
        )
        return result
