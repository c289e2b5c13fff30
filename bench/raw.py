""" "Raw backend work": the calls an operation's activities made, made again without Temporal.

The product's own child workflow history says which activities ran, in which waves, with which
inputs. After the product has torn its cluster down, the bench calls the same activity methods
(built by ``worker.backends.build_activities`` from the stack's settings, as the worker builds them)
with those recorded inputs, a wave's calls at once, in ``temporalio.testing.ActivityEnvironment``
(a heartbeat goes nowhere). Waits poll tightly: every activity object's ``poll_interval`` is set to
``RAW_POLL_SECONDS`` where it has one. What is left is the backends' own time for the same work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import resource
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from config.settings import Settings

RAW_ATTEMPT = timedelta(minutes=10)
"""Each replayed call's start-to-close: the product's longest waits fit in it."""
RAW_POLL_SECONDS = 0.02


@dataclass
class RecordedCall:
    activity: str
    payloads: list[Payload]


def recorded_waves(events: Sequence[Any]) -> list[list[RecordedCall]]:
    """The activity calls of a history (protobuf events), grouped by the workflow task that scheduled them."""
    waves: list[list[RecordedCall]] = []
    current: list[RecordedCall] = []
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            if current:
                waves.append(current)
            current = []
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            current.append(RecordedCall(attributes.activity_type.name, list(attributes.input.payloads)))
    if current:
        waves.append(current)
    return waves


class RawBackends:
    """The worker's activity methods by name, with tight polling, callable outside Temporal."""

    def __init__(self, settings: Settings, client: Client) -> None:
        from worker.backends import build_activities

        self.client = client
        self.by_name: dict[str, Callable[..., Any]] = {}
        for method in build_activities(settings, client):
            definition = activity._Definition.from_callable(method)
            if definition is None or definition.name is None:
                continue
            self.by_name[definition.name] = method
            owner = getattr(method, "__self__", None)
            if owner is not None and isinstance(getattr(owner, "poll_interval", None), int | float):
                owner.poll_interval = RAW_POLL_SECONDS

    async def _call(self, call: RecordedCall) -> None:
        method = self.by_name.get(call.activity)
        if method is None:
            raise LookupError(f"the worker has no activity {call.activity!r} to replay")
        hints = typing.get_type_hints(method)
        types = [hints.get(name, Any) for name in inspect.signature(method).parameters]
        args = await self.client.data_converter.decode(call.payloads, types)
        environment = ActivityEnvironment()
        # the test environment's default attempt is 1 s; waits are bounded by their attempt (activities/common/waits.py)
        environment.info = dataclasses.replace(environment.info, start_to_close_timeout=RAW_ATTEMPT)
        if inspect.iscoroutinefunction(method):
            await environment.run(method, *args)
        else:
            await asyncio.to_thread(environment.run, method, *args)

    async def replay(self, workflow_id: str) -> RawReplay:
        """Every activity call of that workflow made again, wave after wave: how long it took, and the
        CPU this process spent on it (the activity code and its backend clients, nothing of Temporal's
        but decoding the recorded inputs; the bench does nothing else meanwhile)."""
        history = await self.client.get_workflow_handle(workflow_id).fetch_history()
        waves = recorded_waves(history.events)
        began, cpu_before = time.monotonic(), _process_cpu_seconds()
        for wave in waves:
            await asyncio.gather(*(self._call(call) for call in wave))
        return RawReplay(seconds=time.monotonic() - began, cpu_seconds=_process_cpu_seconds() - cpu_before)


@dataclass(frozen=True)
class RawReplay:
    seconds: float
    cpu_seconds: float
    """The bench process's user and system CPU over the replay, all its threads."""


def _process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
