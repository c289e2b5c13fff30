"""Settings: environment variables, the local stack's env file, and the compose file's wiring."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from config.settings import ENV_PREFIX, STACK_ENV_FILE, Settings, load_settings
from workflows.search_attributes import ALL_KEYS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_tenantctl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read settings from scratch: nothing a developer's shell or an earlier test set counts."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_defaults_match_the_local_stack_ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TENANTCTL_STATE_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.vault_addr == "http://127.0.0.1:8200"
    assert settings.temporal_task_queue == "tenantctl"
    assert settings.vault_token is None


def test_env_overrides_the_stack_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / STACK_ENV_FILE).write_text(
        "TENANTCTL_TEMPORAL_ADDRESS=127.0.0.1:17233\nTENANTCTL_VAULT_TOKEN=from-file\nTENANTCTL_AWS_REGION=us-east-1\n"
    )
    monkeypatch.setenv("TENANTCTL_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TENANTCTL_AWS_REGION", "eu-west-1")
    settings = load_settings()
    assert settings.temporal_address == "127.0.0.1:17233"
    assert settings.vault_token is not None and settings.vault_token.get_secret_value() == "from-file"
    assert settings.aws_region == "eu-west-1"
    # secrets never show in reprs or logs
    assert "from-file" not in repr(settings)


def test_incomplete_credentials_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTCTL_VAULT_ROLE_ID", "role")
    with pytest.raises(ValidationError, match="vault_role_id and vault_secret_id go together"):
        Settings()


def test_ui_link_escapes_the_workflow_id() -> None:
    settings = Settings(temporal_ui_url="http://ui:8233/")
    assert settings.workflow_ui_url("cluster/acme-prod") == (
        "http://ui:8233/namespaces/default/workflows/cluster%2Facme-prod"
    )


def test_tenant_api_url_template() -> None:
    assert Settings().tenant_api_url("acme", "k8s.example.com") == "https://api.acme.k8s.example.com"
    local = Settings(tenant_api_url_template="http://127.0.0.1:6443/tenants/{cluster_id}")
    assert local.tenant_api_url("acme", "k8s.example.com") == "http://127.0.0.1:6443/tenants/acme"


def compose() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_uses_only_settings_variables() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    names = set(re.findall(r"\b(TENANTCTL_[A-Z_]+)\b", text))
    assert names, "compose wires no TENANTCTL_ variables"
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert names <= fields, f"unknown settings in docker-compose.yml: {sorted(names - fields)}"


def test_compose_services_and_search_attributes() -> None:
    data = compose()
    services = data["services"]
    assert isinstance(services, dict)
    assert {"postgresql", "temporal", "temporal-ui", "openbao", "moto", "worker"} <= set(services)
    assert services["worker"]["build"] == "."
    env = services["worker"]["environment"]
    assert env["TENANTCTL_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["TENANTCTL_VAULT_ADDR"] == "http://openbao:8200"
    assert env["TENANTCTL_AWS_ENDPOINT_URL"] == "http://moto:5000"
    registered = services["temporal-search-attributes"]["command"][0]
    for key in ALL_KEYS:
        assert key.name in registered
    assert (ROOT / "Dockerfile").is_file()


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f"{ENV_PREFIX}{n.upper()}" for n in Settings.model_fields if f"{ENV_PREFIX}{n.upper()}" not in readme]
    assert not missing, f"README settings table lacks {missing}"
