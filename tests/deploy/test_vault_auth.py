"""The worker's Vault login and token upkeep (worker/vault_auth.py) on a real OpenBao, with tokens
of the worker policy whose TTLs run out within the test: calls keep succeeding throughout.
Kubernetes auth, against the emulator's TokenReview API: test_kubernetes_auth.py."""

from __future__ import annotations

import time
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from activities.pki.vault import VaultPki
from activities.providers.contract import Providers
from config.settings import Settings
from models.pki import CaInput
from models.provider import ClusterRef
from tests.deploy.vault_helpers import approle, install_worker_policy, worker_token
from tests.servers import OpenBao
from tests.specs import small_kvm, unique_id
from worker.vault_auth import approle_login, kept_vault_client, login_of, vault_client_from


@pytest.fixture
def root(openbao: OpenBao) -> hvac.Client:
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    install_worker_policy(client)
    return client


def keep_calling(vault: hvac.Client, seconds: float) -> int:
    """A worker-policy read every 50 ms for ``seconds``; any failure fails the test."""
    calls, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert "sys/" in vault.read("sys/mounts")["data"]
        calls += 1
        time.sleep(0.05)
    return calls


def accessor(vault: hvac.Client) -> str:
    return str(vault.auth.token.lookup_self()["data"]["accessor"])


def test_approle_token_is_renewed_then_replaced_at_its_max_ttl(root: hvac.Client, openbao: OpenBao) -> None:
    mount, role_id, secret_id = approle(root, token_ttl="2s", token_max_ttl="5s")
    vault, keeper = kept_vault_client(openbao.addr, approle_login(role_id, secret_id, mount))
    try:
        first = accessor(vault)
        calls = keep_calling(vault, 9)  # past two max TTLs
        assert calls > 100
        assert keeper.renewals >= 2, "the token was not renewed before its TTL"
        assert keeper.logins >= 2, "the token was not replaced when renewal could no longer extend it"
        assert accessor(vault) != first
        # a real activity with the kept client, after all that
        spec = small_kvm(id=unique_id("kept"))
        pki = VaultPki(vault, Providers([]))
        assert pki.ensure_ca(CaInput(spec=spec)).created
        pki.ensure_pki_absent(ClusterRef(spec=spec))
    finally:
        keeper.stop()


def test_a_revoked_token_is_replaced_without_failing_the_call(root: hvac.Client, openbao: OpenBao) -> None:
    mount, role_id, secret_id = approle(root, token_ttl="1h", token_max_ttl="2h")
    vault, keeper = kept_vault_client(openbao.addr, approle_login(role_id, secret_id, mount))
    try:
        root.auth.token.revoke_accessor(accessor(vault))  # renewal is now refused as well
        assert "sys/" in vault.read("sys/mounts")["data"]  # the call itself succeeds
        assert keeper.logins == 2
        # a genuine permission denial is not papered over by logging in again
        with pytest.raises(hvac.exceptions.Forbidden):
            vault.read("secret/data/anything")
        assert keeper.logins == 2
    finally:
        keeper.stop()


def test_a_static_renewable_token_is_renewed(root: hvac.Client, openbao: OpenBao) -> None:
    token = worker_token(root, ttl="2s", renewable=True)
    vault, keeper = kept_vault_client(openbao.addr, None, token=token)
    try:
        keep_calling(vault, 5)
        assert keeper.renewals >= 2 and keeper.logins == 0
    finally:
        keeper.stop()


def test_settings_choose_the_login(openbao: OpenBao, tmp_path: Path) -> None:
    assert login_of(Settings(vault_token="t")) is None
    assert login_of(Settings(vault_kubernetes_role="r", vault_kubernetes_token_path=tmp_path / "t")) is not None
    assert login_of(Settings(vault_role_id="a", vault_secret_id="b")) is not None
    with pytest.raises(ValueError, match="TENANTCTL_VAULT_KUBERNETES_ROLE"):
        login_of(Settings())
    with pytest.raises(ValueError, match="not readable"):
        vault_client_from(
            Settings(
                vault_addr=openbao.addr, vault_kubernetes_role="r", vault_kubernetes_token_path=tmp_path / "absent"
            )
        )
