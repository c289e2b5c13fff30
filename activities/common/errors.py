"""Translation of backend exceptions (Vault, Kubernetes, AWS) into tenantctl's error taxonomy.

``models.errors`` defines the types and which are permanent; this module decides which backend
failure is which. Anything not recognised stays as it is and is retried (the safe default for
network errors, timeouts and 5xx).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import hvac.exceptions
from botocore.exceptions import ClientError
from kubernetes.client.exceptions import ApiException

from models.errors import Conflict, Forbidden, InvalidInput, NotReady, QuotaExceeded, TemporaryError

AWS_FORBIDDEN = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "OptInRequired",
}
AWS_INVALID_PREFIXES = (
    "InvalidParameter",
    "ValidationError",
    "MalformedPolicyDocument",
    "InvalidAMIID",
    "InvalidInput",  # Route53's
)
AWS_QUOTA = {"LimitExceeded", "LimitExceededException", "VcpuLimitExceeded", "InstanceLimitExceeded"}
AWS_QUOTA_SUFFIXES = ("LimitExceeded", "LimitExceededException")  # VpcLimitExceeded, AddressLimitExceeded, ...
AWS_THROTTLING = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "SlowDown"}
"""Rate limits, not quotas: retried (by botocore first, then by the activity's retry policy)."""


VAULT_TRANSIENT_MARKERS = ("context canceled", "failed to persist entry", "vault is sealed", "local node not active")
"""Vault answers some storage and seal-transition failures with 400, as if the request were wrong:
a request in flight while Vault seals ends "failed to persist entry: context canceled". Those pass
once Vault is back, so they are retried, not reported as invalid input."""


def classify(exc: BaseException, what: str) -> BaseException:
    """The tenantctl error for a backend exception raised while doing ``what`` (or ``exc`` itself)."""
    if isinstance(exc, ApiException):
        message = _k8s_message(exc)
        reason = f"{what}: host API answered {exc.status} {exc.reason}: {message}"
        if exc.status == 403 and "being terminated" in message:
            # a namespace still terminating refuses creates: that passes once it is gone
            return NotReady(reason)
        if exc.status in (401, 403):
            return Forbidden(reason)
        if exc.status in (400, 422):
            return InvalidInput(reason)
        return exc
    if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        return Forbidden(f"{what}: Vault refused the token: {exc}")
    if isinstance(exc, hvac.exceptions.InvalidRequest):
        if any(marker in str(exc).lower() for marker in VAULT_TRANSIENT_MARKERS):
            return TemporaryError(f"{what}: Vault could not serve the request now: {exc}")
        return InvalidInput(f"{what}: Vault rejected the request: {exc}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        reason = f"{what}: AWS {code}: {error.get('Message', '')}"
        if code in AWS_FORBIDDEN:
            return Forbidden(reason)
        if code in AWS_THROTTLING:
            return exc
        if code in AWS_QUOTA or code.endswith(AWS_QUOTA_SUFFIXES) or code.startswith("TooMany"):
            return QuotaExceeded(reason)
        if code.startswith(AWS_INVALID_PREFIXES):
            return InvalidInput(reason)
        return exc
    return exc


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise backend exceptions in the block as tenantctl errors, naming ``what`` was attempted."""
    try:
        yield
    except (ApiException, hvac.exceptions.VaultError, ClientError) as exc:
        mapped = classify(exc, what)
        if mapped is exc:
            raise
        raise mapped from exc


def _k8s_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    except (ValueError, AttributeError):
        return str(exc.body)


__all__ = ["Conflict", "classify", "translated"]
