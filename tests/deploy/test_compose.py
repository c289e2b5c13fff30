"""docker-compose.yml holds together without a Docker engine (none here): services, dependencies,
volumes, the emulator's command line, and the worker's environment as the settings read it.

tests/unit/test_settings.py checks that every TENANTCTL_ name in it is a setting; this loads the file
as compose does (interpolation included) and checks what it wires.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from config.settings import ENV_PREFIX, Settings
from devstack.kube_emulator.__main__ import argument_parser
from tests.deploy.vault_helpers import ROOT

COMPOSE = ROOT / "docker-compose.yml"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?([-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (``$$`` is a literal dollar)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if op == "?":
            raise AssertionError(f"compose would refuse to start: {name} unset ({arg})")
        return arg if op == "-" else ""

    return INTERPOLATION.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def loaded(env: dict[str, str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        interpolate(COMPOSE.read_text(), {"TENANTCTL_VAULT_TOKEN": "t"} if env is None else env)
    )
    return data


def test_required_variables_are_refused_when_missing() -> None:
    with pytest.raises(AssertionError, match="TENANTCTL_VAULT_TOKEN unset"):
        loaded({})


def test_services_dependencies_and_volumes_are_consistent() -> None:
    data = loaded()
    services: dict[str, Any] = data["services"]
    volumes = set(data.get("volumes") or {})
    for name, service in services.items():
        assert ("image" in service) != ("build" in service), f"{name}: exactly one of image/build"
        depends = service.get("depends_on") or {}
        for target, how in depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends):
            assert target in services, f"{name} depends on unknown service {target}"
            condition = (how or {}).get("condition", "service_started")
            assert condition in CONDITIONS, f"{name}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: no healthcheck"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name}: volume {source} is not declared"
        for port in service.get("ports") or []:
            assert re.fullmatch(r"\d+:\d+", port), f"{name}: port {port}"


def test_the_emulator_command_is_one_it_accepts_and_the_worker_reaches_it() -> None:
    services = loaded()["services"]
    command = services["host-api"]["command"]
    assert command[:3] == ["python", "-m", "devstack.kube_emulator"]
    args = argument_parser().parse_args(command[3:])  # an unknown flag exits here
    env = services["worker"]["environment"]
    assert env["TENANTCTL_KUBECONFIG"] == args.kubeconfig  # the kubeconfig the emulator writes
    advertised = urlsplit(args.advertise_url)
    assert (advertised.hostname, advertised.port) == ("host-api", args.port)
    assert urlsplit(env["TENANTCTL_TENANT_API_URL_TEMPLATE"]).netloc == advertised.netloc
    # both share the state volume, the worker read-only; the image's user can write its mount point
    writer = {m.split(":")[1] for m in services["host-api"]["volumes"]}
    reader = set(services["worker"]["volumes"])
    assert args.kubeconfig.rsplit("/", 1)[0] in writer and "state:/state:ro" in reader
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"install -d -o 10001 -g 10001 /state\b", dockerfile), (
        "a fresh named volume takes the owner of the image's directory: the Dockerfile must create /state "
        "for the non-root user, or the emulator cannot write its kubeconfig and state file"
    )


def test_the_worker_environment_parses_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = loaded()["services"]
    env: dict[str, str] = services["worker"]["environment"]
    assert env == services["cli"]["environment"], "the CLI and the worker must see the same stack"
    for name in [n for n in __import__("os").environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields
    assert settings.temporal_address == "temporal:7233" and settings.vault_addr == "http://openbao:8200"
    assert settings.vault_token is not None and settings.vault_token.get_secret_value() == "t"
    assert settings.aws_endpoint_url == "http://moto:5000"
    temporal = services["temporal"]
    assert settings.temporal_address.endswith(":" + temporal["ports"][0].split(":")[1])
    openbao = services["openbao"]
    assert openbao["environment"]["BAO_DEV_ROOT_TOKEN_ID"] == "t"  # the worker's token is the server's
    assert any("8200" in part for part in openbao["command"])
