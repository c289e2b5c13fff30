"""deploy/monitoring's alert rules and dashboard ask only for metrics the worker exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.promql import alert_expressions, dashboard_expressions, metric_names
from worker import metrics as m

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
ALERTS, DASHBOARD = MONITORING / "tenantctl-alerts.yaml", MONITORING / "tenantctl-dashboard.json"

# What worker/metrics.py exports under its own names (the SDK adds _total to counters and the
# histogram series; the registry's counter adds _total and _created).
TENANTCTL_EXPORTED = {
    m.CLUSTERS,
    m.CLUSTER_INFO,
    m.CLUSTER_READY,
    m.CERTIFICATE_EXPIRY,
    m.OPERATION_BLOCKED,
    m.SCHEDULE_PRESENT,
    m.SCHEDULE_PAUSED,
    m.FLEET_REFRESH,
    m.UNHEALTHY_NODES,
    m.NODE_REPAIR_HELD,
    f"{m.FLEET_REFRESH_ERRORS}_total",
    f"{m.OPERATIONS_STARTED}_total",
    f"{m.OPERATIONS_FINISHED}_total",
    *(f"{m.OPERATION_DURATION}_{suffix}" for suffix in ("bucket", "sum", "count")),
}


def test_the_expression_parser_finds_metrics_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, kind) (rate(a_seconds_bucket{outcome="failed", x=~"y|z"}[5m])))'
        " > 3 and on (cluster) max by (cluster) (b_ready) == 0 or absent(c_total) unless time() - d > 1e3"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_ready", "c_total", "d"}


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    alerts = alert_expressions(ALERTS)
    assert "86400" in alerts["TenantctlCertificateExpiresWithinADay"]
    assert m.CLUSTER_READY in alerts["TenantctlClusterNotReady"]
    assert m.OPERATION_BLOCKED in alerts["TenantctlOperationBlocked"]
    assert m.SCHEDULE_PAUSED in alerts["TenantctlRotationSchedulePaused"]
    assert m.SCHEDULE_PRESENT in alerts["TenantctlRotationScheduleMissing"]


@pytest.mark.parametrize("source", [ALERTS, DASHBOARD], ids=["alerts", "dashboard"])
def test_every_tenantctl_metric_named_is_exported(source: Path) -> None:
    expressions = alert_expressions(source) if source == ALERTS else dashboard_expressions(source)
    assert expressions
    for where, expr in expressions.items():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        ours = {n for n in names if not n.startswith("temporal_")}
        unknown = ours - TENANTCTL_EXPORTED
        assert not unknown, f"{where}: {sorted(unknown)} are not exported by worker/metrics.py"


def all_named_metrics() -> set[str]:
    """Every metric the alert rules and the dashboard name (for the live scrape check)."""
    expressions = {**alert_expressions(ALERTS), **dashboard_expressions(DASHBOARD)}
    return set().union(*(metric_names(expr) for expr in expressions.values()))
