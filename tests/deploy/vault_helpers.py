"""The worker's Vault policy on a real OpenBao: tokens and logins of that policy, for the tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import hvac

ROOT = Path(__file__).resolve().parents[2]
WORKER_POLICY_FILE = ROOT / "deploy" / "vault" / "tenantctl-worker.hcl"
AUDIT_CONFIG = ROOT / "deploy" / "vault" / "openbao-audit.hcl"
WORKER_POLICY = "tenantctl_worker"


def install_worker_policy(root: hvac.Client) -> None:
    root.sys.create_or_update_policy(WORKER_POLICY, WORKER_POLICY_FILE.read_text())


def worker_token(root: hvac.Client, ttl: str = "1h", **options: object) -> str:
    created = root.auth.token.create(policies=[WORKER_POLICY], no_default_policy=True, ttl=ttl, **options)
    return str(created["auth"]["client_token"])


def approle(root: hvac.Client, token_ttl: str, token_max_ttl: str) -> tuple[str, str, str]:
    """A fresh AppRole mount and role of the worker policy: (mount, role id, secret id)."""
    mount = f"approle-{uuid.uuid4().hex[:8]}"
    root.sys.enable_auth_method("approle", path=mount)
    root.write(
        f"auth/{mount}/role/worker",
        token_policies=WORKER_POLICY,
        token_no_default_policy=True,
        token_ttl=token_ttl,
        token_max_ttl=token_max_ttl,
    )
    role_id = root.read(f"auth/{mount}/role/worker/role-id")["data"]["role_id"]
    secret_id = root.write(f"auth/{mount}/role/worker/secret-id")["data"]["secret_id"]
    return mount, role_id, secret_id
