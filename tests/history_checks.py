"""Checks over fetched workflow histories: no private key may ever be in one, and each replays.

Payloads in a history are base64-encoded JSON, so a plain text search would miss a PEM key;
every payload is decoded before it is searched.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

PRIVATE_KEY_MARKERS = (b"PRIVATE KEY-----", b"PRIVATE KEY", b"private_key")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def decoded_payloads(history_json: dict[str, Any]) -> Iterator[bytes]:
    """Every string of the history, and its base64 decoding where it is base64."""
    for text in _strings(history_json):
        yield text.encode()
        try:
            yield base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            continue


def private_key_leaks(history: WorkflowHistory) -> list[str]:
    data = json.loads(history.to_json())
    leaks = []
    for blob in decoded_payloads(data):
        for marker in PRIVATE_KEY_MARKERS:
            if marker in blob:
                leaks.append(blob[:120].decode(errors="replace"))
    return leaks


def assert_no_private_key(history: WorkflowHistory) -> None:
    leaks = private_key_leaks(history)
    assert not leaks, f"history of {history.workflow_id} holds private key material: {leaks[:3]}"


async def assert_replays(history: WorkflowHistory) -> None:
    """The current code replays ``history`` exactly: a worker that lost its cache can take it over.

    A history written out of order (seen: an update accepted in the task after a legacy query
    had applied new events) is only found this way; the live run itself goes on as if nothing
    were wrong until the next replay.
    """
    from worker.registry import WORKFLOWS, sandbox_runner

    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=sandbox_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{history.workflow_id} does not replay: {result.replay_failure}"
