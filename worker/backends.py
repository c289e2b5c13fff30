"""The activity objects of every backend, wired with clients built from settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from config.settings import Settings
from worker.clients import aws_clients, kube_api_client, vault_client, with_tenant_api_retries
from worker.registry import activities_of


def build_activities(settings: Settings, temporal: Client) -> list[Callable[..., Any]]:
    """Every activity of the worker. The providers' come from the provider contract
    (``activities.providers.contract``): a provider lacking an operation fails here, at start."""
    from kubernetes import client as k8s

    from activities.aws.provider import AwsProvider
    from activities.fleet.requests import FleetRequests
    from activities.kvm.provider import KvmProvider
    from activities.pki.rotation_schedule import RotationSchedules
    from activities.pki.vault import VaultPki
    from activities.providers.contract import Providers, SimulatedNodes
    from activities.tenant.clusters import TenantClusters, tenant_api_factory

    kube = kube_api_client(settings)
    apps = k8s.AppsV1Api(kube)
    # Local stack only: nothing boots there, so a stand-in registers each node in its tenant API.
    simulated: SimulatedNodes | None = None
    if settings.kube_simulate_tenant_nodes:
        from devstack.tenant_kubelets import LocalStackNodes, SimulatedKubelets

        simulated = LocalStackNodes(apps, SimulatedKubelets(lambda cluster_id: settings.tenant_api_url(cluster_id, "")))
    providers = Providers(
        [
            KvmProvider(kube, simulated_nodes=simulated),
            AwsProvider(aws_clients(settings), simulated_nodes=simulated),
        ]
    )
    pki = VaultPki(
        vault_client(settings),
        providers,
        mount_prefix=settings.vault_pki_mount_prefix,
        cluster_token_role=settings.vault_cluster_token_role,
    )
    schedules = RotationSchedules(temporal, settings.temporal_task_queue)
    # Tenant APIs: plain HTTP where the URL template says http:// (the local stack's emulator),
    # else TLS with each cluster's admin key pair, read where its provider stores it, per call.
    tenant_apis = tenant_api_factory(
        providers.tenant_admin_credentials, lambda spec: settings.tenant_api_url(spec.id, spec.base_domain)
    )
    tenants = TenantClusters(with_tenant_api_retries(tenant_apis, settings))
    return activities_of(pki, schedules, tenants, FleetRequests(temporal)) + providers.activities()
