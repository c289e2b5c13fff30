"""The worker's Prometheus endpoint: the Temporal SDK's runtime metrics plus tenantctl's own.

One ``/metrics`` serves both:

- The SDK's runtime (``temporalio.runtime``, ``PrometheusConfig``) exports its own metrics
  (``temporal_*``: polls, task latencies, slots, sticky cache) on a loopback port; the endpoint
  appends that text to its own.
- Operations (``tenantctl_operations_started_total``, ``..._finished_total`` by kind and outcome,
  ``tenantctl_operation_duration_seconds``) are recorded by a workflow interceptor through the
  workflow's metric meter, which records nothing while a workflow replays: an operation is counted
  once, by the worker that ran it, whatever worker restarts happen in between. They go out through
  the SDK's exporter.
- The fleet (clusters by phase/provider/version, each cluster's earliest certificate expiry,
  operations paused or failed, rotation schedule state) is read from Temporal every
  ``FLEET_REFRESH_INTERVAL``: a visibility listing of the running entity workflows (their search
  attributes and memo hold it; a ``status`` query only for an entity whose memo lacks it) and the
  schedule listing. Every replica exports the same fleet view, so alert
  rules aggregate with ``max by (cluster)``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import CancelledError, FailureError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from models.cluster import (
    FLEET_MEMO_KEYS,
    ClusterPhase,
    ClusterStatus,
    OperationKind,
    blocked_from_memo,
    blocked_operations,
)
from models.naming import entity_workflow_id, rotation_schedule_id
from worker.health import split_address
from workflows import metric_names
from workflows import search_attributes as sa

log = logging.getLogger(__name__)

# --- names (deploy/monitoring's rules use exactly these; a test checks) -----------------------------
OPERATIONS_STARTED: Final = "tenantctl_operations_started"
OPERATIONS_FINISHED: Final = "tenantctl_operations_finished"
OPERATION_DURATION: Final = "tenantctl_operation_duration_seconds"
CLUSTERS: Final = "tenantctl_clusters"
CLUSTER_INFO: Final = "tenantctl_cluster_info"
CLUSTER_READY: Final = "tenantctl_cluster_ready"
CERTIFICATE_EXPIRY: Final = "tenantctl_cluster_certificate_expiry_timestamp_seconds"
OPERATION_BLOCKED: Final = "tenantctl_cluster_operation_blocked"
SCHEDULE_PRESENT: Final = "tenantctl_rotation_schedule_present"
SCHEDULE_PAUSED: Final = "tenantctl_rotation_schedule_paused"
FLEET_REFRESH: Final = "tenantctl_fleet_refresh_timestamp_seconds"
FLEET_REFRESH_ERRORS: Final = "tenantctl_fleet_refresh_errors"
UNHEALTHY_NODES: Final = "tenantctl_cluster_unhealthy_nodes"
NODE_REPAIR_HELD: Final = "tenantctl_cluster_node_repair_held"
DRIFT_CHECKS: Final = metric_names.DRIFT_CHECKS
DRIFT_REPAIRS: Final = metric_names.DRIFT_REPAIRS
NODE_REPAIRS: Final = metric_names.NODE_REPAIRS
"""Recorded by the cluster entity (workflow code) through the workflow's metric meter."""

OPERATION_KINDS: Final[dict[str, OperationKind]] = {
    "ProvisionCluster": OperationKind.CREATE,
    "RotateCertificates": OperationKind.ROTATE_CERTIFICATES,
    "RotateCa": OperationKind.ROTATE_CA,
    "RollingUpgrade": OperationKind.UPGRADE,
    "TeardownCluster": OperationKind.DELETE,
    "ReconcileCluster": OperationKind.RECONCILE,
    "ScaleCluster": OperationKind.SCALE,
    "RepairNode": OperationKind.REPAIR_NODE,
}
"""Operation child workflow types and the kind label they are counted under."""

