"""The local stack worker's own Vault identity: the least-privilege policy of deploy/vault, not root.

On every ``up``, with the root token (kept in ``openbao/init.json`` for this setup and for
inspection only), ``ensure_worker_identity`` converges OpenBao to what deploy/vault/setup.sh sets up
in production: policy ``tenantctl_worker`` from deploy/vault/tenantctl-worker.hcl, the AppRole auth
method, and role ``tenantctl-worker`` issuing tokens of that policy alone (no ``default`` policy,
TTL 1 h, max 24 h). The role id and one secret id are kept in ``openbao/worker-approle.json``
(0600); a recorded secret id that OpenBao still knows is reused, so a repeated ``up`` hands the
worker the same credentials (and keeps it running).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import hvac
import hvac.exceptions
import requests

from devstack.files import write_private
from devstack.services import PROJECT_ROOT

log = logging.getLogger("tenantctl.devstack")

WORKER_POLICY: Final = "tenantctl_worker"
WORKER_POLICY_FILE: Final = PROJECT_ROOT / "deploy" / "vault" / "tenantctl-worker.hcl"
APPROLE_MOUNT: Final = "approle"
WORKER_ROLE: Final = "tenantctl-worker"
WORKER_ROLE_SETTINGS: Final[dict[str, Any]] = {
    "token_policies": [WORKER_POLICY],
    "token_no_default_policy": True,
    "token_ttl": "1h",
    "token_max_ttl": "24h",
    "secret_id_ttl": "0",
}
CLUSTER_TOKEN_ROLE: Final = "tenantctl-cluster"
"""Token role for per-cluster child tokens: policies tenantctl-<id> only (deploy/vault/setup.sh)."""
CLUSTER_TOKEN_ROLE_SETTINGS: Final[dict[str, Any]] = {
    "allowed_policies_glob": ["tenantctl-*"],
    "disallowed_policies": [WORKER_POLICY, "root"],
    "token_no_default_policy": True,
    "orphan": False,
    "renewable": False,
    "token_explicit_max_ttl": "15m",
}


@dataclass(frozen=True)
class WorkerIdentity:
    role_id: str
    secret_id: str


def root_client(addr: str, root_token: str) -> hvac.Client:
    session = requests.Session()
    session.trust_env = False  # loopback: never through an HTTP proxy from the environment
    return hvac.Client(url=addr, token=root_token, session=session, timeout=10)


def ensure_worker_identity(addr: str, root_token: str, identity_file: Path) -> WorkerIdentity:
    """Policy, AppRole and role as deploy/vault describes them; the worker's credentials."""
    client = root_client(addr, root_token)
    policy = WORKER_POLICY_FILE.read_text()
    try:
        current = str(client.sys.read_policy(WORKER_POLICY)["data"]["rules"])
    except hvac.exceptions.InvalidPath:
        current = None
    if current != policy:
        client.sys.create_or_update_policy(WORKER_POLICY, policy)
        log.info("wrote Vault policy %s from %s", WORKER_POLICY, WORKER_POLICY_FILE)
    if f"{APPROLE_MOUNT}/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle", path=APPROLE_MOUNT)
    client.auth.approle.create_or_update_approle(WORKER_ROLE, mount_point=APPROLE_MOUNT, **WORKER_ROLE_SETTINGS)
    client.write_data(f"auth/token/roles/{CLUSTER_TOKEN_ROLE}", data=CLUSTER_TOKEN_ROLE_SETTINGS)
    role_id = str(client.auth.approle.read_role_id(WORKER_ROLE, mount_point=APPROLE_MOUNT)["data"]["role_id"])
    recorded = _recorded(identity_file)
    if recorded is not None and recorded.role_id == role_id and _secret_id_known(client, recorded.secret_id):
        return recorded
    secret_id = str(client.auth.approle.generate_secret_id(WORKER_ROLE, mount_point=APPROLE_MOUNT)["data"]["secret_id"])
    identity = WorkerIdentity(role_id, secret_id)
    write_private(identity_file, json.dumps({"role_id": role_id, "secret_id": secret_id}, indent=2))
    log.info("issued the worker's AppRole secret id (policy %s) into %s", WORKER_POLICY, identity_file)
    return identity


def recorded_identity(identity_file: Path) -> WorkerIdentity | None:
    """The credentials the last ``up`` handed the worker, if any (no call to OpenBao)."""
    return _recorded(identity_file)


def _recorded(identity_file: Path) -> WorkerIdentity | None:
    try:
        data = json.loads(identity_file.read_text())
        return WorkerIdentity(str(data["role_id"]), str(data["secret_id"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _secret_id_known(client: hvac.Client, secret_id: str) -> bool:
    try:
        answer = client.auth.approle.read_secret_id(WORKER_ROLE, secret_id, mount_point=APPROLE_MOUNT)
    except hvac.exceptions.InvalidPath:
        return False
    # an unknown secret id: 404, or 204 with no body (hvac then hands back the raw response)
    return isinstance(answer, dict) and bool(answer.get("data"))
