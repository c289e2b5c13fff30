"""Service account tokens: TokenRequest (the official client and `kubectl create token`) and
TokenReview, answered as kube-apiserver answers them; and the emulator served over TLS."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kubernetes import client

from devstack.kube_emulator import Emulator

KUBECTL = shutil.which("kubectl")
REPO = Path(__file__).resolve().parents[2]
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def token_for(core: client.CoreV1Api, ns: str, name: str, **spec: Any) -> str:
    return str(core.create_namespaced_service_account_token(name, ns, {"spec": spec}).status.token)


def review(api: client.ApiClient, token: str, audiences: list[str] | None = None, **headers: str) -> Any:
    body: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    if audiences is not None:
        body["spec"]["audiences"] = audiences
    resp = api.call_api(
        "POST",
        api.configuration.host + "/apis/authentication.k8s.io/v1/tokenreviews",
        header_params={"Content-Type": "application/json", "Accept": "application/json", **headers},
        body=body,
    )
    assert resp.status == 201
    return json.loads(resp.read())


@pytest.fixture
def account(core: client.CoreV1Api, ns: str) -> str:
    core.create_namespaced_service_account(ns, {"metadata": {"name": "worker"}})
    return "worker"


def test_token_request_signs_the_claims_of_a_real_apiserver(
    core: client.CoreV1Api, ns: str, account: str, emulator: Emulator
) -> None:
    uid = core.read_namespaced_service_account(account, ns).metadata.uid
    before = int(time.time())
    answer = core.create_namespaced_service_account_token(
        account, ns, {"spec": {"audiences": ["vault"], "expirationSeconds": 900}}
    )
    assert answer.kind == "TokenRequest" and answer.spec.audiences == ["vault"]
    assert answer.spec.expiration_seconds == 900
    token = answer.status.token
    header, _, _ = token.partition(".")
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"] == "RS256"
    claims = claims_of(token)
    assert claims["iss"] == API_AUDIENCE
    assert claims["sub"] == f"system:serviceaccount:{ns}:{account}"
    assert claims["aud"] == ["vault"]
    assert before <= claims["iat"] <= claims["nbf"] + 1 and claims["exp"] == claims["iat"] + 900
    assert claims["kubernetes.io"] == {"namespace": ns, "serviceaccount": {"name": account, "uid": uid}}
    assert abs(answer.status.expiration_timestamp.timestamp() - claims["exp"]) < 1
    # the signature verifies with the emulator's public key (what pem_keys would be given)
    signing_input, _, signature = token.rpartition(".")
    public = serialization.load_pem_public_key(emulator.tokens.public_pem().encode())
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        signing_input.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_token_request_defaults_and_refusals(core: client.CoreV1Api, ns: str, account: str, kit: Any) -> None:
    claims = claims_of(token_for(core, ns, account))
    assert claims["aud"] == [API_AUDIENCE] and claims["exp"] - claims["iat"] == 3600
    err, body = kit.api_error(core.create_namespaced_service_account_token, "absent", ns, {"spec": {}})
    assert err.status == 404 and body["message"] == 'serviceaccounts "absent" not found'
    err, body = kit.api_error(
        core.create_namespaced_service_account_token, account, ns, {"spec": {"expirationSeconds": 60}}
    )
    assert err.status == 422 and "may not specify a duration less than 10 minutes" in body["message"]
    status, _, _ = kit.raw(core.api_client, "GET", f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token")
    assert status == 405


def test_discovery_lists_the_token_apis(api: client.ApiClient, kit: Any) -> None:
    _, core_list, _ = kit.raw(api, "GET", "/api/v1")
    token = next(r for r in core_list["resources"] if r["name"] == "serviceaccounts/token")
    assert (token["group"], token["version"], token["kind"], token["verbs"]) == (
        "authentication.k8s.io",
        "v1",
        "TokenRequest",
        ["create"],
    )
    _, group, _ = kit.raw(api, "GET", "/apis/authentication.k8s.io/v1")
    assert [(r["name"], r["namespaced"], r["verbs"]) for r in group["resources"]] == [
        ("tokenreviews", False, ["create"])
    ]


def test_token_review_authenticates_a_live_token(
    api: client.ApiClient, core: client.CoreV1Api, ns: str, account: str
) -> None:
    uid = core.read_namespaced_service_account(account, ns).metadata.uid
    token = token_for(core, ns, account, audiences=["vault", "other"])
    answer = review(api, token, ["vault"])
    assert answer["kind"] == "TokenReview" and answer["apiVersion"] == "authentication.k8s.io/v1"
    status = answer["status"]
    assert status["authenticated"] is True and "error" not in status
    assert status["audiences"] == ["vault"]  # the intersection with what was asked
    user = status["user"]
    assert user["username"] == f"system:serviceaccount:{ns}:{account}" and user["uid"] == uid
    assert user["groups"] == ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]
    assert user["extra"]["authentication.kubernetes.io/credential-id"] == [f"JTI={claims_of(token)['jti']}"]
    # no audiences asked: the API's own audiences, which a vault-only token does not have
    assert review(api, token_for(core, ns, account))["status"]["audiences"] == [API_AUDIENCE]
    refused = review(api, token)["status"]
    assert not refused.get("authenticated") and "token audiences" in refused["error"]


def test_token_review_refuses_tampered_deleted_and_recreated(
    api: client.ApiClient, core: client.CoreV1Api, ns: str, account: str
) -> None:
    token = token_for(core, ns, account, audiences=["vault"])
    head, _, signature = token.split(".")
    forged = json.dumps({**claims_of(token), "sub": f"system:serviceaccount:{ns}:admin"}).encode()
    tampered = f"{head}.{base64.urlsafe_b64encode(forged).rstrip(b'=').decode()}.{signature}"
    assert "cryptographic" in review(api, tampered, ["vault"])["status"]["error"]
    garbage = review(api, "not-a-jwt", ["vault"])["status"]
    assert garbage["user"] == {} and "three parts" in garbage["error"] and not garbage.get("authenticated")
    core.delete_namespaced_service_account(account, ns)
    assert f'serviceaccounts "{account}" not found' in review(api, token, ["vault"])["status"]["error"]
    core.create_namespaced_service_account(ns, {"metadata": {"name": account}})  # same name, new uid
    status = review(api, token, ["vault"])["status"]
    assert not status.get("authenticated") and "does not match claim" in status["error"]
    assert review(api, token_for(core, ns, account, audiences=["vault"]), ["vault"])["status"]["authenticated"]


def test_a_token_bound_to_a_pod_dies_with_the_pod(
    api: client.ApiClient, core: client.CoreV1Api, ns: str, account: str, kit: Any
) -> None:
    pod = core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "p"},
            "spec": {"serviceAccountName": account, "containers": [{"name": "c", "image": "x"}]},
        },
    )
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod.metadata.uid}
    core.create_namespaced_service_account(ns, {"metadata": {"name": "other"}})
    err, body = kit.api_error(
        core.create_namespaced_service_account_token, "other", ns, {"spec": {"boundObjectRef": ref}}
    )
    assert err.status == 400 and "different serviceaccount name" in body["message"]
    token = token_for(core, ns, account, audiences=["vault"], boundObjectRef=ref)
    assert claims_of(token)["kubernetes.io"]["pod"] == {"name": "p", "uid": pod.metadata.uid}
    status = review(api, token, ["vault"])["status"]
    assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["p"]
    core.delete_namespaced_pod("p", ns)
    assert 'pods "p" not found' in review(api, token, ["vault"])["status"]["error"]


def test_a_bad_bearer_is_unauthorized(emulator: Emulator, core: client.CoreV1Api, ns: str, account: str) -> None:
    vault_only = token_for(core, ns, account, audiences=["vault"])

    def review_as(bearer: str) -> tuple[int, Any]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": vault_only}}
        request = urllib.request.Request(
            f"{emulator.url}/apis/authentication.k8s.io/v1/tokenreviews",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    # a valid token, but not for the API: 401, which OpenBao reports as "service account unauthorized"
    code, status = review_as(vault_only)
    assert (code, status["kind"], status["reason"]) == (401, "Status", "Unauthorized")
    code, answer = review_as(token_for(core, ns, account))  # a token of the API audiences may call the API
    assert code == 201 and "token audiences" in answer["status"]["error"]  # vault_only reviewed for the API


def test_an_expired_token_is_refused() -> None:
    with Emulator(port=0, min_token_expiration_seconds=1) as emu, client.ApiClient(_config(emu.url)) as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_service_account("default", {"metadata": {"name": "short"}})
        # expiry has whole-second resolution (as the apiserver's): a token asked for at x.99 with
        # 1 s would be gone at once, so ask for 3 s and wait until the token's own `exp` has passed
        token = token_for(core, "default", "short", audiences=["vault"], expirationSeconds=3)
        assert review(api, token, ["vault"])["status"]["authenticated"]
        payload = token.split(".")[1]
        expires = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
        time.sleep(max(0.0, expires - time.time() + 0.1))
        assert "service account token has expired" in review(api, token, ["vault"])["status"]["error"]


def test_tokens_and_the_tls_identity_survive_a_restart(tmp_path: Path) -> None:
    state, tls = tmp_path / "state.json", tmp_path / "tls"
    with Emulator(port=0, state_file=state, tls_dir=tls) as emu:
        assert emu.url.startswith("https://")
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        with client.ApiClient(_tls_config(kubeconfig)) as api:
            core = client.CoreV1Api(api)
            core.create_namespaced_service_account("default", {"metadata": {"name": "kept"}})
            token = token_for(core, "default", "kept", audiences=["vault"])
        port = emu.port
    assert oct((tmp_path / "state.json.sa-key.pem").stat().st_mode & 0o777) == "0o600"
    assert oct((tls / "tls.key").stat().st_mode & 0o777) == "0o600"
    with Emulator(port=port, state_file=state, tls_dir=tls) as emu, client.ApiClient(_tls_config(kubeconfig)) as api:
        assert review(api, token, ["vault"])["status"]["authenticated"]
        with pytest.raises(urllib.error.URLError) as info:  # a client that does not trust the CA
            urllib.request.urlopen(f"{emu.url}/version", context=ssl.create_default_context(), timeout=5)
        assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_create_token_and_tokenreview(
    emulator: Emulator, kubeconfig: Path, core: client.CoreV1Api, ns: str, account: str, tmp_path: Path
) -> None:
    def kubectl(*args: str, stdin: str | None = None) -> str:
        assert KUBECTL is not None
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # kubectl sends this TokenRequest as protobuf
    token = kubectl("create", "token", account, "-n", ns, "--audience", "vault", "--duration", "15m").strip()
    claims = claims_of(token)
    assert claims["aud"] == ["vault"] and claims["exp"] - claims["iat"] == 900
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["vault"]},
    }
    # client-side validation reads OpenAPI v2 as protobuf, which the emulator does not serve
    answer = json.loads(kubectl("create", "--validate=false", "-o", "json", "-f", "-", stdin=json.dumps(request)))
    assert answer["status"]["user"]["username"] == f"system:serviceaccount:{ns}:{account}"
    # over TLS kubectl trusts the CA of the kubeconfig
    with Emulator(port=0, tls_dir=tmp_path / "tls") as tls_emulator:
        tls_config = tls_emulator.write_kubeconfig(tmp_path / "tls.kubeconfig")
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", str(tls_config), "get", "namespaces", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and "namespace/default" in done.stdout, done.stderr


def _config(url: str) -> client.Configuration:
    cfg = client.Configuration()
    cfg.host = url
    return cfg


def _tls_config(kubeconfig: Path) -> client.Configuration:
    from kubernetes import config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return cfg


def test_a_service_account_token_secret_is_filled_and_dies_with_its_account(
    api: client.ApiClient, core: client.CoreV1Api, ns: str, account: str, kit: Any
) -> None:
    """The token controller: a legacy, non-expiring token in the Secret, valid for the API audiences
    while the Secret and the ServiceAccount exist."""
    annotations = {"kubernetes.io/service-account.name": account}
    secret = {
        "metadata": {"name": "reviewer", "annotations": annotations},
        "type": "kubernetes.io/service-account-token",
    }
    core.create_namespaced_secret(ns, secret)

    def filled() -> Any:
        data = core.read_namespaced_secret("reviewer", ns).data or {}
        return data if "token" in data else None

    data = kit.wait_for(filled, what="the token controller")
    token = base64.b64decode(data["token"]).decode()
    assert base64.b64decode(data["namespace"]).decode() == ns
    uid = core.read_namespaced_service_account(account, ns).metadata.uid
    stored = core.read_namespaced_secret("reviewer", ns).metadata.annotations
    assert stored["kubernetes.io/service-account.uid"] == uid
    claims = claims_of(token)
    assert claims["iss"] == "kubernetes/serviceaccount" and "exp" not in claims
    assert claims["kubernetes.io/serviceaccount/secret.name"] == "reviewer"
    status = review(api, token)["status"]
    assert status["authenticated"] and status["user"]["username"] == f"system:serviceaccount:{ns}:{account}"
    assert status["audiences"] == [API_AUDIENCE]
    assert "token audiences" in review(api, token, ["vault"])["status"]["error"]  # the API's only
    core.delete_namespaced_service_account(account, ns)
    kit.wait_for(lambda: not core.list_namespaced_secret(ns).items, what="the token Secret to go with its account")
    assert "no longer holds this token" in review(api, token)["status"]["error"]
    # a Secret for an account that does not exist is removed, as the token controller does
    orphan = {**secret, "metadata": {"name": "orphan", "annotations": {"kubernetes.io/service-account.name": "nobody"}}}
    core.create_namespaced_secret(ns, orphan)
    kit.wait_for(lambda: not core.list_namespaced_secret(ns).items, what="the orphaned token Secret to be removed")


def test_the_module_entry_point_serves_tls_and_short_tokens(tmp_path: Path, kit: Any) -> None:
    """`python -m devstack.kube_emulator --tls-dir DIR --min-token-expiration-seconds N`."""
    kubeconfig = tmp_path / "kubeconfig"
    args = ["--port", "0", "--kubeconfig", str(kubeconfig), "--tls-dir", str(tmp_path / "tls")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.kube_emulator", *args, "--min-token-expiration-seconds", "5"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.DEVNULL,
    )
    try:
        kit.wait_for(lambda: kubeconfig.exists() and kubeconfig.stat().st_size, timeout=15, what="kubeconfig")
        with client.ApiClient(_tls_config(kubeconfig)) as api:
            assert api.configuration.host.startswith("https://")
            core = client.CoreV1Api(api)
            core.create_namespaced_service_account("default", {"metadata": {"name": "cli"}})
            token = token_for(core, "default", "cli", audiences=["vault"], expirationSeconds=5)
            assert claims_of(token)["exp"] - claims_of(token)["iat"] == 5
            err, body = kit.api_error(
                core.create_namespaced_service_account_token, "cli", "default", {"spec": {"expirationSeconds": 4}}
            )
            assert err.status == 422 and "less than 5 seconds" in body["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