DURATION_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
"""Seconds: a KVM create takes seconds here and minutes for real; a 100-node upgrade, hours."""
FLEET_REFRESH_INTERVAL: Final = timedelta(seconds=30)
STATUS_QUERY_TIMEOUT: Final = timedelta(seconds=5)
SDK_SCRAPE_TIMEOUT_SECONDS: Final = 5.0
SERVING_PHASES: Final = frozenset(
    {ClusterPhase.READY, ClusterPhase.ROTATING, ClusterPhase.UPGRADING, ClusterPhase.REPAIRING}
)
"""Phases in which the cluster serves: a rotation, upgrade or node repair is watched by the operation
alerts (and node repair by its own)."""


# --- the SDK runtime -------------------------------------------------------------------------------
def install_sdk_metrics(bind_address: str) -> Runtime:
    """Make the default SDK runtime export Prometheus metrics on ``bind_address`` (loopback).

    Must run before the Temporal client connects: clients and workers use the default runtime.
    """
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=bind_address,
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides={OPERATION_DURATION: list(DURATION_BUCKETS)},
            )
        )
    )
    Runtime.set_default(runtime, error_if_already_set=False)
    return runtime


# --- operations: a workflow interceptor ----------------------------------------------------------
def _outcome(result: Any) -> str:
    outcome = getattr(result, "outcome", None)  # UpgradeResult: completed or aborted
    if outcome is not None and str(getattr(outcome, "value", outcome)) == "aborted":
        return "aborted"
    return "succeeded"


class _OperationInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        kind = OPERATION_KINDS.get(workflow.info().workflow_type)
        if kind is None:
            return await super().execute_workflow(input)
        meter = workflow.metric_meter().with_additional_attributes({"kind": kind.value})
        meter.create_counter(OPERATIONS_STARTED, "operations started, by kind").add(1)
        outcome = "failed"
        try:
            result = await super().execute_workflow(input)
            outcome = _outcome(result)
            return result
        except (CancelledError, asyncio.CancelledError):
            outcome = "cancelled"
            raise
        except FailureError:
            outcome = "failed"
            raise
        except BaseException:
            outcome = ""  # continue-as-new or a workflow task failure: not the end of the operation
            raise
        finally:
            if outcome:
                finished = meter.with_additional_attributes({"outcome": outcome})
                finished.create_counter(OPERATIONS_FINISHED, "operations finished, by kind and outcome").add(1)
                took = workflow.now() - workflow.info().start_time
                finished.create_histogram_timedelta(
                    OPERATION_DURATION, "operation duration, from start to finish", "s"
                ).record(max(took, timedelta(0)))


class OperationMetrics(Interceptor):
    """Counts every operation child workflow's start and end, with its duration."""

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _OperationInbound


# --- the fleet: a periodic listing ---------------------------------------------------------------
@dataclass(frozen=True)
class ClusterSample:
    cluster: str
    phase: str
    provider: str
    version: str
    earliest_expiry: float | None = None
    blocked: tuple[tuple[str, str], ...] = ()  # (kind, state) of a paused or failed operation
    unhealthy_nodes: int = 0
    repair_held: bool = False  # node auto-repair holds back (short-circuit, no etcd quorum)


@dataclass(frozen=True)
class FleetSnapshot:
    clusters: tuple[ClusterSample, ...] = ()
    schedules_paused: dict[str, bool] = field(default_factory=dict)
    taken_at: float = 0.0


def sample_of(status: ClusterStatus) -> ClusterSample:
    """What the metrics say about one cluster, from its entity's status."""
    return ClusterSample(
        cluster=status.cluster_id,
        phase=status.phase.value,
        provider=status.spec.provider.value,
        version=status.kubernetes_version,
        earliest_expiry=status.earliest_expiry.timestamp() if status.earliest_expiry else None,
        blocked=tuple(blocked_operations(status)),
        unhealthy_nodes=len(status.node_health.unhealthy),
        repair_held=bool(status.node_health.unhealthy) and bool(status.node_health.held),
    )


