"""Typed calls of every activity the workflows use, with their timeouts, retries and UI summaries.

Workflows cannot import the activity modules (they pull hvac, kubernetes and boto3 into the
sandbox), so activities are called by name; this module is the one place that knows the names,
and a test checks that the worker registers each of them.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

from models.drift import DriftReport, ObserveInput
from models.naming import rotation_schedule_id
from models.operations import RotateCertificatesResult
from models.pki import (
    CaInput,
    CaResult,
    CertificateRequest,
    CertificatesResult,
    EnsureCertificatesInput,
    IssuerResult,
    NextIssuerInput,
    NodeCertificatesInput,
    NodeCertificatesResult,
    RevokeResult,
    SetDefaultIssuerInput,
    SignedUserCertificate,
    SignUserCsrInput,
    TrustBundleInput,
    TrustBundleResult,
    pki_mount,
)
from models.provider import (
    ClusterRef,
    EnsureResult,
    NodeRef,
    NodesResult,
    ProviderOp,
    ResourceList,
    WaitNodesInput,
    provider_activity,
)
from models.schedules import RequestRotationInput, RotationScheduleInput, RotationScheduleResult, ScheduleRef
from models.spec import ClusterSpec
from models.tenant import (
    DrainInput,
    DrainResult,
    HealthInput,
    HealthResult,
    NodeHealth,
    TenantNodeInput,
    WaitRegisteredInput,
)
from workflows import policies
from workflows.side_by_side import together

ResultT = TypeVar("ResultT", bound=BaseModel)


async def call(
    name: str,
    arg: Any,
    result_type: type[ResultT],
    summary: str,
    *,
    start_to_close: policies.Timeout = policies.BACKEND_CALL_TIMEOUT,
    deadline: policies.Timeout = policies.BACKEND_CALL_DEADLINE,
    heartbeat: policies.Timeout = policies.HEARTBEAT_TIMEOUT,
    retry: RetryPolicy = policies.BACKEND_RETRY,
) -> ResultT:
    result: ResultT = await workflow.execute_activity(
        name,
        arg,
        result_type=result_type,
        start_to_close_timeout=start_to_close,
        schedule_to_close_timeout=deadline,
        heartbeat_timeout=heartbeat,
        retry_policy=retry,
        summary=summary,
    )
    return result


# --- Vault PKI ----------------------------------------------------------------------------------
async def ensure_ca(spec: ClusterSpec) -> CaResult:
    return await call(
        "pki.ensure_ca",
        CaInput(spec=spec),
        CaResult,
        f"ensure PKI mount {pki_mount(spec.id)} with the cluster's root CA",
        deadline=policies.PKI_CALL_DEADLINE,
    )


async def ensure_roles(spec: ClusterSpec) -> EnsureResult:
    return await call(
        "pki.ensure_roles",
        ClusterRef(spec=spec),
        EnsureResult,
        f"ensure one PKI role per component on {pki_mount(spec.id)}",
        deadline=policies.PKI_CALL_DEADLINE,
    )


async def ensure_policy(spec: ClusterSpec) -> EnsureResult:
    return await call(
        "pki.ensure_policy",
        ClusterRef(spec=spec),
        EnsureResult,
        f"ensure the Vault policy that may issue from {pki_mount(spec.id)} only",
        deadline=policies.PKI_CALL_DEADLINE,
    )


async def ensure_certificates(
    spec: ClusterSpec, requests: list[CertificateRequest], force: bool = False, why: str = ""
) -> CertificatesResult:
    count = len(requests)
    return await call(
        "pki.ensure_certificates",
        EnsureCertificatesInput(spec=spec, requests=requests, renew_before=spec.certificates.renew_before, force=force),
        CertificatesResult,
        f"issue {'all' if force else 'due'} of {count} certificates and store their key pairs"
        + (f" ({why})" if why else ""),
        start_to_close=policies.PKI_BATCH_CALL_TIMEOUT,
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,
        deadline=policies.PKI_CALL_DEADLINE,
    )


async def ensure_certificates_absent(spec: ClusterSpec) -> EnsureResult:
    return await call(
        "pki.ensure_certificates_absent",
        ClusterRef(spec=spec),
        EnsureResult,
        "delete every stored key pair of the cluster",
    )


async def revoke_certificates(spec: ClusterSpec) -> RevokeResult:
    return await call(
        "pki.revoke_certificates",
        ClusterRef(spec=spec),
        RevokeResult,
        f"revoke every unexpired leaf issued by {pki_mount(spec.id)}",
        start_to_close=policies.PKI_BATCH_CALL_TIMEOUT,
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,  # it heartbeats every serial: a lost worker costs seconds
    )


async def ensure_node_certificates_absent(spec: ClusterSpec, nodes: list[str]) -> NodeCertificatesResult:
    return await call(
        "pki.ensure_node_certificates_absent",
        NodeCertificatesInput(spec=spec, nodes=nodes),
        NodeCertificatesResult,
        f"revoke and delete the certificates of {', '.join(nodes)} (gone from {spec.id})",
        start_to_close=policies.PKI_BATCH_CALL_TIMEOUT,
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,
        deadline=policies.PKI_CALL_DEADLINE,
    )


async def ensure_pki_absent(spec: ClusterSpec) -> EnsureResult:
    return await call(
        "pki.ensure_pki_absent",
        ClusterRef(spec=spec),
        EnsureResult,
        f"delete the roles, the policy and the mount {pki_mount(spec.id)}",
    )


# --- infrastructure provider (kvm or aws) --------------------------------------------------------
def _provider(spec: ClusterSpec, op: ProviderOp) -> str:
    return provider_activity(spec.provider, op)


async def ensure_foundation(spec: ClusterSpec) -> EnsureResult:
    return await call(
        _provider(spec, ProviderOp.ENSURE_FOUNDATION),
        ClusterRef(spec=spec),
        EnsureResult,
        f"ensure the {spec.provider} foundation of {spec.id} (isolation, network, identity)",
        start_to_close=policies.PROVIDER_CALL_TIMEOUT,
        heartbeat=policies.PROVIDER_HEARTBEAT_TIMEOUT,
    )


async def ensure_endpoint(spec: ClusterSpec) -> EnsureResult:
    return await call(
        _provider(spec, ProviderOp.ENSURE_ENDPOINT),
        ClusterRef(spec=spec),
        EnsureResult,
        f"ensure the API endpoint {spec.api_domain}",
        start_to_close=policies.PROVIDER_CALL_TIMEOUT,
        heartbeat=policies.PROVIDER_HEARTBEAT_TIMEOUT,
    )


async def ensure_node(spec: ClusterSpec, node: str, version: str, restart_token: str = "") -> EnsureResult:
    return await call(
        _provider(spec, ProviderOp.ENSURE_NODE),
        NodeRef(spec=spec, node=node, kubernetes_version=version, restart_token=restart_token),
        EnsureResult,
        f"ensure node {node} at Kubernetes {version}",
        start_to_close=policies.PROVIDER_CALL_TIMEOUT,
        heartbeat=policies.PROVIDER_HEARTBEAT_TIMEOUT,
    )


async def ensure_node_absent(spec: ClusterSpec, node: str, version: str) -> EnsureResult:
    return await call(
        _provider(spec, ProviderOp.ENSURE_NODE_ABSENT),
        NodeRef(spec=spec, node=node, kubernetes_version=version),
        EnsureResult,
        f"remove node {node}",
        start_to_close=policies.PROVIDER_CALL_TIMEOUT,
        heartbeat=policies.PROVIDER_HEARTBEAT_TIMEOUT,
    )


async def wait_nodes_ready(
    spec: ClusterSpec, nodes: list[str], timeout: policies.Timeout, version: str | None = None
) -> NodesResult:
    shown = ", ".join(nodes) if len(nodes) <= 4 else f"{len(nodes)} nodes"
    return await call(
        _provider(spec, ProviderOp.WAIT_NODES_READY),
        WaitNodesInput(spec=spec, nodes=nodes, timeout=timeout, kubernetes_version=version),
        NodesResult,
        f"wait until {shown} ready" + (f" at {version}" if version else ""),
        start_to_close=policies.wait_attempt_timeout(timeout),
        deadline=policies.wait_deadline(timeout),
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,
        retry=policies.WAIT_RETRY,
    )


async def restart_node(spec: ClusterSpec, node: str, version: str, restart_token: str) -> EnsureResult:
    return await call(
        _provider(spec, ProviderOp.RESTART_NODE),
        NodeRef(spec=spec, node=node, kubernetes_version=version, restart_token=restart_token),
        EnsureResult,
        f"restart node {node} to load new certificates",
    )


async def list_nodes(spec: ClusterSpec) -> NodesResult:
    return await call(
        _provider(spec, ProviderOp.LIST_NODES), ClusterRef(spec=spec), NodesResult, f"list the nodes of {spec.id}"
    )


async def list_resources(spec: ClusterSpec) -> ResourceList:
    return await call(
        _provider(spec, ProviderOp.LIST_RESOURCES),
        ClusterRef(spec=spec),
        ResourceList,
        f"list every {spec.provider} resource labelled with {spec.id}",
    )


async def ensure_endpoint_absent(spec: ClusterSpec) -> EnsureResult:
    return await call(
        _provider(spec, ProviderOp.ENSURE_ENDPOINT_ABSENT),
        ClusterRef(spec=spec),
        EnsureResult,
        f"remove the API endpoint {spec.api_domain}",
        start_to_close=policies.PROVIDER_CALL_TIMEOUT,
        heartbeat=policies.PROVIDER_HEARTBEAT_TIMEOUT,
    )


async def ensure_foundation_absent(spec: ClusterSpec) -> EnsureResult:
    return await call(
        _provider(spec, ProviderOp.ENSURE_FOUNDATION_ABSENT),
        ClusterRef(spec=spec),
        EnsureResult,
        f"remove the {spec.provider} foundation of {spec.id}",
        start_to_close=policies.FOUNDATION_REMOVAL_TIMEOUT,
        heartbeat=policies.PROVIDER_HEARTBEAT_TIMEOUT,
    )


# --- Temporal itself: the rotation schedule and requests to the entity ----------------------------
async def ensure_rotation_schedule(spec: ClusterSpec, paused: bool | None = None) -> RotationScheduleResult:
    return await call(
        "schedule.ensure_rotation_schedule",
        RotationScheduleInput(spec=spec, paused=paused),
        RotationScheduleResult,
        f"ensure schedule {rotation_schedule_id(spec.id)} rotates every {spec.certificates.rotation_interval}",
    )


async def ensure_rotation_schedule_absent(cluster_id: str) -> EnsureResult:
    return await call(
        "schedule.ensure_rotation_schedule_absent",
        ScheduleRef(cluster_id=cluster_id),
        EnsureResult,
        f"pause and delete schedule {rotation_schedule_id(cluster_id)}",
    )


async def request_rotation(cluster_id: str, request_id: str) -> RotateCertificatesResult:
    return await call(
        "entity.request_rotation",
        RequestRotationInput(cluster_id=cluster_id, request_id=request_id),
        RotateCertificatesResult,
        f"ask cluster {cluster_id} to rotate its certificates and wait for it",
        start_to_close=policies.ENTITY_REQUEST_TIMEOUT,
        deadline=policies.ENTITY_REQUEST_TIMEOUT,
        heartbeat=policies.ENTITY_REQUEST_HEARTBEAT_TIMEOUT,
        retry=policies.ENTITY_REQUEST_RETRY,
    )


# --- CA rotation and user key pairs (Vault PKI) ----------------------------------------------------
async def ensure_next_issuer(spec: ClusterSpec, after_issuer_id: str) -> IssuerResult:
    return await call(
        "pki.ensure_next_issuer",
        NextIssuerInput(spec=spec, after_issuer_id=after_issuer_id),
        IssuerResult,
        f"ensure the CA that replaces {after_issuer_id or 'the current CA'} on {pki_mount(spec.id)} (not default yet)",
        deadline=policies.PKI_CALL_DEADLINE,
    )


async def set_default_issuer(spec: ClusterSpec, issuer_id: str) -> EnsureResult:
    return await call(
        "pki.set_default_issuer",
        SetDefaultIssuerInput(spec=spec, issuer_id=issuer_id),
        EnsureResult,
        f"make issuer {issuer_id} the CA that issues on {pki_mount(spec.id)}",
        deadline=policies.PKI_CALL_DEADLINE,
    )


async def publish_trust_bundle(spec: ClusterSpec, issuer_ids: list[str]) -> TrustBundleResult:
    return await call(
        "pki.publish_trust_bundle",
        TrustBundleInput(spec=spec, issuer_ids=issuer_ids),
        TrustBundleResult,
        f"publish the trust bundle [{', '.join(issuer_ids)}] to every consumer of {spec.id}",
        start_to_close=policies.PKI_BATCH_CALL_TIMEOUT,
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,
        deadline=policies.PKI_CALL_DEADLINE,
    )


async def sign_user_csr(spec: ClusterSpec, csr_pem: str, ttl: policies.Timeout) -> SignedUserCertificate:
    # A person waits for this one: a short deadline, so a Vault outage is an error, not a hang.
    return await call(
        "pki.sign_user_csr",
        SignUserCsrInput(spec=spec, csr_pem=csr_pem, ttl=ttl),
        SignedUserCertificate,
        f"sign a user's CSR with the CA of {spec.id}",
        start_to_close=policies.USER_REQUEST_CALL_TIMEOUT,
        deadline=policies.USER_REQUEST_DEADLINE,
    )


# --- the tenant cluster's own API (rolling upgrades) ---------------------------------------------------
async def cordon_node(spec: ClusterSpec, node: str) -> EnsureResult:
    return await call(
        "tenant.cordon_node",
        TenantNodeInput(spec=spec, node=node),
        EnsureResult,
        f"cordon node {node} in the tenant cluster {spec.id}",
        start_to_close=policies.TENANT_CALL_TIMEOUT,
    )


async def remove_tenant_node(spec: ClusterSpec, node: str) -> EnsureResult:
    return await call(
        "tenant.remove_node",
        TenantNodeInput(spec=spec, node=node),
        EnsureResult,
        f"remove node {node} from the tenant cluster {spec.id}",
        start_to_close=policies.TENANT_CALL_TIMEOUT,
    )


async def uncordon_node(spec: ClusterSpec, node: str) -> EnsureResult:
    return await call(
        "tenant.uncordon_node",
        TenantNodeInput(spec=spec, node=node),
        EnsureResult,
        f"uncordon node {node} in the tenant cluster {spec.id}",
        start_to_close=policies.TENANT_CALL_TIMEOUT,
    )


async def drain_node(spec: ClusterSpec, node: str, timeout: policies.Timeout) -> DrainResult:
    return await call(
        "tenant.drain_node",
        DrainInput(spec=spec, node=node, timeout=timeout),
        DrainResult,
        f"drain node {node} of {spec.id} (evictions honour PodDisruptionBudgets; gives up after {timeout})",
        start_to_close=policies.wait_attempt_timeout(timeout),
        deadline=policies.wait_deadline(timeout),
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,
        retry=policies.WAIT_RETRY,
    )


async def check_health(
    spec: ClusterSpec, expected_nodes: list[str], wait: policies.Timeout = policies.NO_WAIT
) -> HealthResult:
    return await call(
        "tenant.check_health",
        HealthInput(spec=spec, expected_nodes=expected_nodes, wait=wait),
        HealthResult,
        f"check that every node of {spec.id} is Ready and its API answers",
        start_to_close=policies.wait_attempt_timeout(wait),
        deadline=policies.wait_deadline(wait),
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,
        retry=policies.WAIT_RETRY,
    )


async def wait_node_registered(spec: ClusterSpec, node: str, version: str, timeout: policies.Timeout) -> NodeHealth:
    return await call(
        "tenant.wait_node_registered",
        WaitRegisteredInput(spec=spec, node=node, kubernetes_version=version, timeout=timeout),
        NodeHealth,
        f"wait until node {node} is Ready at v{version} in the tenant cluster {spec.id}",
        start_to_close=policies.wait_attempt_timeout(timeout),
        deadline=policies.wait_deadline(timeout),
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,
        retry=policies.WAIT_RETRY,
    )


# --- drift check: one observe per backend ---------------------------------------------------------
async def observe(name: str, spec: ClusterSpec, nodes: dict[str, str], what: str) -> DriftReport:
    return await call(
        name,
        ObserveInput(spec=spec, nodes=nodes),
        DriftReport,
        f"compare {what} of {spec.id} with its spec",
        start_to_close=policies.OBSERVE_CALL_TIMEOUT,
        deadline=policies.OBSERVE_DEADLINE,
    )


async def observe_provider(spec: ClusterSpec, nodes: dict[str, str]) -> DriftReport:
    return await observe(_provider(spec, ProviderOp.OBSERVE), spec, nodes, f"the {spec.provider} resources")


async def observe_pki(spec: ClusterSpec, nodes: dict[str, str]) -> DriftReport:
    return await observe("pki.observe", spec, nodes, "the Vault mount, roles, policy and stored key pairs")


async def observe_schedule(spec: ClusterSpec, nodes: dict[str, str]) -> DriftReport:
    return await observe("schedule.observe", spec, nodes, "the rotation schedule")


# --- the periodic check's first look, from the entity itself --------------------------------------
# Ordinary activities, not local ones: a local activity keeps the entity's workflow task open, a
# 'status' query waits for it, and a slow backend would make 'status' hang exactly when it matters.
async def observe_everything(spec: ClusterSpec, nodes: dict[str, str]) -> list[DriftReport]:
    """The three observes of a drift check, side by side."""
    return list(await together(observe_provider(spec, nodes), observe_pki(spec, nodes), observe_schedule(spec, nodes)))


async def observe_nodes(spec: ClusterSpec, nodes: list[str]) -> tuple[NodesResult, HealthResult]:
    """The node-health look of a periodic check: the VMs/instances and the tenant API's Nodes, side by side."""
    machines, tenant = await together(list_nodes(spec), check_health(spec, nodes))
    return machines, tenant


async def revoke_unheld_certificates(spec: ClusterSpec, nodes: dict[str, str]) -> NodeCertificatesResult:
    return await call(
        "pki.revoke_unheld_certificates",
        ObserveInput(spec=spec, nodes=nodes),
        NodeCertificatesResult,
        f"revoke the valid leaves of {pki_mount(spec.id)} that no stored key pair holds",
        start_to_close=policies.PKI_BATCH_CALL_TIMEOUT,
        heartbeat=policies.WAIT_HEARTBEAT_TIMEOUT,  # it heartbeats every serial
        deadline=policies.PKI_CALL_DEADLINE,
    )
