"""Every name one workflow uses to reach another: workflow types, signals.

The entity starts its children by type name and children signal the entity by signal name, so
neither imports the other (a child never imports its parent) and a runbook can change without
touching the entity. Changing a value breaks running workflows and recorded histories.
"""

from __future__ import annotations

# --- workflow types -------------------------------------------------------------------------------
CLUSTER_WORKFLOW = "Cluster"
PROVISION_WORKFLOW = "ProvisionCluster"
ROTATE_CERTIFICATES_WORKFLOW = "RotateCertificates"
ROTATE_CA_WORKFLOW = "RotateCa"
UPGRADE_WORKFLOW = "RollingUpgrade"
TEARDOWN_WORKFLOW = "TeardownCluster"
SCHEDULED_ROTATION_WORKFLOW = "ScheduledRotation"
RECONCILE_WORKFLOW = "ReconcileCluster"
SCALE_WORKFLOW = "ScaleCluster"
NODE_REPAIR_WORKFLOW = "RepairNode"

# --- signals --------------------------------------------------------------------------------------
OPERATION_SIGNAL = "report_operation"
"""Signal of the cluster entity: a child's whole operation status (``OperationStatus``), sent when
the entity must know it (a pause, a resume, a failure), never once per step."""

LEGACY_PROGRESS_SIGNAL = "report_progress"
"""Signal of the cluster entity that children started before operation snapshots sent step deltas
(``ProgressReport``) to; kept so those children, and their recorded histories, still run."""

UPGRADE_CONTROL_SIGNAL = "control"
"""Signal of the upgrade workflow that pause/resume/abort are forwarded to."""
PROGRESS_QUERY = "progress"
"""Query of every operation workflow: its whole status (``OperationStatus``), steps and progress."""
