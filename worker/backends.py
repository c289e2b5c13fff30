"""The activity objects of every backend, wired with clients built from settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from config.settings import Settings
from models.spec import Provider
from worker.clients import kube_api_client, vault_client
from worker.registry import activities_of


def build_activities(settings: Settings, temporal: Client) -> list[Callable[..., Any]]:
    from kubernetes import client as k8s

    from activities.certificate_sinks import KubernetesSecretSink
    from activities.host_cluster import KvmProvider
    from activities.vault_pki import VaultPki

    kube = kube_api_client(settings)
    core = k8s.CoreV1Api(kube)
    pki = VaultPki(
        vault_client(settings),
        sinks={Provider.KVM: KubernetesSecretSink(core)},
        mount_prefix=settings.vault_pki_mount_prefix,
    )
    kvm = KvmProvider(
        core,
        k8s.AppsV1Api(kube),
        k8s.NetworkingV1Api(kube),
        simulate_node_registration=settings.kube_simulate_tenant_nodes,
        simulated_workload_pods=3 if settings.kube_simulate_tenant_nodes else 0,
    )
    return activities_of(pki, kvm)
