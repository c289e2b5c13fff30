"""The worker's Kubernetes login on a real OpenBao whose ``kubernetes`` auth method reviews tokens
with the host API emulator's TokenReview API (over TLS, with its CA, as in production).

OpenBao is set up by deploy/vault/setup.sh itself (its own server: the script uses the default
mount paths), with the reviewer token and CA read from deploy/vault/token-reviewer.yaml's Secret as
that file says; the worker's and the other accounts' tokens come from the emulator's TokenRequest
API, as the kubelet gets the projected ones.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import kubernetes_validate
import pytest
import yaml
from kubernetes import client, config

from activities.pki.vault import VaultPki
from activities.providers.contract import Providers
from config.settings import Settings
from devstack.kube_emulator import Emulator
from models.pki import CaInput
from models.provider import ClusterRef
from tests.deploy.rendering import KUBECTL, NO_KUBECTL
from tests.deploy.vault_helpers import ROOT, WORKER_POLICY
from tests.servers import binary, free_port, process, wait_http
from tests.specs import small_kvm, unique_id
from worker.vault_auth import kept_vault_client, kubernetes_login, vault_client_from

pytestmark = pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)

BASE = ROOT / "deploy" / "base"
NAMESPACE = yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"]
SERVICE_ACCOUNT = yaml.safe_load((BASE / "serviceaccount.yaml").read_text())["metadata"]["name"]
ROLE = "tenantctl-worker"
REVIEWER_MANIFEST = ROOT / "deploy" / "vault" / "token-reviewer.yaml"
TOKEN_TTL, TOKEN_MAX_TTL = 2, 5  # seconds: the worker's Vault token runs out within a test


@dataclass
class World:
    emulator: Emulator
    core: client.CoreV1Api
    vault_addr: str
    root: hvac.Client

    def token(self, account: str = SERVICE_ACCOUNT, namespace: str = NAMESPACE, **spec: Any) -> str:
        spec.setdefault("audiences", ["vault"])
        answer = self.core.create_namespaced_service_account_token(account, namespace, {"spec": spec})
        return str(answer.status.token)

    def account(self, name: str, namespace: str = NAMESPACE) -> None:
        self.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    assert KUBECTL is not None, NO_KUBECTL
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def reviewer_credentials(emulator: Emulator, kubeconfig: Path, workdir: Path) -> tuple[str, Path]:
    """deploy/vault/token-reviewer.yaml applied and read back as its comment says: (jwt, CA file)."""
    documents = list(yaml.safe_load_all(REVIEWER_MANIFEST.read_text()))
    served = [d for d in documents if d["kind"] != "ClusterRoleBinding"]  # the emulator serves no RBAC API
    assert [d["roleRef"]["name"] for d in documents if d not in served] == ["system:auth-delegator"]
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(served))
    secret = next(d["metadata"]["name"] for d in served if d["kind"] == "Secret")

    def field(path: str) -> str:
        return kubectl(kubeconfig, "-n", NAMESPACE, "get", "secret", secret, "-o", f"jsonpath={{.data.{path}}}")

    deadline = time.monotonic() + 10
    while not field("token"):  # the token controller fills it in
        assert time.monotonic() < deadline, "the token controller did not fill in the reviewer's token"
        time.sleep(0.05)
    ca_file = workdir / "kubernetes-ca.crt"
    ca_file.write_bytes(base64.b64decode(field("ca\\.crt")))
    assert emulator.tls is not None and ca_file.read_text() == emulator.tls.ca_pem
    return base64.b64decode(field("token")).decode(), ca_file


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("kubernetes-auth")
    with Emulator(port=0, tls_dir=workdir / "tls", min_token_expiration_seconds=1) as emulator:
        kubeconfig = emulator.write_kubeconfig(workdir / "kubeconfig")
        cfg = client.Configuration()
        config.load_kube_config(str(kubeconfig), client_configuration=cfg)
        core = client.CoreV1Api(client.ApiClient(cfg))
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": SERVICE_ACCOUNT}})
        reviewer_jwt, ca_file = reviewer_credentials(emulator, kubeconfig, workdir)
        port, root_token = free_port(), "kubernetes-auth-root"
        listen = f"-dev-listen-address=127.0.0.1:{port}"
        args = [binary("bao"), "server", "-dev", f"-dev-root-token-id={root_token}", listen]
        with process(args, workdir / "openbao.log", env={"HOME": str(workdir)}):
            addr = f"http://127.0.0.1:{port}"
            wait_http(f"{addr}/v1/sys/health")
            env = {
                **os.environ,
                "VAULT_CLI": binary("bao"),
                "BAO_ADDR": addr,
                "BAO_TOKEN": root_token,
                "HOME": str(workdir),
                "KUBERNETES_HOST": emulator.url,
                "KUBERNETES_CA_CERT": str(ca_file),
                "TOKEN_REVIEWER_JWT": reviewer_jwt,
                "WORKER_TOKEN_TTL": f"{TOKEN_TTL}s",
                "WORKER_TOKEN_MAX_TTL": f"{TOKEN_MAX_TTL}s",
            }
            script = ROOT / "deploy" / "vault" / "setup.sh"
            ran = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
            assert ran.returncode == 0, ran.stderr
            yield World(emulator, core, addr, hvac.Client(url=addr, token=root_token))


def login(world: World, jwt: str, role: str = ROLE) -> dict[str, Any]:
    """A plain login (no keeper): the ``auth`` block."""
    return dict(hvac.Client(url=world.vault_addr).auth.kubernetes.login(role=role, jwt=jwt)["auth"])


def refused(world: World, jwt: str, role: str = ROLE) -> str:
    with pytest.raises(hvac.exceptions.VaultError) as info:
        login(world, jwt, role)
    return str(info.value)


def role_like_the_workers(world: World, account: str) -> str:
    """An account and a role bound to it as the worker's is (so the worker's own can stay alive)."""
    world.account(account)
    world.root.write(
        f"auth/kubernetes/role/{account}",
        bound_service_account_names=account,
        bound_service_account_namespaces=NAMESPACE,
        audience="vault",
        token_policies=WORKER_POLICY,
        token_no_default_policy=True,
    )
    return account


@pytest.mark.parametrize("version", ["1.30.0", "1.33.0"])
def test_the_reviewer_manifest_passes_strict_schema_validation(version: str) -> None:
    for document in yaml.safe_load_all(REVIEWER_MANIFEST.read_text()):
        kubernetes_validate.validate(document, version, strict=True)


def test_the_mount_is_configured_as_setup_sh_says(world: World) -> None:
    cfg = world.root.read("auth/kubernetes/config")["data"]
    assert cfg["kubernetes_host"] == world.emulator.url and cfg["kubernetes_host"].startswith("https://")
    assert world.emulator.tls is not None and cfg["kubernetes_ca_cert"] == world.emulator.tls.ca_pem
    assert cfg["disable_local_ca_jwt"] is True and cfg["token_reviewer_jwt_set"] is True
    role = world.root.read(f"auth/kubernetes/role/{ROLE}")["data"]
    assert role["audience"] == "vault" and role["token_policies"] == [WORKER_POLICY]


def test_the_worker_logs_in_with_exactly_its_policy(world: World, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(world.token())
    settings = Settings(
        vault_addr=world.vault_addr,
        vault_kubernetes_role=ROLE,
        vault_kubernetes_token_path=token_file,
        vault_kubernetes_mount="kubernetes",
    )
    vault = vault_client_from(settings)  # what the worker builds from its settings
    try:
        me = vault.auth.token.lookup_self()["data"]
        assert me["policies"] == [WORKER_POLICY]  # no default policy, nothing else
        uid = world.core.read_namespaced_service_account(SERVICE_ACCOUNT, NAMESPACE).metadata.uid
        assert me["meta"]["service_account_name"] == SERVICE_ACCOUNT
        assert me["meta"]["service_account_namespace"] == NAMESPACE
        assert me["meta"]["service_account_uid"] == uid
        assert me["path"] == "auth/kubernetes/login"
        spec = small_kvm(id=unique_id("k8sauth"))
        pki = VaultPki(vault, Providers([]))
        assert pki.ensure_ca(CaInput(spec=spec)).created  # the worker's work, with that token
        pki.ensure_pki_absent(ClusterRef(spec=spec))
        with pytest.raises(hvac.exceptions.Forbidden):
            vault.sys.list_auth_methods()  # and nothing beyond its policy
    finally:
        vault.adapter.keeper.stop()


def test_other_accounts_namespaces_and_audiences_are_refused(world: World) -> None:
    world.account("intruder")
    assert "service account name not authorized" in refused(world, world.token("intruder"))
    world.core.create_namespace({"metadata": {"name": "elsewhere"}})
    world.account(SERVICE_ACCOUNT, "elsewhere")  # the worker's name, in another namespace
    assert "namespace not authorized" in refused(world, world.token(namespace="elsewhere"))
    # the worker's own account, but a token for the Kubernetes API rather than for Vault
    assert "invalid audience" in refused(world, world.token(audiences=["https://kubernetes.default.svc.cluster.local"]))


def test_a_token_the_api_server_rejects_is_refused(world: World) -> None:
    """Each of these passes OpenBao's own checks of the JWT: only the TokenReview refuses them."""
    short = role_like_the_workers(world, "short-lived")
    expired = world.token(short, expirationSeconds=1)
    assert login(world, expired, short)["policies"] == [WORKER_POLICY]
    time.sleep(1.5)  # OpenBao's JWT check allows 150 s of clock skew past exp; the API server allows none
    assert "permission denied" in refused(world, expired, short)

    gone = role_like_the_workers(world, "deleted")
    orphaned = world.token(gone)
    assert login(world, orphaned, gone)["policies"] == [WORKER_POLICY]
    world.core.delete_namespaced_service_account(gone, NAMESPACE)
    assert "permission denied" in refused(world, orphaned, gone)
    world.account(gone)  # recreated under the same name: a new uid, the old token stays dead
    assert "permission denied" in refused(world, orphaned, gone)
    assert login(world, world.token(gone), gone)["policies"] == [WORKER_POLICY]  # a new token is fine


