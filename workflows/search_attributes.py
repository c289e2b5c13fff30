"""Typed search attributes kept current on every workflow of a cluster.

``ClusterId="acme-prod"`` in the Temporal UI finds the entity, its operations and the schedule's
rotations. The dev stack registers these names at start-up.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

CLUSTER_ID = SearchAttributeKey.for_keyword("ClusterId")
CLUSTER_PROVIDER = SearchAttributeKey.for_keyword("ClusterProvider")
KUBERNETES_VERSION = SearchAttributeKey.for_keyword("KubernetesVersion")
CLUSTER_PHASE = SearchAttributeKey.for_keyword("ClusterPhase")
CLUSTER_OWNER = SearchAttributeKey.for_keyword("ClusterOwner")
OPERATION = SearchAttributeKey.for_keyword("TenantctlOperation")
FLEET_ROLLOUT_STATE = SearchAttributeKey.for_keyword("FleetRolloutState")  # fleet rollouts (workflows/fleet.py)
DRIFT_CHECK = SearchAttributeKey.for_keyword("DriftCheck")
"""Outcome of the cluster's last drift check ('in sync', 'repaired', ...); set on the entity."""

ALL_KEYS: tuple[SearchAttributeKey[str], ...] = (
    CLUSTER_ID,
    CLUSTER_PROVIDER,
    KUBERNETES_VERSION,
    CLUSTER_PHASE,
    CLUSTER_OWNER,
    OPERATION,
    FLEET_ROLLOUT_STATE,
    DRIFT_CHECK,
)


def for_cluster(
    cluster_id: str, provider: str, owner: str, version: str, phase: str, operation: str | None = None
) -> TypedSearchAttributes:
    pairs = [
        SearchAttributePair(CLUSTER_ID, cluster_id),
        SearchAttributePair(CLUSTER_PROVIDER, provider),
        SearchAttributePair(CLUSTER_OWNER, owner),
        SearchAttributePair(KUBERNETES_VERSION, version),
        SearchAttributePair(CLUSTER_PHASE, phase),
    ]
    if operation:
        pairs.append(SearchAttributePair(OPERATION, operation))
    return TypedSearchAttributes(pairs)
