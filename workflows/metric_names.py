"""Names of the metrics workflow code records through the workflow's metric meter.

The meter records nothing while a workflow replays, so each drift check or node repair is counted
once, by the worker that ran it. ``worker.metrics`` re-exports these names with the rest of
tenantctl's (deploy/monitoring's rules use exactly those); the SDK's exporter adds ``_total``.
"""

from __future__ import annotations

from typing import Final

DRIFT_CHECKS: Final = "tenantctl_drift_checks"
"""Drift checks by outcome (in sync, repaired, drift found (dry run), failed, skipped)."""
DRIFT_REPAIRS: Final = "tenantctl_drift_repairs"
"""Repair steps drift checks ran (a PKI role, a node, the schedule...), by backend-neutral step."""
NODE_REPAIRS: Final = "tenantctl_node_repairs"
"""Node auto-repairs by role (master, worker) and outcome (succeeded, failed)."""
