"""Every timeout and retry policy of tenantctl, named, in one place.

Activities are retried with backoff for as long as their operation's deadline allows (transient
errors, worker restarts); permanent errors (``models.errors``) are never retried.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeAlias

from temporalio.common import RetryPolicy

from models.errors import NON_RETRYABLE_ERROR_TYPES

# --- retry policies -----------------------------------------------------------------------------
# Backend calls: quick first retry, then back off to a minute; unlimited attempts bounded by the
# schedule-to-close deadline of each call, so a day-long Vault outage is survived by a rotation.
# The first retry comes after a tenth of a second: by then the call itself has ridden out a flaky
# backend for seconds (worker/retries.py), and the retry that follows a dead worker's heartbeat
# timeout should add nothing noticeable to the takeover (it was half a second of its five).
FIRST_RETRY_INTERVAL = timedelta(milliseconds=100)
BACKEND_RETRY = RetryPolicy(
    initial_interval=FIRST_RETRY_INTERVAL,
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=NON_RETRYABLE_ERROR_TYPES,
)

# Waits poll inside the activity and heartbeat; a retry only follows a worker loss or a deadline.
WAIT_RETRY = RetryPolicy(
    initial_interval=FIRST_RETRY_INTERVAL,
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE_ERROR_TYPES,
)

# Asking the cluster entity for an operation (the schedule's rotation trigger).
ENTITY_REQUEST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=NON_RETRYABLE_ERROR_TYPES,
)

# --- timeouts ------------------------------------------------------------------------------------
Timeout: TypeAlias = timedelta
"""What every timeout below is (callers name it without importing datetime)."""

NO_WAIT = timedelta(0)
"""A check that looks once instead of waiting for a condition."""

BACKEND_CALL_TIMEOUT = timedelta(seconds=30)
"""Start-to-close of one backend activity attempt (a few API calls, each retried by the worker for
about 2.5 s, ``Retry-After`` capped at 5 s): a hung attempt is retried (idempotent) after this. A
call lost with a crashed worker is retried after ``HEARTBEAT_TIMEOUT`` instead."""

PROVIDER_CALL_TIMEOUT = timedelta(minutes=10)
"""Start-to-close of a provider call that may wait on its backend (AWS instances, namespaces).
Such calls also get ``PROVIDER_HEARTBEAT_TIMEOUT``: they heartbeat while they wait, and their
stretches without a heartbeat (a handful of API calls) finish well within it."""

BACKEND_CALL_DEADLINE = timedelta(hours=6)
"""Schedule-to-close of a backend activity: how long transient failures are retried."""

PKI_CALL_DEADLINE = timedelta(hours=24)
"""Certificates are issued for hours-to-days lifetimes; ride out a Vault outage of up to a day."""

# Takeover after a worker dies (README "When a worker dies"): every activity heartbeats while its
# worker process lives (worker/liveness.py), so a killed worker's running call is retried on a live
# worker once HEARTBEAT_TIMEOUT passes (plus the retry's first interval), and its cached workflows
# move once the sticky queue timeout (settings.sticky_queue_timeout_seconds) passes. Shorter is
# faster takeover, but a worker whose event loop stalls for longer (a saturated CPU, a long GC
# pause) has its calls given away and run again: harmless for idempotent activities, wasted work.
OPERATION_TASK_TIMEOUT = timedelta(seconds=3)
"""Workflow task timeout of an operation's child workflow (Temporal's default is 10 s): a worker
killed while it holds one of the operation's workflow tasks delays it by this, not 10 s. An
operation's history is a few hundred events, replayed in well under a second; a task that does take
longer is retried, not lost. The entity keeps the default: it replays up to a few thousand events."""

HEARTBEAT_TIMEOUT = timedelta(seconds=2)
"""Heartbeat timeout of every activity: a dead worker is noticed within it."""

HEARTBEAT_THROTTLE = timedelta(seconds=1)
"""The most a worker holds back an activity's heartbeat (the SDK's default is 0.8 x the heartbeat
timeout): the server hears from a live worker every second, so a stall of about a second of the
worker's event loop still passes, and a dead worker is noticed within ``HEARTBEAT_TIMEOUT``. The
cost: one heartbeat call per running activity per second."""

WAIT_HEARTBEAT_TIMEOUT = HEARTBEAT_TIMEOUT
"""Waits and batches also heartbeat their own progress (a wait's start, which a retry resumes)."""

PROVIDER_HEARTBEAT_TIMEOUT = HEARTBEAT_TIMEOUT

ENTITY_REQUEST_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
"""The schedule's rotation request heartbeats every 10 s while the entity is busy
(activities/pki/rotation_schedule.py); nobody waits on it at a terminal."""

WAIT_POLL_INTERVAL = timedelta(seconds=2)

NODES_READY_TIMEOUT = timedelta(minutes=30)
"""How long a create waits for every node to become ready."""

NODE_READY_TIMEOUT = timedelta(minutes=15)
"""How long an upgrade or rotation waits for one node before it pauses and says which."""

ENTITY_REQUEST_TIMEOUT = timedelta(hours=12)
"""How long a schedule-started rotation waits for the entity to run it (an upgrade may be ahead)."""

CHILD_RUN_TIMEOUT = None
"""Operations have no run timeout: they pause and wait for people rather than time out."""

USER_REQUEST_DEADLINE = timedelta(minutes=2)
"""How long a request someone waits for at a terminal (signing a user's CSR) is retried."""

DRAIN_TIMEOUT = timedelta(minutes=10)
"""How long an upgrade lets one node's drain be refused (PodDisruptionBudgets) before it pauses and
names the node and the pods that would not leave."""
REPAIR_DRAIN_TIMEOUT = timedelta(minutes=2)
"""How long node auto-repair drains an unhealthy worker before it removes it anyway (its replacement
is Ready by then; a dead node's pods do not leave)."""

HEALTH_GATE_WAIT = timedelta(minutes=2)
"""After each upgraded node, how long the tenant cluster may take to look healthy again (every node
Ready, API answering) before the upgrade pauses and says what is wrong."""

PKI_BATCH_CALL_TIMEOUT = timedelta(minutes=10)
"""Start-to-close of a PKI call over every certificate of a cluster (issue, revoke, publish the
trust bundle to every Secret): many Vault and host API calls in one attempt, heartbeating."""

FOUNDATION_REMOVAL_TIMEOUT = timedelta(minutes=15)
"""Start-to-close of removing a cluster's foundation: a namespace (or VPC) is waited out until gone."""

USER_REQUEST_CALL_TIMEOUT = timedelta(seconds=30)
"""Start-to-close of one attempt at a request someone waits for at a terminal."""

WAIT_ATTEMPT_SLACK = timedelta(minutes=1)
"""A wait's attempt may run this much longer than the wait's own timeout (it reports the timeout
itself, naming what it waited for, rather than being cut off by Temporal)."""

WAIT_RETRY_SLACK = timedelta(minutes=30)
"""A wait lost with a worker is retried for this long beyond its own timeout."""


def wait_attempt_timeout(wait: timedelta) -> timedelta:
    """Start-to-close of an activity that waits up to ``wait`` for a condition."""
    return wait + WAIT_ATTEMPT_SLACK


def wait_deadline(wait: timedelta) -> timedelta:
    """Schedule-to-close of an activity that waits up to ``wait`` for a condition."""
    return wait + WAIT_RETRY_SLACK


TENANT_CALL_TIMEOUT = timedelta(seconds=30)
"""Start-to-close of one short tenant API activity (cordon: a read and a patch): a hung connection or
a lost worker is retried after this long."""

# --- fleet rollouts (workflows/fleet.py) -----------------------------------------------------------
FLEET_OPERATION_TIMEOUT = timedelta(days=7)
"""How long a rollout waits for one cluster's operation: an upgrade that pauses waits for a person,
and an operation queued behind a manual one waits its turn. A lost worker is noticed by heartbeat."""

FLEET_REQUEST_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
"""A worker lost while it waits on an entity's update is noticed within this; the retry re-attaches
to the same update (same id), so the operation runs once."""

FLEET_CONTROL_TIMEOUT = timedelta(minutes=1)
"""Start-to-close of a quick request to an entity (its status, an abort of its upgrade)."""

OBSERVE_CALL_TIMEOUT = timedelta(minutes=2)
"""One attempt of a drift-check observe (a few list calls against one backend)."""

OBSERVE_DEADLINE = timedelta(minutes=4)
"""A drift check gives up (and says so in status) within one default check interval instead of
retrying for hours: the next check comes soon enough."""

# --- maintenance windows (workflows/cluster.py, issue 15) -------------------------------------------
LEAF_ROTATION_WINDOW_WAIT = ENTITY_REQUEST_TIMEOUT - timedelta(hours=1)
"""The longest a scheduled leaf rotation waits for a maintenance window (never past its renewal
deadline either): its request gives up after ENTITY_REQUEST_TIMEOUT, so it must have run by then."""
