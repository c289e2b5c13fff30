"""Backend clients built from settings: Temporal, Vault/OpenBao, host Kubernetes, AWS.

Only the worker (and the CLI, for Temporal) builds clients; activity classes receive them.
Each backend library is imported by the function that builds its client: the CLI imports this module
for Temporal alone and must not pay for boto3, hvac and kubernetes (about a second of start-up).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config.settings import Settings

if TYPE_CHECKING:
    import boto3
    import hvac
    from botocore.config import Config as BotoConfig
    from kubernetes import client as k8s
    from temporalio.client import Client
    from temporalio.service import ConnectConfig

    from models.spec import ClusterSpec
    from worker.retries import CallRetries, RateLimit

log = logging.getLogger(__name__)


async def connect_temporal(settings: Settings) -> Client:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    config = temporal_connect_config(settings)
    return await Client.connect(
        config.target_host,
        namespace=settings.temporal_namespace,
        tls=config.tls,
        api_key=config.api_key,
        data_converter=pydantic_data_converter,
    )


def temporal_connect_config(settings: Settings) -> ConnectConfig:
    """Where and how to reach Temporal (TLS, API key): the full client's and the bare service's."""
    from temporalio.service import ConnectConfig, TLSConfig

    tls: TLSConfig | bool = False
    if settings.temporal_tls:
        tls = TLSConfig(
            server_root_ca_cert=_read(settings.temporal_tls_ca_path),
            client_cert=_read(settings.temporal_tls_cert_path),
            client_private_key=_read(settings.temporal_tls_key_path),
        )
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return ConnectConfig(target_host=settings.temporal_address, tls=tls, api_key=api_key)


def vault_client(settings: Settings) -> hvac.Client:
    """An authenticated hvac client whose calls ride out transient errors (worker/retries.py) and whose
    token is renewed, or re-acquired, for as long as it runs (worker/vault_auth.py: a token,
    Kubernetes auth or AppRole)."""
    from worker.retries import RateLimit, vault_session
    from worker.vault_auth import vault_client_from

    session = vault_session(
        call_retries(settings), RateLimit(settings.vault_qps), pool_size=max(settings.activity_threads, 10)
    )
    return vault_client_from(settings, session)


def kube_api_client(settings: Settings) -> k8s.ApiClient:
    """A client of the host cluster: in-cluster service account, or a kubeconfig."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from worker.retries import RateLimit

    configuration = k8s.Configuration()
    if settings.kube_in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
            context=settings.kube_context,
            client_configuration=configuration,
        )
    throttle_key_refresh(configuration)
    # The blocking client is shared by the activity thread pool: size its connection pool to match.
    configuration.connection_pool_maxsize = max(settings.activity_threads, 4)
    return kube_client(configuration, call_retries(settings), RateLimit(settings.kube_api_qps))


KEY_REFRESH_INTERVAL_SECONDS = 5.0
"""How often the host client's credentials are looked at again. The config loaders renew a token
well ahead of its expiry (a kubeconfig's 5 minutes before it, the in-cluster one every minute)."""


def throttle_key_refresh(
    configuration: Any, interval: float = KEY_REFRESH_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
) -> None:
    """Run the config loader's credential refresh at most once per ``interval``, not on every call.

    A loaded kubeconfig or in-cluster config installs a hook that every request runs: it checks the
    token's expiry and sets the host, certificates and token on the configuration again (the host's
    setter reads the proxy environment each time), about 1.5 % of a busy worker's CPU.
    """
    refresh: Callable[[Any], None] | None = configuration.refresh_api_key_hook
    if refresh is None:
        return
    due = -math.inf

    def throttled(config: Any) -> None:
        nonlocal refresh, due
        now = clock()
        if now < due or refresh is None:
            return
        due = now + interval
        refresh(config)
        # the loader's refresh installs its own hook again each time: keep this one in front of it
        if config.refresh_api_key_hook is not throttled:
            refresh, config.refresh_api_key_hook = config.refresh_api_key_hook, throttled

    configuration.refresh_api_key_hook = throttled


def call_retries(settings: Settings) -> CallRetries:
    from worker.retries import CallRetries

    return CallRetries(attempts=settings.call_retries)


def kube_client(configuration: Any, policy: CallRetries, limit: RateLimit | None = None) -> k8s.ApiClient:
    """An ``ApiClient`` of the host API with per-call retries (worker/retries.py) and a rate limit."""
    from kubernetes import client as k8s

    from worker.retries import KUBERNETES_METHODS, call_retry, install_kubernetes_retries

    configuration.retries = call_retry(policy, KUBERNETES_METHODS)
    return install_kubernetes_retries(k8s.ApiClient(configuration), None, limit)


def with_tenant_api_retries(
    factory: Callable[[ClusterSpec], k8s.ApiClient], settings: Settings
) -> Callable[[ClusterSpec], k8s.ApiClient]:
    """Tenant API clients (made per call by the activities' factory) with per-call retries. No shared
    rate limit: every tenant cluster is its own API server."""
    from worker.retries import tenant_api_with_retries

    return tenant_api_with_retries(factory, call_retries(settings))


def _boto_config(**options: Any) -> BotoConfig:
    from botocore.config import Config as BotoConfig

    return BotoConfig(**options)


@dataclass(frozen=True)
class AwsClients:
    """boto3 clients, one per service and region, made once: sessions are not thread-safe, the
    clients they make are (the activity thread pool shares them)."""

    session: boto3.Session
    endpoint_url: str | None
    config: BotoConfig = field(default_factory=_boto_config)
    _made: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, service: str, region: str | None = None) -> Any:
        region = region or self.session.region_name
        with self._lock:
            made = self._made.get((service, region))
            if made is None:
                made = self.session.client(  # type: ignore[call-overload]
                    service, region_name=region, endpoint_url=self.endpoint_url, config=self.config
                )
                self._made[(service, region)] = made
            return made


def aws_clients(settings: Settings) -> AwsClients:
    import boto3

    from worker.retries import botocore_retries

    session = boto3.Session(
        region_name=settings.aws_region,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=(
            settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
        ),
    )
    # Throttling and 5xx are retried by botocore first (jittered backoff; adaptive mode also slows
    # this client down while AWS throttles it), then by Temporal's activity retries; the pool matches
    # the activity threads that share each client.
    config = _boto_config(
        retries=botocore_retries(settings.aws_retry_mode, call_retries(settings)),
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=max(settings.activity_threads, 10),
    )
    return AwsClients(session=session, endpoint_url=settings.aws_endpoint_url, config=config)


def _read(path: Any) -> bytes | None:
    return path.read_bytes() if path else None
