"""Checks over fetched workflow histories: no private key may ever be in one.

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
