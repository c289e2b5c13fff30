"""The worker's Vault policy on a real OpenBao: tokens and logins of that policy, for the tests."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import hvac
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ROOT = Path(__file__).resolve().parents[2]
WORKER_POLICY_FILE = ROOT / "deploy" / "vault" / "tenantctl-worker.hcl"
AUDIT_CONFIG = ROOT / "deploy" / "vault" / "openbao-audit.hcl"
WORKER_POLICY = "tenantctl_worker"
SERVICE_ACCOUNT_SUBJECT = "system:serviceaccount:tenantctl:tenantctl-worker"


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


class ServiceAccountIssuer:
    """Signs service-account-shaped JWTs (RS256), as a cluster's token issuer does.

    OpenBao's ``kubernetes`` auth method checks tokens with the cluster's TokenReview API, which the
    host API emulator does not serve; its ``jwt`` method checks the same tokens against the issuer's
    public key and takes the same login request (``role`` + ``jwt`` at ``auth/<mount>/login``).
    """

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def token(self, lifetime: float, subject: str = SERVICE_ACCOUNT_SUBJECT) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT"}
        claims = {"iss": "https://kubernetes.default.svc", "sub": subject, "aud": ["vault"], "iat": now, "nbf": now}
        claims["exp"] = now + int(lifetime)
        claims["jti"] = uuid.uuid4().hex
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"


def service_account_login(root: hvac.Client, issuer: ServiceAccountIssuer, token_ttl: str, token_max_ttl: str) -> str:
    """A fresh mount that logs service account tokens in with the worker policy; its path."""
    mount = f"kubernetes-{uuid.uuid4().hex[:8]}"
    root.sys.enable_auth_method("jwt", path=mount)
    root.write(f"auth/{mount}/config", jwt_validation_pubkeys=[issuer.public_pem()])
    root.write(
        f"auth/{mount}/role/tenantctl-worker",
        role_type="jwt",
        user_claim="sub",
        bound_subject=SERVICE_ACCOUNT_SUBJECT,
        bound_audiences=["vault"],
        token_policies=WORKER_POLICY,
        token_no_default_policy=True,
        token_ttl=token_ttl,
        token_max_ttl=token_max_ttl,
    )
    return mount


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
