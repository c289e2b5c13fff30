"""The worker's own Vault identity: log in (AppRole or Kubernetes auth), keep the token alive.

A worker runs for weeks; its token has a TTL and usually a max TTL. ``VaultTokenKeeper``:

- renews the token (``auth/token/renew-self``) once ``RENEW_AT`` of its TTL has passed, from a
  background thread and, should that thread be late (a suspended process), before the next call;
- logs in again when renewal is refused (token revoked or expired, not renewable) or when the
  renewed TTL is capped short by the max TTL;
- and if a call is still answered 403 because the token itself is no longer valid (checked with
  ``lookup-self``, so a real permission denial stays an error), logs in again and repeats the call
  once: no activity fails on an expired token.

Kubernetes auth re-reads the service account token file at each login: projected tokens rotate.
A static token (``TENANTCTL_VAULT_TOKEN``, the local stack's setup) is renewed while renewable and
cannot be replaced; a root token has no TTL and needs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import hvac
import hvac.exceptions
from hvac.adapters import JSONAdapter

from config.settings import Settings

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

RENEW_AT: Final = 2 / 3
"""Renew once this share of the token's TTL has passed."""
RELOGIN_BELOW: Final = 1 / 3
"""Log in again when a renewal grants less than this share of the TTL the last login granted."""
MIN_CHECK_SECONDS: Final = 0.5
MAX_CHECK_SECONDS: Final = 300.0
"""The background thread looks at least this often, whatever the TTL (a clock jump is caught)."""
STATIC_LEASE_RETRY_SECONDS: Final = 5.0
"""How often a static token's lease is asked for while Vault cannot be reached."""

Login = Callable[[hvac.Client], Mapping[str, Any]]
"""Logs the client in (it then holds the new token) and returns the response's ``auth`` block."""


def approle_login(role_id: str, secret_id: str, mount: str = "approle") -> Login:
    def login(client: hvac.Client) -> Mapping[str, Any]:
        response = client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=mount)
        return dict(response["auth"])

    return login


def kubernetes_login(role: str, token_path: Path, mount: str = "kubernetes") -> Login:
    """The pod's service account token, read at each login (kubelet rotates projected tokens)."""

    def login(client: hvac.Client) -> Mapping[str, Any]:
        try:
            jwt = token_path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"service account token {token_path} not readable for Vault login: {exc}") from None
        response = client.auth.kubernetes.login(role=role, jwt=jwt, mount_point=mount)
        return dict(response["auth"])

    return login


@dataclass(frozen=True)
class Lease:
    """The current token's lifetime as the keeper knows it (``ttl`` 0: it never expires)."""

    ttl: float
    renewable: bool
    since: float

    def due(self, now: float) -> bool:
        return self.ttl > 0 and now - self.since >= self.ttl * RENEW_AT

    def seconds_until_due(self, now: float) -> float:
        return self.ttl * RENEW_AT - (now - self.since) if self.ttl > 0 else MAX_CHECK_SECONDS


