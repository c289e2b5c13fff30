"""The local stack's worker runs under deploy/vault's least-privilege policy, not OpenBao's root token;
OpenBao audits every request; the state folder is its owner's only."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from activities.kvm.provider import KvmProvider
from activities.pki.vault import CLUSTER_TOKEN_TTL, VaultPki, policy_document
from activities.providers.contract import Providers
from config.settings import ENV_PREFIX
from devstack.stack import BASE_SERVICES, PROJECT_ROOT, WORKER, LocalStack
from devstack.vault_identity import CLUSTER_TOKEN_ROLE, WORKER_POLICY, WORKER_ROLE
from models.naming import kvm_namespace
from models.pki import CaInput, EnsureCertificatesInput, certificate_requests, vault_policy_name
from models.provider import ClusterRef
from tests.devstack.conftest import wait_until
from tests.specs import small_kvm

pytestmark = pytest.mark.stack


def root(stack: LocalStack) -> hvac.Client:
    return hvac.Client(url=stack.endpoints().vault_addr, token=stack.vault_root_token())


def worker_client(stack: LocalStack) -> hvac.Client:
    """A client logged in as the worker logs in: the AppRole the endpoints carry."""
    endpoints = stack.endpoints()
    assert endpoints.vault_role_id and endpoints.vault_secret_id is not None
    client = hvac.Client(url=endpoints.vault_addr)
    client.auth.approle.login(endpoints.vault_role_id, endpoints.vault_secret_id.get_secret_value())
    return client


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(item.split("=", 1) for item in raw if "=" in item)


def test_the_worker_gets_its_approle_and_no_root_token(stack: LocalStack) -> None:
    if not (PROJECT_ROOT / "worker" / "__main__.py").exists():
        pytest.skip("worker/__main__.py does not exist yet")
    root_token = stack.vault_root_token()
    with_worker = LocalStack(stack.state_dir, with_worker=True)
    endpoints = with_worker.up()
    worker = next(s for s in with_worker.status() if s.name == WORKER)
    assert worker.healthy and worker.pid, worker.detail
    environ = environ_of(worker.pid)
    assert f"{ENV_PREFIX}VAULT_TOKEN" not in environ
    assert root_token not in "\0".join(f"{k}={v}" for k, v in environ.items())
    assert environ[f"{ENV_PREFIX}VAULT_ROLE_ID"] == endpoints.vault_role_id
    assert endpoints.vault_secret_id is not None
    assert environ[f"{ENV_PREFIX}VAULT_SECRET_ID"] == endpoints.vault_secret_id.get_secret_value()
    assert stat.S_IMODE(Path(f"/proc/{worker.pid}/environ").stat().st_mode) & 0o077 == 0
    # the worker itself logged in with it and holds a token of that policy alone
    log_text = Path(worker.log).read_text(errors="replace")
    assert wait_until(lambda: "logged in to Vault" in Path(worker.log).read_text(errors="replace"), 15), log_text
    assert f"policies {WORKER_POLICY})" in Path(worker.log).read_text(errors="replace")
    # what the worker's token carries: tenantctl_worker only (no "default", no "root"), TTL 1 h
    token = worker_client(stack).auth.token.lookup_self()["data"]
    assert token["policies"] == [WORKER_POLICY]
    assert 3000 < token["ttl"] <= 3600
    role = root(stack).auth.approle.read_role(WORKER_ROLE)["data"]
    assert role["token_no_default_policy"] is True and role["token_max_ttl"] == 24 * 3600
    # a repeated up converges to the same identity and keeps the worker running
    identity = stack.layout.openbao_worker_identity.read_text()
    again = LocalStack(stack.state_dir, with_worker=True)
    assert again.up() == endpoints
    assert WORKER in again.kept and sorted(again.kept) == sorted([*BASE_SERVICES, WORKER])
    assert stack.layout.openbao_worker_identity.read_text() == identity


def test_the_worker_policy_refuses_what_it_should(stack: LocalStack) -> None:
    worker = worker_client(stack)
    cluster = f"wid{uuid.uuid4().hex[:6]}"
    # what it may do: one cluster's mount, its CA (generated inside Vault), its policy
    worker.sys.enable_secrets_engine("pki", path=f"pki/{cluster}")
    worker.secrets.pki.generate_root("internal", common_name=f"{cluster} CA", mount_point=f"pki/{cluster}")
    worker.sys.create_or_update_acl_policy(f"tenantctl-{cluster}", 'path "pki/x/*" { capabilities = ["read"] }')
    keys = root(stack).list(f"pki/{cluster}/keys")["data"]["keys"]
    assert root(stack).read(f"pki/{cluster}/key/{keys[0]}")["data"]  # there, for root only
    refused = {
        "another prefix's mount": lambda: worker.sys.enable_secrets_engine("pki", path=f"other/{cluster}"),
        "a secrets engine of another prefix": lambda: worker.sys.enable_secrets_engine("kv", path=f"kv-{cluster}"),
        "a policy outside tenantctl-*": lambda: worker.sys.create_or_update_acl_policy(
            f"admin-{cluster}", 'path "*" { capabilities = ["sudo"] }'
        ),
        "its own policy": lambda: worker.sys.create_or_update_acl_policy(WORKER_POLICY, 'path "*" {}'),
        "the policy listing": worker.sys.list_acl_policies,
        "a CA key": lambda: worker.read(f"pki/{cluster}/key/{keys[0]}"),
        "the key listing": lambda: worker.list(f"pki/{cluster}/keys"),
        "an exported CA": lambda: worker.secrets.pki.generate_root(
            "exported", common_name="x", mount_point=f"pki/{cluster}"
        ),
        "auth methods": lambda: worker.sys.enable_auth_method("userpass", path=f"up-{cluster}"),
        "the audit devices": worker.sys.list_enabled_audit_devices,
    }
    allowed = []
    for what, call in refused.items():
        try:
            call()
        except hvac.exceptions.Forbidden:
            continue
        allowed.append(what)
    assert allowed == []


def test_openbao_audits_every_request(stack: LocalStack) -> None:
    audit_log = stack.layout.openbao_audit_log
    marker = f"audit-probe-{uuid.uuid4().hex[:8]}"
    with pytest.raises(hvac.exceptions.Forbidden):
        worker_client(stack).sys.enable_secrets_engine("kv", path=marker)

    def recorded() -> list[dict[str, object]]:
        lines = audit_log.read_text().splitlines() if audit_log.exists() else []
        return [json.loads(line) for line in lines if marker in line]

    assert wait_until(lambda: len(recorded()) >= 2, 10)  # the request and its (denied) response
    kinds = {entry["type"] for entry in recorded()}
    assert kinds == {"request", "response"}
    assert stat.S_IMODE(audit_log.stat().st_mode) == 0o600
    secret_id = stack.endpoints().vault_secret_id
    assert secret_id is not None and secret_id.get_secret_value() not in audit_log.read_text()  # HMAC'd


def test_state_files_are_the_owners_only(stack: LocalStack) -> None:
    time.sleep(0.5)  # the emulator saves its state file debounced: let it create what it creates
    stack.up()
    loose = []
    for folder, dirs, files in os.walk(stack.state_dir):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            wanted = 0o700 if path.is_dir() else 0o600
            if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & ~wanted:
                loose.append(f"{path.relative_to(stack.state_dir)} {oct(stat.S_IMODE(path.stat().st_mode))}")
    assert loose == []
    assert stat.S_IMODE(stack.state_dir.stat().st_mode) == 0o700
    for must in (
        stack.layout.temporal_db,
        stack.layout.kubeconfig,
        stack.layout.openbao_init_file,
        stack.layout.openbao_worker_identity,
        stack.layout.openbao_audit_log,
        stack.layout.env_file,
        stack.log_file("openbao"),
    ):
        assert stat.S_IMODE(must.stat().st_mode) == 0o600, must


def test_a_cluster_token_issues_from_its_own_clusters_mount_only(stack: LocalStack) -> None:
    worker = worker_client(stack)
    a, b = (f"wid{uuid.uuid4().hex[:6]}" for _ in range(2))
    issuers = {}
    for cluster in (a, b):  # as the worker's pki activities set a cluster up (policy: policy_document)
        mount = f"pki/{cluster}"
        worker.sys.enable_secrets_engine("pki", path=mount)
        worker.secrets.pki.generate_root("internal", common_name=f"{cluster} CA", mount_point=mount)
        worker.write_data(f"{mount}/roles/probe", data={"allow_any_name": True, "ttl": "1h"})
        worker.sys.create_or_update_acl_policy(f"tenantctl-{cluster}", policy_document(mount))
        issuers[cluster] = worker.list(f"{mount}/issuers")["data"]["keys"][0]
    created = worker.write_data(
        f"auth/token/create/{CLUSTER_TOKEN_ROLE}", data={"policies": [f"tenantctl-{a}"], "ttl": CLUSTER_TOKEN_TTL}
    )["auth"]
    assert created["policies"] == [f"tenantctl-{a}"] and not created["renewable"]
    token_a = hvac.Client(url=stack.endpoints().vault_addr, token=created["client_token"])
    issued = token_a.write_data(f"pki/{a}/issuer/{issuers[a]}/issue/probe", data={"common_name": "a.example"})
    assert "BEGIN CERTIFICATE" in issued["data"]["certificate"]
    with pytest.raises(hvac.exceptions.Forbidden):
        token_a.write_data(f"pki/{b}/issuer/{issuers[b]}/issue/probe", data={"common_name": "b.example"})
    with pytest.raises(hvac.exceptions.Forbidden):  # nor can it mint tokens of its own
        token_a.write_data(f"auth/token/create/{CLUSTER_TOKEN_ROLE}", data={"policies": [f"tenantctl-{b}"]})
    for policy in (WORKER_POLICY, "default", "root"):  # the role mints tenantctl-<id> tokens only
        with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)):
            worker.write_data(f"auth/token/create/{CLUSTER_TOKEN_ROLE}", data={"policies": [policy]})
    token_a.auth.token.revoke_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        token_a.write_data(f"pki/{a}/issuer/{issuers[a]}/issue/probe", data={"common_name": "a.example"})


def test_an_attempt_issues_its_clusters_certificates_with_one_cluster_token(stack: LocalStack) -> None:
    """As the worker runs pki.ensure_certificates: its AppRole, the cluster token role, the stack's
    host API for the key pairs. One child token serves the whole attempt and is revoked at its end
    (a token per certificate cost two more Vault calls each); every issue carries the cluster's
    policy only."""
    spec = small_kvm(id=f"wid{uuid.uuid4().hex[:6]}")
    with k8s_config.new_client_from_config(config_file=str(stack.kubeconfig)) as api:
        core = k8s.CoreV1Api(api)
        pki = VaultPki(
            worker_client(stack),
            Providers([KvmProvider(api)]),
            cluster_token_role=CLUSTER_TOKEN_ROLE,
        )
        pki.ensure_ca(CaInput(spec=spec))
        pki.ensure_roles(ClusterRef(spec=spec))
        pki.ensure_policy(ClusterRef(spec=spec))
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=kvm_namespace(spec.id))))
        audit_log = stack.layout.openbao_audit_log
        before = len(audit_log.read_text().splitlines())
        requests = certificate_requests(spec)
        result = pki.ensure_certificates(
            EnsureCertificatesInput(spec=spec, requests=requests, renew_before=spec.certificates.renew_before)
        )
    assert len(result.issued) == len(requests) > 1
    lines = audit_log.read_text().splitlines()[before:]
    entries = [json.loads(line) for line in lines]
    seen = [(e["request"]["path"], (e.get("auth") or {}).get("policies")) for e in entries if e["type"] == "request"]
    made = [path for path, _ in seen if path == f"auth/token/create/{CLUSTER_TOKEN_ROLE}"]
    issued_with = [policies for path, policies in seen if path.startswith(f"pki/{spec.id}/") and "/issue/" in path]
    assert len(made) == 1
    assert len(issued_with) == len(requests)
    assert all(policies == [vault_policy_name(spec.id)] for policies in issued_with)
    assert [path for path, _ in seen if path == "auth/token/revoke-self"] == ["auth/token/revoke-self"]