def test_a_vault_token_that_runs_out_is_renewed_then_replaced(world: World, tmp_path: Path) -> None:
    """Vault tokens of 2 s (max 5 s) for 11 s of calls: renewed, then replaced by new Kubernetes
    logins; the projected token rotates meanwhile and the first one expires, so the later logins
    can only have succeeded with the rotated file (the worker re-reads it at each login)."""
    token_file = tmp_path / "token"
    first_jwt = world.token(expirationSeconds=3)
    token_file.write_text(first_jwt)
    vault, keeper = kept_vault_client(world.vault_addr, kubernetes_login(ROLE, token_file))
    try:
        first = vault.auth.token.lookup_self()["data"]["accessor"]
        calls, deadline = 0, time.monotonic() + 2 * TOKEN_MAX_TTL + 1
        while time.monotonic() < deadline:  # a worker-policy call every 50 ms; none may fail
            assert "sys/" in vault.read("sys/mounts")["data"]
            calls += 1
            if calls == 20:  # the kubelet rotates the projected token before it expires
                token_file.write_text(world.token(expirationSeconds=600))
            time.sleep(0.05)
        assert calls > 100
        assert keeper.renewals >= 1, "the token was not renewed before its TTL"
        assert keeper.logins >= 3, "the token was not replaced by new Kubernetes logins at its max TTL"
        me = vault.auth.token.lookup_self()["data"]
        assert me["accessor"] != first and me["policies"] == [WORKER_POLICY]
    finally:
        keeper.stop()
    # the first projected token is dead by now: a worker still holding it could not have logged in
    assert "permission denied" in refused(world, first_jwt)


def command_arguments(text: str, command: str) -> dict[str, str]:
    """The key=value arguments of the shell command starting with ``command`` (continuations joined,
    quotes dropped, ``${VAR:-default}`` read as its default)."""
    joined = text.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if ln.strip().startswith(command))
    pairs = re.findall(r"(\w+)=(\"[^\"]*\"|'[^']*'|\S+)", line[line.index(command) + len(command) :])
    values = {key: value.strip("\"'") for key, value in pairs}
    return {key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value) for key, value in values.items()}


def test_the_readme_commands_are_what_setup_sh_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / "deploy" / "vault" / "setup.sh").read_text()
    role = "vault write auth/kubernetes/role/tenantctl-worker"
    documented = command_arguments(readme, role)
    assert documented == command_arguments(script, role)
    assert documented["audience"] == "vault" and documented["token_policies"] == WORKER_POLICY
    config_keys = set(command_arguments(readme, "vault write auth/kubernetes/config"))
    assert config_keys == {"kubernetes_host", "kubernetes_ca_cert", "disable_local_ca_jwt", "token_reviewer_jwt"}
    assert all(f"{key}=" in script for key in config_keys)
