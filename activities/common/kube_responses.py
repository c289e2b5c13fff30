"""Reading Kubernetes API responses the same way for the host and the tenant clusters."""

from __future__ import annotations

import json
from typing import Any, Final, cast

import urllib3
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]

TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})


def response_json(response: object) -> Obj:
    """JSON of a response fetched with ``_preload_content=False`` (an urllib3 response).

    Raw JSON rather than the client's models: client v37 validates with pydantic and would refuse
    fields a newer API server sends.
    """
    raw = cast(Any, response)
    try:
        data = raw.data
    finally:
        raw.release_conn()
    return cast(Obj, json.loads(data)) if data else {}


def is_transient(exc: BaseException) -> bool:
    """Worth waiting out: throttling, 5xx, timeouts and broken connections."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUS
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def short_reason(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:200]
