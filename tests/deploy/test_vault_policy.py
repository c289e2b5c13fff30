"""deploy/vault/tenantctl-worker.hcl on a real OpenBao: enough for a whole KVM cluster lifecycle,
and it refuses what the worker has no business doing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from temporalio.testing import ActivityEnvironment

from activities.kvm.provider import KvmProvider
from activities.pki.vault import VaultPki
from activities.providers.contract import Providers
from models.pki import CaInput, pki_mount, vault_policy_name
from tests.activities.provider_helpers import local_stack_nodes
from tests.deploy.lifecycle import kvm_lifecycle
from tests.deploy.vault_helpers import (
    AUDIT_CONFIG,
    ROOT,
    WORKER_POLICY,
    WORKER_POLICY_FILE,
    install_worker_policy,
    worker_token,
)
from tests.servers import OpenBao, binary, free_port, process, wait_http
from tests.specs import small_kvm, unique_id
from worker.vault_auth import approle_login, kept_vault_client


@pytest.fixture
def root(openbao: OpenBao) -> hvac.Client:
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    install_worker_policy(client)
    return client


@pytest.fixture
def worker_vault(root: hvac.Client, openbao: OpenBao) -> hvac.Client:
    return hvac.Client(url=openbao.addr, token=worker_token(root))


@pytest.fixture
def api(kube_emulator: Any) -> Iterator[ApiClient]:
    with ApiClient(Configuration(host=kube_emulator.url)) as client:
        yield client


def pki_of(vault: hvac.Client, api: ApiClient) -> VaultPki:
    return VaultPki(vault, Providers([KvmProvider(api)]))


def test_a_whole_kvm_lifecycle_runs_under_the_worker_policy(
    worker_vault: hvac.Client, root: hvac.Client, api: ApiClient
) -> None:
    spec = small_kvm(id=unique_id("policy"))
    provider = KvmProvider(api, simulated_nodes=local_stack_nodes(api), poll_interval=0.05)
    facts = kvm_lifecycle(
        ActivityEnvironment(), pki_of(worker_vault, api), provider, CoreV1Api(api), api, spec, upgrade_to="1.32.5"
    )
    assert facts["issued"] > 0 and facts["revoked"] > 0 and facts["user_groups"] == ["devs"]
    assert facts["left"].resources == []
    # teardown removed what the worker made, with the worker's own token
    assert f"{pki_mount(spec.id)}/" not in root.sys.list_mounted_secrets_engines()["data"]
    assert vault_policy_name(spec.id) not in root.sys.list_policies()["data"]["policies"]


def forbidden(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(hvac.exceptions.Forbidden) as refused:
        call(*args, **kwargs)
    return str(refused.value)


def test_the_policy_refuses_what_the_worker_must_not_do(
    worker_vault: hvac.Client, root: hvac.Client, api: ApiClient
) -> None:
    spec = small_kvm(id=unique_id("refuse"))
    pki_of(worker_vault, api).ensure_ca(CaInput(spec=spec))
    mount = pki_mount(spec.id)

    # another prefix's mounts, a mount deeper than pki/<id>, and other engines
    forbidden(worker_vault.sys.enable_secrets_engine, "pki", path=f"other/{spec.id}")
    forbidden(worker_vault.sys.enable_secrets_engine, "pki", path=f"{mount}/nested")
    forbidden(worker_vault.sys.enable_secrets_engine, "kv", path=f"kv-{spec.id}")
    forbidden(worker_vault.sys.disable_secrets_engine, "secret")
    root.sys.enable_secrets_engine("pki", path=f"other/{spec.id}")
    try:
        forbidden(worker_vault.write, f"other/{spec.id}/root/generate/internal", common_name="x")
        forbidden(worker_vault.sys.disable_secrets_engine, f"other/{spec.id}")
    finally:
        root.sys.disable_secrets_engine(f"other/{spec.id}")

    # policies: tenantctl-<id> only; not its own (tenantctl_worker, outside the glob), not others
    rule = 'path "*" { capabilities = ["sudo", "create", "read", "update", "delete", "list"] }'
    forbidden(worker_vault.write, "sys/policies/acl/admin", policy=rule)
    forbidden(worker_vault.write, "sys/policy/admin", policy=rule)  # the legacy path, too
    forbidden(worker_vault.write, f"sys/policies/acl/{WORKER_POLICY}", policy=rule)
    forbidden(worker_vault.read, "sys/policies/acl/root")
    forbidden(worker_vault.list, "sys/policies/acl")
    worker_vault.write(f"sys/policies/acl/tenantctl-{spec.id}-probe", policy='path "x" { capabilities = ["read"] }')
    worker_vault.delete(f"sys/policies/acl/tenantctl-{spec.id}-probe")

    # a CA's private key: exported generation variants are not granted, nor key reads
    forbidden(worker_vault.write, f"{mount}/root/generate/exported", common_name="stolen")
    forbidden(worker_vault.write, f"{mount}/issuers/generate/root/exported", common_name="stolen")
    forbidden(worker_vault.write, f"{mount}/keys/generate/exported", key_type="ec")
    keys = root.list(f"{mount}/keys")["data"]["keys"]
    forbidden(worker_vault.read, f"{mount}/key/{keys[0]}")
    forbidden(worker_vault.write, f"{mount}/intermediate/generate/exported", common_name="stolen")

    # nothing else under sys/, no other auth, no other secrets, no minting tokens
    forbidden(worker_vault.sys.enable_auth_method, "userpass", path=f"userpass-{spec.id}")
    forbidden(worker_vault.sys.list_auth_methods)
    forbidden(worker_vault.read, "sys/audit")
    forbidden(worker_vault.write, "sys/seal")
    forbidden(worker_vault.auth.token.create, policies=[WORKER_POLICY])
    forbidden(worker_vault.read, "secret/data/anything")
    root.sys.disable_secrets_engine(mount)


def test_setup_script_gives_the_worker_its_identity(tmp_path: Path) -> None:
    """deploy/vault/setup.sh on a fresh OpenBao (its own: the script enables auth methods at their
    default paths) that declares deploy/vault/openbao-audit.hcl's audit device; then the worker
    logs in with AppRole and works, and the audit log shows it without its secrets."""
    audit_log = tmp_path / "audit.log"
    config = tmp_path / "audit.hcl"
    config.write_text(AUDIT_CONFIG.read_text().replace("/openbao/audit/audit.log", str(audit_log)))
    port, token = free_port(), "setup-root"
    args = [binary("bao"), "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"]
    with process([*args, f"-config={config}"], tmp_path / "openbao.log", env={"HOME": str(tmp_path)}):
        addr = f"http://127.0.0.1:{port}"
        wait_http(f"{addr}/v1/sys/health")
        env = {
            **os.environ,
            "VAULT_CLI": binary("bao"),
            "BAO_ADDR": addr,
            "BAO_TOKEN": token,
            "HOME": str(tmp_path),
            "KUBERNETES_HOST": "https://127.0.0.1:6443",
            "KUBERNETES_CA_CERT": str(_ca_file(tmp_path)),
        }
        script = ROOT / "deploy" / "vault" / "setup.sh"
        ran = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert ran.returncode == 0, ran.stderr
        assert "audit device not enabled" not in ran.stderr  # the declared device was found
        root = hvac.Client(url=addr, token=token)
        assert root.sys.read_policy(WORKER_POLICY)["data"]["rules"] == WORKER_POLICY_FILE.read_text()
        role = root.read("auth/approle/role/tenantctl-worker")["data"]
        assert role["token_policies"] == [WORKER_POLICY] and role["token_no_default_policy"] is True
        kubernetes = root.read("auth/kubernetes/role/tenantctl-worker")["data"]
        assert kubernetes["bound_service_account_names"] == ["tenantctl-worker"]
        assert kubernetes["bound_service_account_namespaces"] == ["tenantctl"]
        assert kubernetes["token_policies"] == [WORKER_POLICY]

        role_id = root.read("auth/approle/role/tenantctl-worker/role-id")["data"]["role_id"]
        secret_id = root.write("auth/approle/role/tenantctl-worker/secret-id")["data"]["secret_id"]
        vault, keeper = kept_vault_client(addr, approle_login(role_id, secret_id))
        try:
            spec = small_kvm(id=unique_id("setup"))
            assert VaultPki(vault, Providers([])).ensure_ca(CaInput(spec=spec)).created
            assert vault.auth.token.lookup_self()["data"]["policies"] == [WORKER_POLICY]
        finally:
            keeper.stop()
    audit = audit_log.read_text()
    assert "root/generate/internal" in audit and secret_id not in audit  # logged, secrets HMAC'd
    assert oct(audit_log.stat().st_mode & 0o777) == "0o600"


def _ca_file(directory: Path) -> Path:
    """A CA certificate file, standing in for the management cluster's (Vault outside the cluster)."""
    from cryptography.hazmat.primitives import serialization

    from tests.certificates import self_signed

    _, certificate = self_signed("kubernetes", timedelta(days=1), ca=True)
    path = directory / "kubernetes-ca.crt"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path
