"""Per-call retries and rate limits for every backend client the worker builds.

A transient error (a 429, a 5xx, a refused connection) is absorbed where it happens, in the HTTP
call, with a short jittered backoff: one failed call no longer fails a whole activity (which Temporal
would retry after seconds, redoing every call before it). What outlasts these few retries still fails
the activity, and Temporal's activity retries (workflows/policies.py) take over.

What is retried, and why it is safe:
- A refused connection or a connect timeout, for every method: the request never reached the server.
- 429 (and, for Vault, 503: sealed or standby), for every method: the server refused the request
  before doing anything. ``Retry-After`` is honoured, up to :data:`RETRY_AFTER_CAP_SECONDS`.
- Other 5xx and read timeouts only for methods that are safe to repeat. For the host Kubernetes API
  that includes POST and PATCH: every object tenantctl creates has a fixed name (a repeated create is
  a 409 that the ``ensure_*`` steps read as "exists") and every patch is a merge patch of a desired
  state. For Vault, writes are not repeated after a 5xx: a PKI ``issue`` that did happen would leave
  a second valid certificate nobody holds. For a tenant API, POST (an eviction) is not repeated: a
  429 there is a PodDisruptionBudget speaking, which the drain handles itself.
- AWS: botocore's own retry modes (``standard``, or ``adaptive`` with client-side rate limiting),
  which know each service's throttling and transient error codes.

A per-backend token bucket keeps a worker under a request rate, so a fleet of operations does not
throttle itself against the host API or Vault.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from urllib3.util.retry import Retry

if TYPE_CHECKING:
    import requests
    from kubernetes.client import ApiClient
    from urllib3.response import BaseHTTPResponse

    from models.spec import ClusterSpec

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_CAP_SECONDS = 5.0
"""A server asking for more than this is honoured only this long: the activity's own retry (with its
heartbeat and deadline) is the better place for a long wait."""
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
KUBERNETES_METHODS = IDEMPOTENT_METHODS | {"POST", "PATCH"}
TENANT_API_METHODS = IDEMPOTENT_METHODS | {"PATCH"}


@dataclass(frozen=True)
class CallRetries:
    """How often, and how patiently, one backend call is tried again."""

    attempts: int = 5
    """Retries after the first try; with the backoff below a call gives up after about 2.5 s. At 30%
    failed requests, one call in about 1,400 still fails (0.3 ** 6); at 20%, one in 15,000."""
    backoff_seconds: float = 0.1
    """The second retry waits this, each next one twice as long (the first is at once)."""
    backoff_max_seconds: float = 1.0
    jitter_seconds: float = 0.1
    """A random share of this is added to every wait, so calls that failed together spread out."""


class CallRetry(Retry):
    """urllib3's Retry, plus statuses retried for every method (the server refused before acting)
    and a cap on ``Retry-After``."""

    def __init__(
        self,
        *args: Any,
        any_method_statuses: Collection[int] = (429,),
        retry_after_cap: float = RETRY_AFTER_CAP_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.any_method_statuses = frozenset(any_method_statuses)
        self.retry_after_cap = retry_after_cap

    def new(self, **kw: Any) -> Self:
        # urllib3 copies a Retry for every attempt from its own parameters: carry ours over too.
        retry = super().new(**kw)
        retry.any_method_statuses = self.any_method_statuses
        retry.retry_after_cap = self.retry_after_cap
        return retry

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code in self.any_method_statuses and self.total:
            return True
        return super().is_retry(method, status_code, has_retry_after)

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.retry_after_cap)


def call_retry(
    policy: CallRetries, methods: Collection[str], any_method_statuses: Collection[int] = (429,)
) -> CallRetry:
    """A urllib3 retry for one backend: ``methods`` are retried on every transient error."""
    return CallRetry(
        total=policy.attempts,
        connect=policy.attempts,
        read=policy.attempts,
        status=policy.attempts,
        other=0,
        redirect=0,
        allowed_methods=frozenset(methods),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=policy.backoff_seconds,
        backoff_max=policy.backoff_max_seconds,
        backoff_jitter=policy.jitter_seconds,
        respect_retry_after_header=True,
        # When retries run out, the last response goes back to the client, which raises its own
        # error with the status (so activities classify it), instead of urllib3's MaxRetryError.
        raise_on_status=False,
        raise_on_redirect=False,
        any_method_statuses=any_method_statuses,
    )


class RateLimit:
    """A token bucket shared by every thread of one backend: at most ``per_second`` calls on average,
    ``burst`` at once. ``per_second <= 0`` turns it off."""

    def __init__(self, per_second: float, burst: int | None = None) -> None:
        self.per_second = per_second
        self.burst = float(burst if burst is not None else max(1, int(per_second * 2)))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.per_second <= 0:
            return
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.per_second)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.per_second
            time.sleep(wait)


def limited(call: Callable[..., Any], limit: RateLimit) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        limit.acquire()
        return call(*args, **kwargs)

    return wrapper


# --- Kubernetes ---------------------------------------------------------------------------------------
def install_kubernetes_retries(
    api_client: ApiClient, retry: CallRetry | None, limit: RateLimit | None = None
) -> ApiClient:
    """Give a made ``ApiClient`` per-call retries (and a rate limit), whatever pool manager it has.

    Works on clients built elsewhere too (the tenant API factories replace the pool manager to hold a
    key pair in memory): the retry goes into the pool manager's settings for the pools it makes next.
    """
    pool_manager = api_client.rest_client.pool_manager
    if retry is not None:
        pool_manager.connection_pool_kw["retries"] = retry
        pool_manager.clear()  # pools made before now keep their old retries
    if limit is not None:
        api_client.rest_client.request = limited(api_client.rest_client.request, limit)  # type: ignore[method-assign]
    return api_client


def tenant_api_with_retries(
    factory: Callable[[ClusterSpec], ApiClient], policy: CallRetries, limit: RateLimit | None = None
) -> Callable[[ClusterSpec], ApiClient]:
    """Wrap a tenant API client factory: every client it makes retries transient errors."""
    retry = call_retry(policy, TENANT_API_METHODS, any_method_statuses=())

    def make(spec: ClusterSpec) -> ApiClient:
        return install_kubernetes_retries(factory(spec), retry, limit)

    return make


# --- Vault (hvac over requests) -----------------------------------------------------------------------
def vault_session(policy: CallRetries, limit: RateLimit | None = None, pool_size: int = 10) -> requests.Session:
    """A requests session for hvac: retries on a mounted adapter, and the rate limit per request."""
    from requests.adapters import HTTPAdapter

    from worker.vault_session import EnvironmentOnceSession

    # Vault answers 429 (rate-limit quota) and 503 (sealed, standby) before acting: safe for writes.
    retry = call_retry(policy, IDEMPOTENT_METHODS | {"LIST"}, any_method_statuses=(429, 503))

    class LimitedAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            if limit is not None:
                limit.acquire()
            return super().send(request, *args, **kwargs)

    session = EnvironmentOnceSession()
    adapter = LimitedAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- AWS ------------------------------------------------------------------------------------------------
def botocore_retries(mode: str, policy: CallRetries) -> dict[str, Any]:
    """botocore's retry config: ``adaptive`` adds client-side rate limiting to ``standard``."""
    return {"mode": mode, "total_max_attempts": policy.attempts + 1}
