"""Everything the worker and the CLI need to reach their backends, from the environment.

Precedence (highest first): ``TENANTCTL_*`` environment variables, then the ``stack.env`` file
that ``tenantctl dev up`` writes into the state folder (so a local stack needs no flags), then the
defaults below, which match the local stack's default ports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TENANTCTL_"
STACK_ENV_FILE = "stack.env"
DEFAULT_STATE_DIR = Path(".tenantctl")


class Settings(BaseSettings):
    """One table of settings; the README documents each field as ``TENANTCTL_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", env_file_encoding="utf-8", validate_default=True
    )

    # --- Temporal -------------------------------------------------------------------------------
    temporal_address: str = Field(default="127.0.0.1:7233", description="Temporal frontend host:port")
    temporal_namespace: str = Field(default="default", description="Temporal namespace")
    temporal_task_queue: str = Field(default="tenantctl", description="task queue of workflows and activities")
    temporal_tls: bool = Field(default=False, description="connect to Temporal over TLS")
    temporal_tls_ca_path: Path | None = Field(default=None, description="CA bundle for Temporal's server cert")
    temporal_tls_cert_path: Path | None = Field(default=None, description="client certificate (mTLS)")
    temporal_tls_key_path: Path | None = Field(default=None, description="client private key (mTLS)")
    temporal_api_key: SecretStr | None = Field(default=None, description="API key (Temporal Cloud)")
    temporal_ui_url: str = Field(default="http://127.0.0.1:8233", description="base URL of the Temporal UI")

    # --- Vault / OpenBao ------------------------------------------------------------------------
    vault_addr: str = Field(default="http://127.0.0.1:8200", description="Vault or OpenBao address")
    vault_token: SecretStr | None = Field(default=None, description="Vault token (or use AppRole)")
    vault_role_id: str | None = Field(default=None, description="AppRole role id")
    vault_secret_id: SecretStr | None = Field(default=None, description="AppRole secret id")
    vault_approle_mount: str = Field(default="approle", description="mount path of the AppRole auth method")
    vault_namespace: str | None = Field(default=None, description="Vault Enterprise namespace")
    vault_ca_cert: Path | None = Field(default=None, description="CA bundle for Vault's TLS certificate")
    vault_pki_mount_prefix: str = Field(default="pki", description="cluster PKI mounts are <prefix>/<id>")

    # --- host Kubernetes cluster ----------------------------------------------------------------
    kubeconfig: Path | None = Field(default=None, description="kubeconfig of the host cluster")
    kube_context: str | None = Field(default=None, description="context in the kubeconfig")
    kube_in_cluster: bool = Field(default=False, description="use the pod's service account instead")
    kube_simulate_tenant_nodes: bool = Field(
        default=False,
        description="annotate node Deployments so the local host API emulator registers tenant Nodes "
        "(local stack only; never on a real host cluster)",
    )
    tenant_api_url_template: str | None = Field(
        default=None,
        description="URL of a tenant's own API, '{cluster_id}' and '{base_domain}' filled in; "
        "default https://api.{cluster_id}.{base_domain}",
    )

    # --- AWS -----------------------------------------------------------------------------------
    aws_region: str = Field(default="eu-central-1", description="default AWS region")
    aws_endpoint_url: str | None = Field(default=None, description="endpoint override (moto on the local stack)")
    aws_access_key_id: str | None = Field(default=None, description="else boto3's default credential chain")
    aws_secret_access_key: SecretStr | None = Field(default=None, description="else the default chain")

    # --- per-call retries and rate limits (worker/retries.py) -----------------------------------
    call_retries: int = Field(
        default=5, ge=0, le=10, description="retries of one backend call on 429/5xx/connection errors (0: none)"
    )
    # At 50/s the host API limit alone stretched 10 creates at once from 11 s to 21 s, and 1,000
    # clusters checked every 5 min (3.3 checks/s) need more than that; an apiserver (priority and
    # fairness) or Vault (quotas) that wants less answers 429, which every call honours (Retry-After).
    kube_api_qps: float = Field(
        default=200.0, ge=0, description="requests/s a worker sends the host Kubernetes API (0: no limit)"
    )
    vault_qps: float = Field(default=200.0, ge=0, description="requests/s a worker sends Vault (0: no limit)")
    aws_retry_mode: Literal["standard", "adaptive"] = Field(
        default="standard", description="botocore retry mode; adaptive also slows a worker down while AWS throttles it"
    )

    # --- worker ---------------------------------------------------------------------------------
    max_concurrent_activities: int = Field(default=50, ge=1, description="activity slots of a worker")
    activity_threads: int = Field(default=32, ge=1, description="thread pool for blocking activities")
    sticky_queue_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        description="how long a crashed worker's cached workflows wait before another takes them "
        "(Temporal's default is 10 s; shorter: faster takeover, but a stalled worker's workflows replay elsewhere)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="log level")
    state_dir: Path = Field(default=DEFAULT_STATE_DIR, description="local stack state (endpoints, data)")

    # --- running in a cluster (deploy/) ------------------------------------------------------------
    health_address: str | None = Field(
        default=None, description="host:port of the worker's /livez and /readyz (probes); unset: not served"
    )
    metrics_address: str | None = Field(
        default=None, description="host:port of the worker's Prometheus /metrics; unset: not served"
    )
    metrics_refresh_seconds: float = Field(
        default=30.0, gt=0, description="how often the worker reads the fleet (clusters, schedules) for /metrics"
    )
    vault_kubernetes_role: str | None = Field(
        default=None, description="Vault Kubernetes auth role (log in with the pod's service account token)"
    )
    vault_kubernetes_mount: str = Field(default="kubernetes", description="mount path of the Kubernetes auth method")
    vault_kubernetes_token_path: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="service account token file presented to Vault's Kubernetes auth",
    )
    vault_cluster_token_role: str | None = Field(
        default=None,
        description="Vault token role: issue each cluster's certificates with a child token of its policy only",
    )

    @model_validator(mode="after")
    def _auth_complete(self) -> Settings:
        if (self.vault_role_id is None) != (self.vault_secret_id is None):
            raise ValueError("vault_role_id and vault_secret_id go together (AppRole login)")
        if (self.temporal_tls_cert_path is None) != (self.temporal_tls_key_path is None):
            raise ValueError("temporal_tls_cert_path and temporal_tls_key_path go together (mTLS)")
        return self

    def tenant_api_url(self, cluster_id: str, base_domain: str) -> str:
        template = self.tenant_api_url_template or "https://api.{cluster_id}.{base_domain}"
        return template.format(cluster_id=cluster_id, base_domain=base_domain)

    def workflow_ui_url(self, workflow_id: str, run_id: str | None = None) -> str:
        from urllib.parse import quote

        path = f"/namespaces/{quote(self.temporal_namespace)}/workflows/{quote(workflow_id, safe='')}"
        return self.temporal_ui_url.rstrip("/") + path + (f"/{run_id}/history" if run_id else "")


def state_dir_from_env() -> Path:
    return Path(os.environ.get(f"{ENV_PREFIX}STATE_DIR", str(DEFAULT_STATE_DIR)))


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, falling back on the local stack's ``stack.env`` if present."""
    env_file = state_dir_from_env() / STACK_ENV_FILE
    return Settings(_env_file=env_file if env_file.is_file() else None, **overrides)
