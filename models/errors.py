"""The error taxonomy of tenantctl (kopf's split: permanent vs temporary).

Activities raise these; Temporal carries the class name as the ApplicationError ``type``, and
retry policies list the permanent ones by ``cls.__name__`` (see ``NON_RETRYABLE_ERROR_TYPES``), so
no error type is ever a hand-typed string. Translating a backend's own exceptions (hvac,
kubernetes, botocore) into this taxonomy happens in ``activities.common.errors``.
"""

from __future__ import annotations


class TenantctlError(Exception):
    """Base of every error tenantctl raises on purpose."""


class PermanentError(TenantctlError):
    """Retrying cannot help: the input, the permissions or the quota must change first."""


class InvalidInput(PermanentError):
    """A spec, a request or an object's content is invalid; the message names the field or object."""


class Forbidden(PermanentError):
    """A backend refused the credentials (HTTP 403, AccessDenied, Vault permission denied)."""


class QuotaExceeded(PermanentError):
    """A backend limit was reached (AWS LimitExceeded, Kubernetes ResourceQuota)."""


class MissingPrerequisite(PermanentError):
    """Something an operation builds on does not exist (yet): the step that makes it must run first.
    The message names what is missing and which step makes it."""


class Conflict(PermanentError):
    """An object exists that tenantctl did not create and will not take over (name clash)."""


class ResourcesRemain(PermanentError):
    """A teardown found objects it could not remove; the message lists them and how to finish."""


class OperationStopped(PermanentError):
    """An operator stopped an operation partway (a second abort during a rollback); the message says
    where the cluster stands."""


class NodesNotReady(PermanentError):
    """Nodes did not become ready within their deadline; details name them (upgrades pause on it)."""


class DrainBlocked(PermanentError):
    """A node's drain passed its deadline with pods left (a PodDisruptionBudget, usually); the
    message names the node, the pods and the budgets, and the upgrade pauses on it."""


class TemporaryError(TenantctlError):
    """Worth retrying with backoff: timeouts, 5xx, throttling, connection refused, not ready yet."""


class NotReady(TemporaryError):
    """A wait whose condition does not hold yet; the activity retries until its deadline."""


PERMANENT_ERRORS: tuple[type[PermanentError], ...] = (
    InvalidInput,
    Forbidden,
    QuotaExceeded,
    Conflict,
    MissingPrerequisite,
    ResourcesRemain,
    OperationStopped,
    NodesNotReady,
    DrainBlocked,
)
NON_RETRYABLE_ERROR_TYPES: list[str] = [PermanentError.__name__] + [cls.__name__ for cls in PERMANENT_ERRORS]


def innermost_message(exc: BaseException) -> str:
    """The innermost non-empty message of a failure chain (activity, child workflow, update):
    the one that names the object at fault and why."""
    message = str(exc)
    cause: BaseException | None = exc
    while cause is not None:
        if str(cause):
            message = str(cause)
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return message