def sample_from_listing(
    cluster_id: str, attributes: TypedSearchAttributes, memo: Mapping[str, Any]
) -> ClusterSample | None:
    """The same sample from the entity's search attributes and memo, as the visibility listing
    returns them; None when the memo lacks the fleet's values (an entity that has not published
    them since it ran code from before ``FLEET_MEMO_PATCH``) or a value is unreadable."""
    if not all(key in memo for key in FLEET_MEMO_KEYS):
        return None
    try:
        expiry = str(memo.get("earliest_expiry") or "")
        return ClusterSample(
            cluster=cluster_id,
            phase=attributes.get(sa.CLUSTER_PHASE) or "",
            provider=attributes.get(sa.CLUSTER_PROVIDER) or "",
            version=attributes.get(sa.KUBERNETES_VERSION) or "",
            earliest_expiry=datetime.fromisoformat(expiry).timestamp() if expiry else None,
            blocked=blocked_from_memo(str(memo["blocked"])),
            unhealthy_nodes=int(memo["unhealthy_nodes"]),
            repair_held=bool(memo["repair_held"]),
        )
    except ValueError:
        return None


async def fleet_snapshot(client: Client) -> FleetSnapshot:
    """Every running cluster entity's sample, and the state of every rotation schedule.

    One visibility listing gives each entity's search attributes and memo, which hold the sample:
    the refresh costs a few listing pages, not a status query per cluster every 30 s (at a thousand
    clusters ten times the load of their periodic checks, and every query of a workflow the worker
    does not hold in its cache a replay of its history). Only an entity whose memo lacks the
    fleet's values is asked for its status.
    """
    samples: list[ClusterSample] = []
    unlisted: list[str] = []
    async for execution in client.list_workflows('WorkflowType = "Cluster" AND ExecutionStatus = "Running"'):
        cluster_id = execution.id.removeprefix(entity_workflow_id(""))
        try:
            memo = await execution.memo()
        except Exception as exc:  # a memo this converter cannot read: ask the entity instead
            log.debug("fleet metrics: memo of %s unreadable: %s", cluster_id, exc)
            memo = {}
        sample = sample_from_listing(cluster_id, execution.typed_search_attributes, memo)
        if sample is None:
            unlisted.append(cluster_id)
        else:
            samples.append(sample)

    async def status_of(cluster_id: str) -> ClusterStatus:
        handle = client.get_workflow_handle(entity_workflow_id(cluster_id))
        result: ClusterStatus = await handle.query(
            "status", result_type=ClusterStatus, rpc_timeout=STATUS_QUERY_TIMEOUT
        )
        return result

    statuses = await asyncio.gather(*(status_of(i) for i in unlisted), return_exceptions=True)
    for cluster_id, status in zip(unlisted, statuses, strict=True):
        if isinstance(status, BaseException):
            log.warning("fleet metrics: status of cluster %s not readable: %s", cluster_id, status)
            continue
        samples.append(sample_of(status))
    paused: dict[str, bool] = {}
    prefix = rotation_schedule_id("")
    async for schedule in await client.list_schedules():
        if schedule.id.startswith(prefix):
            paused[schedule.id.removeprefix(prefix)] = bool(schedule.schedule and schedule.schedule.state.paused)
    return FleetSnapshot(clusters=tuple(samples), schedules_paused=paused, taken_at=time.time())


