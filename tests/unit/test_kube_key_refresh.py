"""The host client's credential refresh runs once in a while, not on every request."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from config.settings import Settings
from worker.clients import kube_api_client, throttle_key_refresh

KUBECONFIG = (
    "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
    "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
    "users: [{name: u, user: {token: secret-token}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
)


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return path


def test_the_loaders_refresh_runs_once_per_interval_and_still_sets_the_token(tmp_path: Path) -> None:
    """The loader's refresh sets the token from the kubeconfig again: a token overwritten between
    requests shows whether it ran."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig(tmp_path)), client_configuration=configuration)  # type: ignore[no-untyped-call]
    assert configuration.refresh_api_key_hook is not None  # what every request would run
    now = [100.0]
    throttle_key_refresh(configuration, interval=5.0, clock=lambda: now[0])

    def token_after_a_request() -> str:
        value: str = configuration.auth_settings()["BearerToken"]["value"]
        configuration.api_key["BearerToken"] = "stale"  # a refresh puts the kubeconfig's token back
        return value

    assert token_after_a_request() == "Bearer secret-token"
    for when in (100.0, 102.0, 104.9):
        now[0] = when
        assert token_after_a_request() == "stale"  # not refreshed within the interval
    now[0] = 105.0
    assert token_after_a_request() == "Bearer secret-token"
    assert token_after_a_request() == "stale"
    # the loader's refresh installs its own hook again each time it runs: the throttle stays in front
    hook = configuration.refresh_api_key_hook
    assert hook is not None and hook.__qualname__ == "throttle_key_refresh.<locals>.throttled"


def test_the_worker_host_client_is_built_with_the_throttled_refresh(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, vault_token="unused", kubeconfig=kubeconfig(tmp_path))
    api = kube_api_client(settings)
    hook = api.configuration.refresh_api_key_hook
    assert hook is not None and hook.__qualname__ == "throttle_key_refresh.<locals>.throttled"
    assert api.configuration.auth_settings()["BearerToken"]["value"] == "Bearer secret-token"


def test_a_configuration_without_a_loader_hook_is_left_alone() -> None:
    configuration = k8s.Configuration()
    throttle_key_refresh(configuration)
    assert configuration.refresh_api_key_hook is None
