"""The activity objects of every backend, wired with clients built from settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from config.settings import Settings
from models.spec import Provider
from worker.clients import aws_clients, kube_api_client, vault_client, with_tenant_api_retries
from worker.registry import activities_of


def build_activities(settings: Settings, temporal: Client) -> list[Callable[..., Any]]:
    from kubernetes import client as k8s

    from activities.aws_provider import AwsProvider
    from activities.certificate_sinks import KubernetesSecretSink
    from activities.host_cluster import KvmProvider
    from activities.rotation_schedule import RotationSchedules
    from activities.secrets_manager_sink import SecretsManagerSink
    from activities.tenant_cluster import TenantClusters, tenant_api_factory
    from activities.vault_pki import VaultPki

    kube = kube_api_client(settings)
    core = k8s.CoreV1Api(kube)
    aws = aws_clients(settings)
    pki = VaultPki(
        vault_client(settings),
        sinks={
            Provider.KVM: KubernetesSecretSink(core),
            Provider.AWS: SecretsManagerSink(aws.client("secretsmanager")),
        },
        mount_prefix=settings.vault_pki_mount_prefix,
    )
    kvm = KvmProvider(
        core,
        k8s.AppsV1Api(kube),
        k8s.NetworkingV1Api(kube),
        simulate_node_registration=settings.kube_simulate_tenant_nodes,
        simulated_workload_pods=3 if settings.kube_simulate_tenant_nodes else 0,
    )
    # moto runs no kubelets: on the local stack, stand-ins register AWS nodes in the tenant API.
    kubelets = None
    if settings.kube_simulate_tenant_nodes:
        from devstack.tenant_kubelets import SimulatedKubelets

        kubelets = SimulatedKubelets(lambda cluster_id: settings.tenant_api_url(cluster_id, ""))
    aws_provider = AwsProvider(aws, tenant_nodes=kubelets)
    schedules = RotationSchedules(temporal, settings.temporal_task_queue)
    # Tenant APIs: plain HTTP where the URL template says http:// (the local stack's emulator),
    # else TLS with each cluster's admin key pair, read from its host namespace per call.
    tenant_apis = tenant_api_factory(core, lambda spec: settings.tenant_api_url(spec.id, spec.base_domain))
    tenants = TenantClusters(with_tenant_api_retries(tenant_apis, settings))
    return activities_of(pki, kvm, aws_provider, schedules, tenants)
