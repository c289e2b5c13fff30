"""Service account tokens: the TokenRequest and TokenReview APIs, as kube-apiserver serves them.

- ``POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`` (TokenRequest, ``kubectl create token``):
  an RS256 JWT with the claims a 1.32 apiserver writes (``iss``, ``sub``
  ``system:serviceaccount:NS:NAME``, ``aud``, ``exp``/``iat``/``nbf``, ``jti`` and the
  ``kubernetes.io`` block naming the namespace, the ServiceAccount and its uid, and a bound Pod or
  Secret). ``spec.audiences`` defaults to the API audiences, ``spec.expirationSeconds`` to 3600 and
  must be at least ``min_expiration_seconds`` (600, the apiserver's floor; tests lower it).
- ``POST /apis/authentication.k8s.io/v1/tokenreviews``: checks the signature (this emulator's key),
  the issuer, expiry and not-before, the audiences (``spec.audiences``, else the API audiences, must
  intersect the token's), and that the ServiceAccount (and a bound object) still exists with the
  uid the token names. The answer is a TokenReview, 201, whose ``status`` holds ``authenticated``,
  ``user`` (username, uid, groups, extra) and ``audiences`` (the intersection), or ``error``.

A TokenReview's caller is authenticated: a bearer token the API does not accept (anything but the
kubeconfig's ``emulator`` token or a service account JWT of this emulator valid for the API
audiences) gets 401, as from a real apiserver; OpenBao's ``kubernetes`` auth reports that 401 as
"service account unauthorized" (e.g. when it reviews a ``vault``-audience login JWT with itself as
the bearer). A call without a bearer passes, as all calls to this emulator do (client-go sends no
bearer token over plain HTTP). RBAC (``system:auth-delegator``) is not modelled.

The signing key is kept next to the emulator's state file (owner-only), so tokens stay valid across
a restart, as they do when a real apiserver restarts with its ``--service-account-key-file``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .resources import BY_KEY, ApiError, Obj, now_iso

if TYPE_CHECKING:
    from .store import Store

DEFAULT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
DEFAULT_EXPIRATION_SECONDS: Final = 3600
MIN_EXPIRATION_SECONDS: Final = 600
"""kube-apiserver refuses shorter TokenRequests ("may not specify a duration less than 10 minutes")."""
MAX_EXPIRATION_SECONDS: Final = 2**32
KUBECONFIG_TOKEN: Final = "emulator"
"""The bearer token of the kubeconfigs the emulator writes: an authenticated cluster admin."""
BOUND_KINDS: Final = {"Pod": "pods", "Secret": "secrets"}
LEGACY_ISSUER: Final = "kubernetes/serviceaccount"
LEGACY_PREFIX: Final = "kubernetes.io/serviceaccount/"
TOKEN_SECRET_TYPE: Final = "kubernetes.io/service-account-token"
TOKEN_SECRET_ACCOUNT: Final = "kubernetes.io/service-account.name"
TOKEN_SECRET_ACCOUNT_UID: Final = "kubernetes.io/service-account.uid"


class TokenInvalid(Exception):
    """Why a token does not authenticate (the text a TokenReview's ``status.error`` carries)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ServiceAccountTokens:
    """Issues and reviews the service account JWTs of one emulator (all its clusters share the key)."""

    def __init__(
        self,
        store: Store,
        key_file: Path | None = None,
        issuer: str = DEFAULT_ISSUER,
        api_audiences: tuple[str, ...] | None = None,
        min_expiration_seconds: int = MIN_EXPIRATION_SECONDS,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.api_audiences = list(api_audiences or (issuer,))
        self.min_expiration_seconds = min_expiration_seconds
        self._key_file = key_file
        self._key: rsa.RSAPrivateKey | None = None
        self._key_lock = threading.Lock()

    # --- the key --------------------------------------------------------------------------------

    @property
    def key(self) -> rsa.RSAPrivateKey:
        """Loaded or generated on first use (a 2048-bit key takes a moment: not at start-up)."""
        with self._key_lock:
            if self._key is None:
                self._key = self._load_or_create_key()
            return self._key

    def _load_or_create_key(self) -> rsa.RSAPrivateKey:
        if self._key_file is not None and self._key_file.exists():
            loaded = serialization.load_pem_private_key(self._key_file.read_bytes(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError(f"{self._key_file} holds no RSA private key")
            return loaded
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if self._key_file is not None:
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            self._key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
        return key

    def public_pem(self) -> str:
        """The verification key, as a cluster's ``--service-account-key-file`` (for ``pem_keys``)."""
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    @property
    def key_id(self) -> str:
        """``kid`` as kube-apiserver derives it: the base64url SHA-256 of the public key's DER."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return _b64(hashlib.sha256(der).digest())

    # --- TokenRequest ---------------------------------------------------------------------------

    def request(self, cluster: str, namespace: str, name: str, body: Any) -> Obj:
        """Answer ``POST .../serviceaccounts/NAME/token`` (the TokenRequest, with ``status.token``)."""
        if not isinstance(body, dict) or body.get("kind", "TokenRequest") != "TokenRequest":
            raise ApiError(400, "the body of the request must be a TokenRequest (authentication.k8s.io/v1)")
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise ApiError(400, "TokenRequest spec must be an object")
        account = self.store.get(cluster, BY_KEY["/serviceaccounts"], namespace, name)  # 404 as on a real server
        if account["metadata"].get("deletionTimestamp"):
            raise ApiError(
                404, f'serviceaccounts "{name}" not found', details={"name": name, "kind": "serviceaccounts"}
            )
        audiences = spec.get("audiences") or self.api_audiences
        seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION_SECONDS)
        self._validate(name, audiences, seconds)
        bound = self._bound_object(cluster, namespace, spec.get("boundObjectRef"), name)
        now = int(time.time())
        scope: Obj = {"namespace": namespace, "serviceaccount": {"name": name, "uid": account["metadata"]["uid"]}}
        if bound is not None:
            scope[bound[0].lower()] = {"name": bound[1], "uid": bound[2]}
        claims: Obj = {
            "aud": list(audiences),
            "exp": now + int(seconds),
            "iat": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": scope,
            "nbf": now,
            "sub": f"system:serviceaccount:{namespace}:{name}",
        }
        meta = {"name": name, "namespace": namespace, "creationTimestamp": now_iso(now)}
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": meta,
            "spec": {
                "audiences": list(audiences),
                "expirationSeconds": int(seconds),
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {"token": self.sign(claims), "expirationTimestamp": now_iso(claims["exp"])},
        }

    def _validate(self, name: str, audiences: Any, seconds: Any) -> None:
        invalid = f'TokenRequest.authentication.k8s.io "{name}" is invalid'
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
            raise ApiError(422, f"{invalid}: spec.audiences: Invalid value: {audiences!r}: must be a list of strings")
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise ApiError(400, f"{invalid}: spec.expirationSeconds must be an integer")
        floor = self.min_expiration_seconds
        shortest = f"{floor // 60} minutes" if floor >= 60 and floor % 60 == 0 else f"{floor} seconds"
        problem = (
            f"may not specify a duration less than {shortest}"
            if seconds < floor
            else "may not specify a duration larger than 2^32 seconds"
            if seconds > MAX_EXPIRATION_SECONDS
            else None
        )
        if problem:
            raise ApiError(422, f"{invalid}: spec.expirationSeconds: Invalid value: {seconds}: {problem}")

    def _bound_object(self, cluster: str, namespace: str, ref: Any, name: str) -> tuple[str, str, str] | None:
        if not ref:
            return None
        kind = ref.get("kind") if isinstance(ref, dict) else None
        if kind not in BOUND_KINDS or not ref.get("name"):
            raise ApiError(
                422,
                f'TokenRequest.authentication.k8s.io "{name}" is invalid: spec.boundObjectRef.kind: '
                f'Unsupported value: "{kind}": supported values: "Pod", "Secret"',
            )
        obj = self.store.get(cluster, BY_KEY[f"/{BOUND_KINDS[kind]}"], namespace, ref["name"])
        uid = obj["metadata"]["uid"]
        if kind == "Pod" and (obj.get("spec") or {}).get("serviceAccountName", "default") != name:
            raise ApiError(
                400, f'cannot bind token for serviceaccount "{name}" to pod running with different serviceaccount name.'
            )
        if ref.get("uid") and ref["uid"] != uid:
            raise ApiError(
                409,
                f"the UID in the bound object reference ({ref['uid']}) does not match the UID in record. "
                "The object might have been deleted and then recreated",
            )
        return kind, ref["name"], uid

    def sign(self, claims: Obj) -> str:
        header = {"alg": "RS256", "kid": self.key_id}
        compact = (",", ":")  # as Go's encoder writes JWTs
        header_part, claims_part = (_b64(json.dumps(part, separators=compact).encode()) for part in (header, claims))
        signing_input = f"{header_part}.{claims_part}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    # --- TokenReview ----------------------------------------------------------------------------

    def review(self, cluster: str, body: Any, bearer: str | None) -> Obj:
        """Answer ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (or raise 401/400)."""
        self.authenticate_caller(cluster, bearer)
        if not isinstance(body, dict) or body.get("kind", "TokenReview") != "TokenReview":
            raise ApiError(400, "the body of the request must be a TokenReview (authentication.k8s.io/v1)")
        spec: Obj = body["spec"] if isinstance(body.get("spec"), dict) else {}
        token = spec.get("token")
        if not isinstance(token, str) or not token:
            raise ApiError(400, "token is required for TokenReview in authentication")
        wanted = spec.get("audiences") or self.api_audiences
        if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
            raise ApiError(400, "TokenReview spec.audiences must be a list of strings")
        status: Obj = {"user": {}}  # always an object: OpenBao tells a TokenReview from a Status by it
        try:
            claims = self.validate(cluster, token, wanted)
        except TokenInvalid as exc:
            status["error"] = f"[invalid bearer token, {exc}]"
        else:
            status.update(authenticated=True, user=_user_of(claims), audiences=_intersect(claims["aud"], wanted))
        response_spec: Obj = {"token": token}
        if spec.get("audiences"):
            response_spec["audiences"] = spec["audiences"]
        return {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": response_spec,
            "status": status,
        }

    def authenticate_caller(self, cluster: str, bearer: str | None) -> None:
        """401 if the caller presents a bearer token the API does not accept.

        No bearer at all passes, as every call to this emulator does: it has no authentication, and
        client-go (kubectl) sends no bearer token to a plain-HTTP server."""
        if bearer is None or bearer == KUBECONFIG_TOKEN:
            return
        try:
            self.validate(cluster, bearer, self.api_audiences)
        except TokenInvalid:
            raise ApiError(401, "Unauthorized", reason="Unauthorized") from None

    def validate(self, cluster: str, token: str, audiences: list[str]) -> Obj:
        """The token's claims if it authenticates for one of ``audiences``; else TokenInvalid."""
        claims = self._verified_claims(token)
        if claims.get("iss") == LEGACY_ISSUER:
            return self._validate_legacy(cluster, token, claims, audiences)
        now = time.time()
        if claims.get("iss") != self.issuer:
            raise TokenInvalid(f"token issuer {claims.get('iss')!r} is not {self.issuer!r}")
        if not isinstance(claims.get("exp"), int | float) or now >= claims["exp"]:
            raise TokenInvalid("service account token has expired")
        if isinstance(claims.get("nbf"), int | float) and now < claims["nbf"]:
            raise TokenInvalid("service account token is not valid yet")
        token_audiences = claims.get("aud")
        if isinstance(token_audiences, str):
            token_audiences = [token_audiences]
        if not isinstance(token_audiences, list) or not _intersect(token_audiences, audiences):
            raise TokenInvalid(
                f"token audiences {json.dumps(token_audiences)} is invalid for the target audiences "
                f"{json.dumps(audiences)}"
            )
        claims["aud"] = token_audiences
        self._check_still_bound(cluster, claims)
        return claims

    # --- legacy tokens: Secrets of type kubernetes.io/service-account-token ---------------------

    def legacy_token(self, namespace: str, secret: str, account: str, account_uid: str) -> str:
        """The non-expiring token the token controller writes into a service-account-token Secret."""
        return self.sign(
            {
                "iss": LEGACY_ISSUER,
                LEGACY_PREFIX + "namespace": namespace,
                LEGACY_PREFIX + "secret.name": secret,
                LEGACY_PREFIX + "service-account.name": account,
                LEGACY_PREFIX + "service-account.uid": account_uid,
                "sub": f"system:serviceaccount:{namespace}:{account}",
            }
        )

    def _validate_legacy(self, cluster: str, token: str, claims: Obj, audiences: list[str]) -> Obj:
        """Valid for the API audiences only, while its Secret (holding this very token) and its
        ServiceAccount exist, as the apiserver's legacy validator checks."""
        if not _intersect(self.api_audiences, audiences):
            raise TokenInvalid(
                f"token audiences {json.dumps(self.api_audiences)} is invalid for the target audiences "
                f"{json.dumps(audiences)}"
            )
        namespace = str(claims.get(LEGACY_PREFIX + "namespace", ""))
        secret_name = str(claims.get(LEGACY_PREFIX + "secret.name", ""))
        account = {
            "name": str(claims.get(LEGACY_PREFIX + "service-account.name", "")),
            "uid": str(claims.get(LEGACY_PREFIX + "service-account.uid", "")),
        }
        secret = self.store.find(cluster, BY_KEY["/secrets"], namespace, secret_name)
        stored = base64.b64decode((secret or {}).get("data", {}).get("token", "")).decode(errors="replace")
        if secret is None or secret["metadata"].get("deletionTimestamp") or stored != token:
            raise TokenInvalid(f'secrets "{secret_name}" not found or no longer holds this token')
        normalized = {
            **claims,
            "aud": _intersect(self.api_audiences, audiences),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": account},
        }
        self._check_still_bound(cluster, normalized)
        return normalized

    def fill_token_secret(self, cluster: str, namespace: str, name: str, ca_pem: str | None) -> None:
        """The token controller's work for one Secret of type kubernetes.io/service-account-token:
        token, namespace and ca.crt filled in; deleted if its ServiceAccount does not exist."""
        secrets, accounts = BY_KEY["/secrets"], BY_KEY["/serviceaccounts"]
        with self.store.lock:
            secret = self.store.find(cluster, secrets, namespace, name)
            if secret is None or secret.get("type") != TOKEN_SECRET_TYPE or secret["metadata"].get("deletionTimestamp"):
                return
            annotations = secret["metadata"].get("annotations") or {}
            account = self.store.find(cluster, accounts, namespace, annotations.get(TOKEN_SECRET_ACCOUNT, ""))
            wanted_uid = annotations.get(TOKEN_SECRET_ACCOUNT_UID)
            if account is None or (wanted_uid and wanted_uid != account["metadata"]["uid"]):
                self.store.remove(cluster, secrets, namespace, name)
                return
            if (secret.get("data") or {}).get("token"):
                return
            uid = account["metadata"]["uid"]
            token = self.legacy_token(namespace, name, account["metadata"]["name"], uid)
            data = {"token": token, "namespace": namespace, **({"ca.crt": ca_pem} if ca_pem else {})}

            def fill(current: Obj | None) -> Obj | None:
                if current is None:
                    return None
                current["metadata"].setdefault("annotations", {})[TOKEN_SECRET_ACCOUNT_UID] = uid
                encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
                current["data"] = {**(current.get("data") or {}), **encoded}
                return current

            self.store.mutate(cluster, secrets, namespace, name, fill)

    def _verified_claims(self, token: str) -> Obj:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenInvalid("square/go-jose: compact JWS format must have three parts")
        header_b64, claims_b64, signature_b64 = parts
        try:
            header = json.loads(_unb64(header_b64))
            claims = json.loads(_unb64(claims_b64))
            signature = _unb64(signature_b64)
        except (ValueError, binascii.Error) as exc:
            raise TokenInvalid(f"token is not a JWT: {exc}") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
            raise TokenInvalid("token is not an RS256 JWT")
        try:
            self.key.public_key().verify(
                signature, f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise TokenInvalid("square/go-jose: error in cryptographic primitive") from None
        return claims

    def _check_still_bound(self, cluster: str, claims: Obj) -> None:
        """The ServiceAccount (and a bound Pod/Secret) must still exist with the uid the token names."""
        scope = claims.get("kubernetes.io")
        if not isinstance(scope, dict) or not isinstance(scope.get("serviceaccount"), dict):
            raise TokenInvalid("token has no kubernetes.io service account claims")
        namespace, account = scope.get("namespace", ""), scope["serviceaccount"]
        if claims.get("sub") != f"system:serviceaccount:{namespace}:{account.get('name')}":
            raise TokenInvalid("token subject does not name its service account")
        for kind, plural in (("ServiceAccount", "serviceaccounts"), *BOUND_KINDS.items()):
            ref = account if kind == "ServiceAccount" else scope.get(kind.lower())
            if ref is None:
                continue
            obj = self.store.find(cluster, BY_KEY[f"/{plural}"], namespace, str(ref.get("name", "")))
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                raise TokenInvalid(f'{plural} "{ref.get("name")}" not found')
            if obj["metadata"]["uid"] != ref.get("uid"):
                raise TokenInvalid(f"{kind} UID ({obj['metadata']['uid']}) does not match claim ({ref.get('uid')})")


def _intersect(have: list[Any], wanted: list[str]) -> list[str]:
    return [a for a in wanted if a in have]


def _user_of(claims: Obj) -> Obj:
    scope = claims["kubernetes.io"]
    namespace, account = scope["namespace"], scope["serviceaccount"]
    extra: dict[str, list[str]] = {}
    if claims.get("jti"):
        extra["authentication.kubernetes.io/credential-id"] = [f"JTI={claims['jti']}"]
    if isinstance(scope.get("pod"), dict):
        extra["authentication.kubernetes.io/pod-name"] = [scope["pod"]["name"]]
        extra["authentication.kubernetes.io/pod-uid"] = [scope["pod"]["uid"]]
    return {
        "username": f"system:serviceaccount:{namespace}:{account['name']}",
        "uid": account["uid"],
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        "extra": extra,
    }


def bearer_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# --- the one protobuf body the emulator reads ------------------------------------------------
# `kubectl create token` sends its TokenRequest as protobuf only (no JSON fallback), and it is the
# usual way to mint a reviewer or test token. The message is tiny, so it is decoded by hand from the
# wire format (field numbers of k8s.io/api/authentication/v1/generated.proto) rather than adding
# the protobuf definitions of every kind. Any other protobuf body still gets the 415.

PROTOBUF_MAGIC: Final = b"k8s\x00"


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(data):
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            out.append((number, varint()))
        elif wire == 2:
            size = varint()
            if pos + size > len(data):
                raise ValueError("truncated field")
            out.append((number, data[pos : pos + size]))
            pos += size
        elif wire in (1, 5):  # fixed64 / fixed32: none in TokenRequest, skipped
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def token_request_from_protobuf(raw: bytes) -> Obj:
    """The JSON form of a protobuf TokenRequest (``k8s\\0`` + runtime.Unknown envelope)."""
    if not raw.startswith(PROTOBUF_MAGIC):
        raise ApiError(400, "protobuf body without the k8s envelope")
    try:
        envelope = dict(_fields(raw[len(PROTOBUF_MAGIC) :]))
        type_meta = {n: v for n, v in _fields(_bytes(envelope.get(1)))}
        if _text(type_meta.get(2)) != "TokenRequest":
            raise ApiError(415, "the emulator decodes no protobuf body but a TokenRequest's; send JSON instead")
        spec: Obj = {}
        for number, value in _fields(_bytes(dict(_fields(_bytes(envelope.get(2)))).get(2))):
            if number == 1:
                spec.setdefault("audiences", []).append(_text(value))
            elif number == 4 and isinstance(value, int):
                spec["expirationSeconds"] = value
            elif number == 3:
                names = {1: "kind", 2: "apiVersion", 3: "name", 4: "uid"}
                spec["boundObjectRef"] = {names[n]: _text(v) for n, v in _fields(_bytes(value)) if n in names}
    except ValueError as exc:
        raise ApiError(400, f"invalid protobuf TokenRequest: {exc}") from None
    return {"apiVersion": _text(type_meta.get(1)), "kind": "TokenRequest", "spec": spec}


def _bytes(value: int | bytes | None) -> bytes:
    if isinstance(value, int):
        raise ValueError("expected a message, found a number")
    return value or b""


def _text(value: int | bytes | None) -> str:
    return _bytes(value).decode()
