"""Errors the CLI shows as one line and an exit code (no traceback); light to import."""

from __future__ import annotations

from models.naming import entity_workflow_id


class UserError(Exception):
    """An error the user can act on: printed as one line, exit code 1, no traceback."""


class ClusterNotFound(UserError, LookupError):
    def __init__(self, cluster_id: str) -> None:
        super().__init__(f"cluster {cluster_id} not found (no workflow {entity_workflow_id(cluster_id)})")


class ClusterExists(UserError):
    def __init__(self, cluster_id: str) -> None:
        super().__init__(
            f"cluster {cluster_id} already exists (workflow {entity_workflow_id(cluster_id)} is running); "
            f"nothing was created. See 'tenantctl status {cluster_id}'."
        )


class RequestRefused(UserError):
    """The entity refused an update; the message says why (and nothing changed)."""


class Unavailable(UserError):
    """Temporal, or a worker behind it, cannot serve the request now; exit code 3."""


class TemporalUnreachable(Unavailable):
    def __init__(self, address: str, detail: str) -> None:
        super().__init__(f"cannot reach Temporal at {address}: {detail}. Is the stack up? ('tenantctl dev up')")


class NoWorkerPolling(Unavailable):
    def __init__(self, task_queue: str, detail: str = "", outcome: str = "nothing was changed") -> None:
        self.task_queue, self.detail = task_queue, detail
        super().__init__(
            f"no worker is polling task queue {task_queue}{detail}: start one ('python -m worker', or "
            f"'tenantctl dev up' on the local stack); {outcome}"
        )


class WorkerDidNotAnswer(Unavailable):
    def __init__(self, seconds: float, outcome: str = "") -> None:
        self.seconds = seconds
        super().__init__(
            f"no worker answered within {seconds:.0f}s (a worker may have just stopped, or none polls this "
            "task queue); try again, or check the workers" + (f"; {outcome}" if outcome else "")
        )
