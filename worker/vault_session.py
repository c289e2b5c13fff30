"""The requests session under the worker's hvac client."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

import requests
from requests.utils import get_netrc_auth


class _NoNetrcEntry:
    """Stands for "``~/.netrc`` has no entry for this server", so requests does not look again (any
    callable is an auth to requests; this one changes nothing)."""

    def __call__(self, request: Any) -> Any:
        return request


NO_NETRC_ENTRY: Final = _NoNetrcEntry()


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: what proxies, ``NO_PROXY`` and netrc entries are chosen by."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class EnvironmentOnceSession(requests.Session):
    """A session that reads the environment (proxies, ``NO_PROXY``, the CA bundle variables, netrc)
    once per server instead of on every request.

    requests walks ``os.environ`` and looks for ``~/.netrc`` for each call: a few per cent of a busy
    worker's CPU, for settings that do not change while the worker runs. What it finds is what every
    later request to that server gets, as before.
    """

    def __init__(self) -> None:
        super().__init__()
        self._settings: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._netrc: dict[str, Any] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        key = (origin(str(url)), tuple(sorted((proxies or {}).items())), stream, verify, cert)
        merged = self._settings.get(key)
        if merged is None:
            merged = self._settings[key] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        return {**merged, "proxies": dict(merged["proxies"])}

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if self.trust_env and not request.auth and not self.auth:
            server = origin(str(request.url))
            if server not in self._netrc:
                self._netrc[server] = get_netrc_auth(str(request.url)) or NO_NETRC_ENTRY
            request.auth = self._netrc[server]
        return super().prepare_request(request)
