"""The certificate-rotation schedule of a cluster (a Temporal Schedule ``cert-rotation/<id>``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from models.base import FrozenModel
from models.spec import ClusterSpec


class RotationScheduleInput(FrozenModel):
    spec: ClusterSpec = Field(description="interval from spec.certificates.rotation_interval")
    paused: bool | None = Field(default=None, description="None leaves the pause state as it is")
    note: str = ""


class RotationScheduleResult(FrozenModel):
    schedule_id: str
    exists: bool = True
    interval: timedelta | None = None
    paused: bool = False
    note: str = ""
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[datetime] = Field(default_factory=list)
    changed: bool = Field(default=False, description="created or updated by this call")


class ScheduleRef(FrozenModel):
    cluster_id: str


class ScheduledRotationInput(FrozenModel):
    """What the schedule's action starts with: only the id; the entity holds everything else."""

    cluster_id: str


class RequestRotationInput(FrozenModel):
    cluster_id: str
    request_id: str = Field(description="update id: a retried request is the same update, run once")


class SyncScheduleRequest(FrozenModel):
    """Entity update ``sync_schedule``: re-read the schedule (after a pause or resume) into the status."""

    requested_by: str = ""


class SyncScheduleResult(FrozenModel):
    next_rotation: datetime | None = None
    paused: bool = False
