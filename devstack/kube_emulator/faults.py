"""Run-time switchable fault injection (latency, a share of error responses, a full outage window)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .resources import ApiError

FAULT_CODES = (429, 500, 503)
_MESSAGES = {
    429: "the server has received too many requests and has asked us to try again later",
    500: 'an error on the server ("injected fault") has prevented the request from succeeding',
    503: "the server is currently unable to handle the request",
}


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0  # share of requests answered with one of error_codes
    error_codes: list[int] = field(default_factory=lambda: [500, 503, 429])
    outage_until: float | None = None  # epoch seconds; until then every request gets 503

    @classmethod
    def parse(cls, data: Any) -> Faults:
        """Validate an admin-endpoint body; unspecified fields take their defaults."""
        if not isinstance(data, dict):
            raise ApiError(400, "faults body must be a JSON object")
        unknown = set(data) - {"latency_ms", "error_rate", "error_codes", "outage_until", "outage_seconds"}
        if unknown:
            raise ApiError(400, f"unknown fault fields: {sorted(unknown)}")
        try:
            faults = cls(
                latency_ms=float(data.get("latency_ms") or 0),
                error_rate=float(data.get("error_rate") or 0),
                error_codes=[int(c) for c in data.get("error_codes", [500, 503, 429])],
                outage_until=float(data["outage_until"]) if data.get("outage_until") else None,
            )
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"invalid faults: {exc}") from exc
        if data.get("outage_seconds"):
            faults.outage_until = time.time() + float(data["outage_seconds"])
        if not 0 <= faults.error_rate <= 1 or faults.latency_ms < 0:
            raise ApiError(400, "error_rate must be within [0, 1] and latency_ms >= 0")
        if not faults.error_codes or any(c not in FAULT_CODES for c in faults.error_codes):
            raise ApiError(400, f"error_codes must be a non-empty subset of {list(FAULT_CODES)}")
        return faults


class FaultInjector:
    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        self._random = random.Random(seed)

    def get(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self._faults)

    def set(self, data: dict[str, Any]) -> dict[str, Any]:
        faults = Faults.parse(data)
        with self._lock:
            self._faults = faults
        return asdict(faults)

    def clear(self) -> dict[str, Any]:
        return self.set({})

    def apply(self) -> None:
        """Called before serving an API request: sleeps and/or raises the injected error."""
        with self._lock:
            f = self._faults
            code = None
            if f.outage_until is not None and time.time() < f.outage_until:
                code = 503
            elif f.error_rate and self._random.random() < f.error_rate:
                code = self._random.choice(f.error_codes)
        if f.latency_ms:
            time.sleep(f.latency_ms / 1000)
        if code is not None:
            details = {"retryAfterSeconds": 1} if code == 429 else None
            # Like kube-apiserver's throttling, 429 carries Retry-After (urllib3 honours it and retries GETs).
            raise ApiError(
                code, _MESSAGES[code], details=details, headers={"Retry-After": "1"} if code == 429 else None
            )