class FleetCollector(Collector):
    """Yields the latest fleet snapshot at each scrape (a cluster that is gone has no series)."""

    def __init__(self) -> None:
        self._snapshot = FleetSnapshot()
        self._lock = threading.Lock()

    def update(self, snapshot: FleetSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snap = self._snapshot
        counts = GaugeMetricFamily(
            CLUSTERS, "clusters by phase, provider and version", labels=["phase", "provider", "version"]
        )
        tally: dict[tuple[str, str, str], int] = {}
        for c in snap.clusters:
            tally[(c.phase, c.provider, c.version)] = tally.get((c.phase, c.provider, c.version), 0) + 1
        for labels, count in sorted(tally.items()):
            counts.add_metric(list(labels), count)
        yield counts
        info = GaugeMetricFamily(
            CLUSTER_INFO, "one series per cluster (value 1)", labels=["cluster", "phase", "provider", "version"]
        )
        ready = GaugeMetricFamily(
            CLUSTER_READY, "1 while the cluster serves (Ready, or rotating/upgrading)", labels=["cluster"]
        )
        expiry = GaugeMetricFamily(
            CERTIFICATE_EXPIRY, "earliest not-after of the cluster's certificates (Unix time)", labels=["cluster"]
        )
        blocked = GaugeMetricFamily(
            OPERATION_BLOCKED,
            "1 while an operation is paused, or the last one failed",
            labels=["cluster", "kind", "state"],
        )
        present = GaugeMetricFamily(SCHEDULE_PRESENT, "1 if the cluster's rotation schedule exists", labels=["cluster"])
        paused = GaugeMetricFamily(
            SCHEDULE_PAUSED, "1 if the cluster's rotation schedule is paused", labels=["cluster"]
        )
        unhealthy = GaugeMetricFamily(
            UNHEALTHY_NODES, "nodes not Ready or without a running VM/instance (node auto-repair)", labels=["cluster"]
        )
        held = GaugeMetricFamily(
            NODE_REPAIR_HELD,
            "1 while node auto-repair holds back (too many unhealthy nodes, or etcd without quorum)",
            labels=["cluster"],
        )
        for c in snap.clusters:
            unhealthy.add_metric([c.cluster], c.unhealthy_nodes)
            held.add_metric([c.cluster], 1 if c.repair_held else 0)
            info.add_metric([c.cluster, c.phase, c.provider, c.version], 1)
            ready.add_metric([c.cluster], 1 if c.phase in SERVING_PHASES else 0)
            if c.earliest_expiry is not None:
                expiry.add_metric([c.cluster], c.earliest_expiry)
            for kind, state in c.blocked:
                blocked.add_metric([c.cluster, kind, state], 1)
            present.add_metric([c.cluster], 1 if c.cluster in snap.schedules_paused else 0)
            if c.cluster in snap.schedules_paused:
                paused.add_metric([c.cluster], 1 if snap.schedules_paused[c.cluster] else 0)
        yield from (info, ready, expiry, blocked, present, paused, unhealthy, held)
        refreshed = GaugeMetricFamily(FLEET_REFRESH, "when the fleet metrics were last read from Temporal (Unix time)")
        refreshed.add_metric([], snap.taken_at)
        yield refreshed


class WorkerMetrics:
    """tenantctl's registry: the fleet collector and the refresh error counter."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.fleet = FleetCollector()
        self.registry.register(self.fleet)
        self.refresh_errors = Counter(
            FLEET_REFRESH_ERRORS, "fleet refreshes that failed (Temporal unreachable)", registry=self.registry
        )

    async def refresh_forever(self, client: Client, interval: timedelta = FLEET_REFRESH_INTERVAL) -> None:
        while True:
            try:
                self.fleet.update(await fleet_snapshot(client))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a metrics refresh never takes the worker down
                self.refresh_errors.inc()
                log.warning("fleet metrics not refreshed: %s", exc)
            await asyncio.sleep(interval.total_seconds())


# --- the endpoint ---------------------------------------------------------------------------------
def _handler(metrics: WorkerMetrics, sdk_url: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = generate_latest(metrics.registry)
            if sdk_url:
                try:
                    with urllib.request.urlopen(sdk_url, timeout=SDK_SCRAPE_TIMEOUT_SECONDS) as sdk:
                        body += sdk.read()
                except OSError as exc:
                    body += f"# Temporal SDK metrics unavailable: {exc}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve_metrics(metrics: WorkerMetrics, address: str, sdk_bind: str | None) -> Iterator[ThreadingHTTPServer]:
    """Serve ``/metrics`` on ``address``: tenantctl's registry, then the SDK's text from ``sdk_bind``."""
    sdk_url = f"http://{sdk_bind}/metrics" if sdk_bind else None
    server = ThreadingHTTPServer(split_address(address), _handler(metrics, sdk_url))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info("Prometheus metrics on http://%s:%d/metrics", *server.server_address[:2])
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