class VaultTokenKeeper:
    """Keeps ``client``'s token valid for as long as the worker runs (see the module docstring)."""

    def __init__(self, client: hvac.Client, login: Login | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self._login_fn, self._clock = client, login, clock
        self._lock = threading.RLock()
        self._own_call = threading.local()
        self._lease = Lease(ttl=0, renewable=False, since=clock())
        self._login_ttl = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0
        self.logins = 0

    # --- what the adapter asks ------------------------------------------------------------------
    def making_own_call(self) -> bool:
        return bool(getattr(self._own_call, "active", False))

    def before_request(self) -> None:
        if self._lease.due(self._clock()):
            self.refresh()

    def recover_from_forbidden(self) -> bool:
        """After a 403: True if the token was the problem and a fresh one is in place (retry)."""
        if self._login_fn is None or self._token_valid():
            return False
        log.warning("Vault token no longer valid; logging in again")
        self.login()
        return True

    # --- renewal and login ----------------------------------------------------------------------
    def start(self) -> VaultTokenKeeper:
        """Log in (or learn the static token's lease) and start the background renewal."""
        if self._login_fn is not None:
            self.login()
        # A static token's lease is learned by the background thread: building the client does
        # not need Vault to be up (as with a plain token before).
        self._thread = threading.Thread(target=self._run, name="vault-token", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def login(self) -> None:
        if self._login_fn is None:
            raise RuntimeError("no Vault login method configured: a static token cannot be replaced")
        with self._lock, self._own():
            auth = self._login_fn(self.client)
            self.logins += 1
            self._login_ttl = float(auth.get("lease_duration") or 0)
            self._lease = Lease(self._login_ttl, bool(auth.get("renewable")), self._clock())
        log.info(
            "logged in to Vault (token ttl %ss, renewable %s, policies %s)",
            int(self._login_ttl),
            self._lease.renewable,
            ", ".join(auth.get("token_policies") or auth.get("policies") or []),
        )

    def refresh(self) -> None:
        """Renew the token, or log in again if renewal is refused or capped short."""
        with self._lock:
            if not self._lease.due(self._clock()):
                return  # another thread refreshed it meanwhile
            if self._lease.renewable:
                try:
                    with self._own():
                        auth = self.client.auth.token.renew_self()["auth"]
                except hvac.exceptions.VaultError as exc:  # OpenBao says 500 'past the max TTL'
                    log.warning("Vault refused to renew the worker's token (%s)", _first_line(exc))
                else:
                    ttl = float(auth.get("lease_duration") or 0)
                    self.renewals += 1
                    self._lease = Lease(ttl, bool(auth.get("renewable")), self._clock())
                    if self._login_fn is None or ttl >= self._login_ttl * RELOGIN_BELOW:
                        log.debug("renewed the Vault token for %ss", int(ttl))
                        return
                    log.info("Vault token renewal capped at %ss by its max TTL; logging in again", int(ttl))
            if self._login_fn is not None:
                self.login()
            else:
                # Nothing to renew with: do not retry on every call, only at the next check.
                self._lease = Lease(self._lease.ttl, False, self._clock())
                log.error("the static Vault token cannot be renewed and there is no login method to replace it")

    def _learn_static_lease(self) -> None:
        with self._own():
            data = self.client.auth.token.lookup_self()["data"]
        self._lease = Lease(float(data.get("ttl") or 0), bool(data.get("renewable")), self._clock())

    def _token_valid(self) -> bool:
        try:
            with self._own():
                self.client.auth.token.lookup_self()
        except hvac.exceptions.Forbidden:
            return False
        return True

    def _run(self) -> None:
        while self._login_fn is None and not self._stop.is_set():
            try:
                self._learn_static_lease()
                break
            except Exception as exc:  # Vault not reachable yet: the first calls will say so
                log.debug("Vault token lease not readable yet: %s", _first_line(exc))
                if self._stop.wait(STATIC_LEASE_RETRY_SECONDS):
                    return
        while not self._stop.is_set():
            wait = self._lease.seconds_until_due(self._clock())
            if self._stop.wait(min(max(wait, MIN_CHECK_SECONDS), MAX_CHECK_SECONDS)):
                return
            try:
                self.before_request()
            except Exception as exc:  # Vault down: calls retry as activities; the thread tries again
                log.warning("Vault token refresh failed: %s", _first_line(exc))

    @contextmanager
    def _own(self) -> Iterator[None]:
        previous = self.making_own_call()
        self._own_call.active = True
        try:
            yield
        finally:
            self._own_call.active = previous


class KeptTokenAdapter(JSONAdapter):  # type: ignore[misc]
    """hvac's JSON adapter, with a keeper that refreshes the token around each call."""

    keeper: VaultTokenKeeper | None = None

    def request(self, *args: Any, **kwargs: Any) -> Any:
        keeper = self.keeper
        if keeper is None or keeper.making_own_call():
            return super().request(*args, **kwargs)
        keeper.before_request()
        try:
            return super().request(*args, **kwargs)
        except hvac.exceptions.Forbidden:
            if not keeper.recover_from_forbidden():
                raise
            return super().request(*args, **kwargs)


def login_of(settings: Settings) -> Login | None:
    """The login the settings configure: Kubernetes auth, else AppRole, else none (static token)."""
    if settings.vault_token is not None:
        return None
    if settings.vault_kubernetes_role:
        return kubernetes_login(
            settings.vault_kubernetes_role, settings.vault_kubernetes_token_path, settings.vault_kubernetes_mount
        )
    if settings.vault_role_id and settings.vault_secret_id:
        return approle_login(
            settings.vault_role_id, settings.vault_secret_id.get_secret_value(), settings.vault_approle_mount
        )
    raise ValueError(
        "no Vault credentials: set TENANTCTL_VAULT_TOKEN, TENANTCTL_VAULT_KUBERNETES_ROLE or "
        "TENANTCTL_VAULT_ROLE_ID/SECRET_ID"
    )


def kept_vault_client(
    url: str,
    login: Login | None,
    token: str | None = None,
    namespace: str | None = None,
    verify: bool | str = True,
    session: requests.Session | None = None,
) -> tuple[hvac.Client, VaultTokenKeeper]:
    """An hvac client whose token a started keeper maintains (``session``: e.g. one that retries calls)."""
    client = hvac.Client(
        url=url, token=token, namespace=namespace, verify=verify, adapter=KeptTokenAdapter, session=session
    )
    keeper = VaultTokenKeeper(client, login)
    client.adapter.keeper = keeper
    return client, keeper.start()


def vault_client_from(settings: Settings, session: requests.Session | None = None) -> hvac.Client:
    verify: bool | str = str(settings.vault_ca_cert) if settings.vault_ca_cert else True
    token = settings.vault_token.get_secret_value() if settings.vault_token is not None else None
    client, _ = kept_vault_client(
        settings.vault_addr, login_of(settings), token, settings.vault_namespace, verify, session
    )
    return client


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
