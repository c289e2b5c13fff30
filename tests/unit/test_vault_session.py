"""The Vault session reads proxies, CA bundle and netrc once per server, with requests' own results."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from worker.vault_session import EnvironmentOnceSession

VAULT = "https://vault.example:8200"


def test_environment_settings_are_requests_own_and_read_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "bypassed.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    session = EnvironmentOnceSession()
    for url in (f"{VAULT}/v1/sys/health", "https://bypassed.example/v1/x"):
        expected = requests.Session().merge_environment_settings(url, {}, None, True, None)
        assert session.merge_environment_settings(url, {}, None, True, None) == expected
    assert session.merge_environment_settings(f"{VAULT}/v1/a", {}, None, True, None)["verify"] == str(bundle)
    assert session.merge_environment_settings(f"{VAULT}/v1/a", {}, None, True, None)["proxies"]["https"] == (
        "http://proxy.example:3128"
    )

    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere.example:3128")  # read once: the first answer stays
    assert session.merge_environment_settings(f"{VAULT}/v1/b", {}, None, True, None)["proxies"]["https"] == (
        "http://proxy.example:3128"
    )
    # The request's own settings still win over the environment's.
    assert session.merge_environment_settings(f"{VAULT}/v1/b", {}, None, "/other.pem", None)["verify"] == "/other.pem"


def test_a_netrc_entry_is_used_and_its_absence_remembered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine vault.example login robot password example\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    session = EnvironmentOnceSession()
    with_entry = session.prepare_request(requests.Request("GET", f"{VAULT}/v1/sys/health"))
    assert with_entry.headers["Authorization"].startswith("Basic ")
    without = session.prepare_request(requests.Request("GET", "https://other.example/v1/sys/health"))
    assert "Authorization" not in without.headers

    netrc.write_text("machine other.example login robot password example\n")  # looked at once per server
    assert "Authorization" not in session.prepare_request(requests.Request("GET", "https://other.example/")).headers
    token = requests.Request("GET", f"{VAULT}/v1/x", headers={"X-Vault-Token": "t"})
    assert session.prepare_request(token).headers["X-Vault-Token"] == "t"
