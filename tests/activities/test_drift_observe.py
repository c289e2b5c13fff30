"""The drift-check observes of Vault (OpenBao) and the rotation schedule (Temporal dev server):
in sync they report nothing; a deleted role, key pair or schedule is reported missing, and a
leftover key pair of a node that no longer exists is reported extra. The ensure_* steps the create
uses put everything back."""

from __future__ import annotations

import hvac
from kubernetes import client as k8s
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.pki.rotation_schedule import RotationSchedules
from activities.pki.vault import VaultPki
from models.drift import DriftKind, ObserveInput
from models.naming import kvm_namespace, rotation_schedule_id
from models.pki import CaInput, EnsureCertificatesInput, certificate_requests, pki_mount, vault_policy_name
from models.provider import ClusterRef
from models.schedules import RotationScheduleInput
from models.spec import ClusterSpec
from tests.specs import small_kvm


def _observe_input(spec: ClusterSpec, nodes: list[str]) -> ObserveInput:
    return ObserveInput(spec=spec, nodes={n: spec.kubernetes_version for n in nodes})


def _issue(pki: VaultPki, spec: ClusterSpec, nodes: list[str]) -> None:
    requests = certificate_requests(spec, nodes)
    pki.ensure_certificates(
        EnsureCertificatesInput(spec=spec, requests=requests, renew_before=spec.certificates.renew_before)
    )


def test_vault_observe_in_sync_then_deleted_role_and_key_pair_and_a_leftover(
    pki: VaultPki, vault: hvac.Client, core: k8s.CoreV1Api, spec: ClusterSpec
) -> None:
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=kvm_namespace(spec.id))))
    pki.ensure_ca(CaInput(spec=spec))
    pki.ensure_roles(ClusterRef(spec=spec))
    pki.ensure_policy(ClusterRef(spec=spec))
    nodes = spec.node_names()
    _issue(pki, spec, [*nodes, "worker-9"])  # worker-9's key pair: a node that went away
    assert pki.observe(_observe_input(spec, [*nodes, "worker-9"])).items == []

    mount = pki_mount(spec.id)
    role = next(iter(vault.list(f"{mount}/roles")["data"]["keys"]))
    vault.delete(f"{mount}/roles/{role}")
    core.delete_namespaced_secret("cert-apiserver", kvm_namespace(spec.id))
    report = pki.observe(_observe_input(spec, nodes))
    assert sorted(report.of(DriftKind.MISSING)) == sorted(
        [f"vault:role/{role}", f"secret {kvm_namespace(spec.id)}/cert-apiserver"]
    ), report
    leftover, lost = report.of(DriftKind.EXTRA)
    assert leftover == f"secret {kvm_namespace(spec.id)}/cert-node-worker-9", report
    # the deleted Secret's certificate is still valid in Vault, held by nobody now (issue 14)
    assert lost.startswith("vault:certificate/") and "CN kube-apiserver" in report.items[-1].detail, report

    vault.sys.delete_policy(vault_policy_name(spec.id))
    assert f"vault:policy/{vault_policy_name(spec.id)}" in pki.observe(_observe_input(spec, nodes)).of(
        DriftKind.MISSING
    )

    # the create's steps repair it all; the leftover stays reported until it is removed
    pki.ensure_roles(ClusterRef(spec=spec))
    pki.ensure_policy(ClusterRef(spec=spec))
    _issue(pki, spec, nodes)
    after = pki.observe(_observe_input(spec, nodes))
    assert not after.of(DriftKind.MISSING) and not after.of(DriftKind.CHANGED), after
    assert after.of(DriftKind.EXTRA) == [leftover, lost]  # the repair's revocation is not an ensure step


async def test_schedule_observe_reports_a_deleted_schedule(temporal_client: Client) -> None:
    schedules = RotationSchedules(temporal_client, task_queue="drift-test")
    env = ActivityEnvironment()
    spec = small_kvm()
    observe = _observe_input(spec, spec.node_names())
    await env.run(schedules.ensure_rotation_schedule, RotationScheduleInput(spec=spec))
    assert (await env.run(schedules.observe, observe)).items == []

    await temporal_client.get_schedule_handle(rotation_schedule_id(spec.id)).delete()
    report = await env.run(schedules.observe, observe)
    assert report.of(DriftKind.MISSING) == [f"schedule/{rotation_schedule_id(spec.id)}"]

    await env.run(schedules.ensure_rotation_schedule, RotationScheduleInput(spec=spec))
    assert (await env.run(schedules.observe, observe)).items == []
    await temporal_client.get_schedule_handle(rotation_schedule_id(spec.id)).delete()
