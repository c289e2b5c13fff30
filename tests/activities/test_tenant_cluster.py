"""The tenant API activities (``tenant.*``) against the host API emulator's tenant clusters, over HTTP
with the official client, and the admin-key-pair client factory against a real TLS server.

Each test uses its own tenant (a unique cluster id), so tests share the session's emulator safely.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import http.server
import ipaddress
import json
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api, PolicyV1Api
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws.provider import AwsProvider
from activities.kvm.provider import KvmProvider
from activities.providers.contract import Providers
from activities.providers.key_pairs import KeyPair
from activities.tenant.clusters import TenantClusters, plain_http_factory, tenant_api_factory
from config.settings import Settings
from devstack.kube_emulator import NEVER_READY, Emulator
from models.errors import NON_RETRYABLE_ERROR_TYPES, DrainBlocked, MissingPrerequisite, NodesNotReady
from models.naming import kvm_namespace
from models.pki import certificate_requests
from models.provider import ClusterRef, NodeRef, ResourceChange
from models.spec import ClusterSpec
from models.tenant import DrainInput, HealthInput, TenantNodeInput, WaitRegisteredInput
from tests.activities.provider_helpers import local_stack_nodes
from tests.specs import example, small_kvm, unique_id
from worker.clients import AwsClients, aws_clients
from worker.registry import activities_of

ROOT = Path(__file__).resolve().parents[2]


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def emulator(kube_emulator: object) -> Iterator[Emulator]:
    emu = cast(Emulator, kube_emulator)
    yield emu
    emu.clear_faults()


@pytest.fixture
def spec() -> ClusterSpec:
    return small_kvm(id=unique_id("tn"))


@pytest.fixture
def tenants(emulator: Emulator) -> TenantClusters:
    return TenantClusters(
        plain_http_factory(lambda s: emulator.tenant_url(s.id)), poll_interval=0.05, max_eviction_backoff=0.2
    )


@pytest.fixture
def tenant(emulator: Emulator, spec: ClusterSpec) -> Iterator[CoreV1Api]:
    """The test's own view of the tenant cluster (retries off: it sees what the activities see)."""
    config = Configuration(host=emulator.tenant_url(spec.id))
    config.retries = False
    with ApiClient(config) as api:
        yield CoreV1Api(api)


@pytest.fixture
def host(emulator: Emulator) -> Iterator[ApiClient]:
    config = Configuration(host=emulator.url)
    config.retries = False
    with ApiClient(config) as api:
        yield api


@pytest.fixture
def heartbeats() -> list[Any]:
    return []


@pytest.fixture
def env(heartbeats: list[Any]) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    # as the runbooks call them (workflows/activity_stubs.py: the wait's timeout plus a minute), so
    # the waits here end by their own deadline, not by the attempt's
    environment.info = dataclasses.replace(environment.info, start_to_close_timeout=timedelta(minutes=10))
    environment.on_heartbeat = lambda *details: heartbeats.append(details[0] if details else None)
    return environment


# --- helpers -------------------------------------------------------------------------------------
def add_node(core: CoreV1Api, name: str, ready: bool = True, version: str = "v1.32.4") -> None:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    if not ready:
        condition |= {"reason": "KubeletNotReady", "message": "container runtime is down"}
    info = {  # every field: the client's models require them all
        "kubeletVersion": version, "kubeProxyVersion": version, "operatingSystem": "linux", "architecture": "amd64",
        "containerRuntimeVersion": "containerd://1.7.24", "osImage": "test", "kernelVersion": "6.1",
        "bootID": "b", "machineID": "m", "systemUUID": "s",
    }  # fmt: skip
    core.create_node({"metadata": {"name": name}, "status": {"conditions": [condition], "nodeInfo": info}})


def set_ready(core: CoreV1Api, name: str, ready: bool) -> None:
    core.patch_node_status(name, {"status": {"conditions": [{"type": "Ready", "status": str(ready)}]}})


def add_pod(core: CoreV1Api, name: str, node: str, labels: dict[str, str] | None = None, **meta: Any) -> None:
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": name, "labels": labels or {"app": "web"}, **meta},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
        },
    )


def pods_on(core: CoreV1Api, node: str) -> list[str]:
    return sorted(
        p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    )


def budget(core: CoreV1Api, name: str, labels: dict[str, str], min_available: int) -> None:
    PolicyV1Api(core.api_client).create_namespaced_pod_disruption_budget(
        "default",
        {"metadata": {"name": name}, "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels}}},
    )


def node_input(spec: ClusterSpec, node: str) -> TenantNodeInput:
    return TenantNodeInput(spec=spec, node=node)


def application_error(info: pytest.ExceptionInfo[BaseException]) -> ApplicationError:
    assert isinstance(info.value, ApplicationError)
    return info.value


# --- cordon / uncordon -----------------------------------------------------------------------------
def test_cordon_and_uncordon_converge(
    env: ActivityEnvironment, tenants: TenantClusters, spec: ClusterSpec, tenant: CoreV1Api
) -> None:
    add_node(tenant, "n1")
    first = env.run(tenants.cordon_node, node_input(spec, "n1"))
    assert first.outcomes[0].change is ResourceChange.UPDATED
    assert tenant.read_node("n1").spec.unschedulable is True
    version = tenant.read_node("n1").metadata.resource_version
    second = env.run(tenants.cordon_node, node_input(spec, "n1"))
    assert second.outcomes[0].change is ResourceChange.UNCHANGED
    assert tenant.read_node("n1").metadata.resource_version == version  # not written at all

    assert env.run(tenants.uncordon_node, node_input(spec, "n1")).outcomes[0].change is ResourceChange.UPDATED
    assert not tenant.read_node("n1").spec.unschedulable
    assert env.run(tenants.uncordon_node, node_input(spec, "n1")).outcomes[0].change is ResourceChange.UNCHANGED
    for activity_fn in (tenants.cordon_node, tenants.uncordon_node):
        assert env.run(activity_fn, node_input(spec, "gone")).outcomes[0].change is ResourceChange.ABSENT


# --- drain ---------------------------------------------------------------------------------------
def test_drain_evicts_what_runs_there_and_twice_is_once(
    env: ActivityEnvironment, tenants: TenantClusters, spec: ClusterSpec, tenant: CoreV1Api
) -> None:
    add_node(tenant, "n1")
    add_node(tenant, "n2")
    for i in range(3):
        add_pod(tenant, f"web-{i}", "n1")
    add_pod(tenant, "elsewhere", "n2")
    add_pod(
        tenant,
        "logs-n1",
        "n1",
        ownerReferences=[
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "logs", "uid": "u-1", "controller": True}
        ],
    )
    add_pod(tenant, "static-n1", "n1", annotations={"kubernetes.io/config.mirror": "abc"})
    request = DrainInput(spec=spec, node="n1", timeout=timedelta(seconds=10))

    result = env.run(tenants.drain_node, request)
    assert result.node_found and sorted(result.evicted) == ["default/web-0", "default/web-1", "default/web-2"]
    assert sorted(result.skipped) == ["default/logs-n1", "default/static-n1"]
    assert pods_on(tenant, "n1") == ["logs-n1", "static-n1"]  # DaemonSet and mirror pods stay
    assert pods_on(tenant, "n2") == ["elsewhere"]
    assert tenant.read_node("n1").spec.unschedulable is True  # a drain cordons first

    again = env.run(tenants.drain_node, request)
    assert again.node_found and again.evicted == []
    missing = env.run(tenants.drain_node, DrainInput(spec=spec, node="gone", timeout=timedelta(seconds=1)))
    assert not missing.node_found and missing.evicted == []


def test_budget_blocking_a_drain_fails_it_at_the_deadline_naming_pods_and_budget(
    env: ActivityEnvironment, tenants: TenantClusters, spec: ClusterSpec, tenant: CoreV1Api, heartbeats: list[Any]
) -> None:
    add_node(tenant, "n1")
    add_pod(tenant, "db-0", "n1", {"app": "db"})
    add_pod(tenant, "db-1", "n1", {"app": "db"})
    budget(tenant, "db-pdb", {"app": "db"}, min_available=2)
    started = time.monotonic()
    with pytest.raises(ApplicationError) as raised:
        env.run(tenants.drain_node, DrainInput(spec=spec, node="n1", timeout=timedelta(seconds=1)))
    error = application_error(raised)
    assert time.monotonic() - started >= 1
    assert error.type == DrainBlocked.__name__ and error.non_retryable
    assert DrainBlocked.__name__ in NON_RETRYABLE_ERROR_TYPES
    message = str(error)
    assert "drain of node n1" in message and "2 pods left" in message
    assert "default/db-0" in message and "default/db-1" in message
    assert "The disruption budget db-pdb needs 2 healthy pods and has 2 currently" in message
    assert error.details[0] == ["n1"]  # as kvm.wait_nodes_ready: the nodes concerned
    assert [b["name"] for b in error.details[1]] == ["db-0", "db-1"]
    assert pods_on(tenant, "n1") == ["db-0", "db-1"]  # nothing was forced
    assert heartbeats and all("started_at" in h for h in heartbeats)
    assert any(h["blocked"] for h in heartbeats)


def test_refused_evictions_are_retried_until_the_budget_allows(
    env: ActivityEnvironment, tenants: TenantClusters, spec: ClusterSpec, tenant: CoreV1Api, heartbeats: list[Any]
) -> None:
    add_node(tenant, "n1")
    add_node(tenant, "n2")
    add_pod(tenant, "db-0", "n1", {"app": "db"})
    add_pod(tenant, "db-1", "n1", {"app": "db"})
    budget(tenant, "db-pdb", {"app": "db"}, min_available=1)  # one may go, the second must wait

    def scale_up() -> None:  # a replica comes up elsewhere, as a controller would make it
        time.sleep(0.6)
        add_pod(tenant, "db-2", "n2", {"app": "db"})

    helper = threading.Thread(target=scale_up)
    helper.start()
    result = env.run(tenants.drain_node, DrainInput(spec=spec, node="n1", timeout=timedelta(seconds=20)))
    helper.join()
    assert sorted(result.evicted) == ["default/db-0", "default/db-1"]
    assert pods_on(tenant, "n1") == [] and pods_on(tenant, "n2") == ["db-2"]
    assert any("disruption budget db-pdb" in b for h in heartbeats for b in h["blocked"])


def test_a_retried_drain_keeps_its_first_deadline(
    env: ActivityEnvironment, tenants: TenantClusters, spec: ClusterSpec, tenant: CoreV1Api
) -> None:
    add_node(tenant, "n1")
    add_pod(tenant, "db-0", "n1", {"app": "db"})
    budget(tenant, "db-pdb", {"app": "db"}, min_available=1)
    earlier = time.time() - 3600  # a lost worker's attempt began an hour ago
    env.info = dataclasses.replace(env.info, heartbeat_details=[{"started_at": earlier, "blocked": []}])
    started = time.monotonic()
    with pytest.raises(ApplicationError) as raised:
        env.run(tenants.drain_node, DrainInput(spec=spec, node="n1", timeout=timedelta(minutes=10)))
    assert application_error(raised).type == DrainBlocked.__name__
    assert time.monotonic() - started < 5


# --- health ----------------------------------------------------------------------------------------
def test_health_names_not_ready_and_unregistered_nodes(
    env: ActivityEnvironment, tenants: TenantClusters, spec: ClusterSpec, tenant: CoreV1Api
) -> None:
    add_node(tenant, "master-0")
    add_node(tenant, "worker-0", ready=False)
    health = env.run(tenants.check_health, HealthInput(spec=spec, expected_nodes=["master-0", "worker-1"]))
    assert health.api_reachable and health.api_detail.startswith("v1.32")
    assert [n.name for n in health.nodes] == ["master-0", "worker-0", "worker-1"]
    assert not health.healthy
    assert [(n.name, n.reason) for n in health.not_ready] == [
        ("worker-0", "Ready=False KubeletNotReady: container runtime is down"),
        ("worker-1", "not registered in the tenant cluster"),
    ]
    assert "worker-0: Ready=False" in health.describe()

    def recover() -> None:
        time.sleep(0.3)
        set_ready(tenant, "worker-0", True)

    helper = threading.Thread(target=recover)
    helper.start()
    waited = env.run(
        tenants.check_health, HealthInput(spec=spec, expected_nodes=["master-0"], wait=timedelta(seconds=10))
    )
    helper.join()
    assert waited.healthy and [n.kubelet_version for n in waited.nodes] == ["v1.32.4", "v1.32.4"]


def test_health_reports_an_unreachable_api(
    env: ActivityEnvironment, tenants: TenantClusters, spec: ClusterSpec, tenant: CoreV1Api, emulator: Emulator
) -> None:
    add_node(tenant, "master-0")
    emulator.set_faults(outage_seconds=30)
    health = env.run(tenants.check_health, HealthInput(spec=spec))
    assert not health.api_reachable and not health.healthy
    assert "503" in health.api_detail and "tenant API unreachable" in health.describe()


# --- registration, with the KVM provider's VMs -------------------------------------------------------
def test_wait_node_registered_follows_the_vm_and_names_what_is_wrong(
    env: ActivityEnvironment,
    tenants: TenantClusters,
    spec: ClusterSpec,
    tenant: CoreV1Api,
    host: ApiClient,
    heartbeats: list[Any],
) -> None:
    provider = KvmProvider(
        host,
        simulated_nodes=local_stack_nodes(host),
        poll_interval=0.05,
    )
    env.run(provider.ensure_foundation, ClusterRef(spec=spec))
    env.run(provider.ensure_node, NodeRef(spec=spec, node="worker-0", kubernetes_version="1.32.4"))

    def wait(version: str, timeout: float = 10) -> Any:
        return env.run(
            tenants.wait_node_registered,
            WaitRegisteredInput(
                spec=spec, node="worker-0", kubernetes_version=version, timeout=timedelta(seconds=timeout)
            ),
        )

    assert wait("1.32.4").kubelet_version == "v1.32.4"
    assert pods_on(tenant, "worker-0") == [f"worker-0-workload-{i}" for i in range(3)]
    drained = env.run(tenants.drain_node, DrainInput(spec=spec, node="worker-0", timeout=timedelta(seconds=5)))
    assert len(drained.evicted) == 3 and pods_on(tenant, "worker-0") == []

    env.run(provider.ensure_node, NodeRef(spec=spec, node="worker-0", kubernetes_version="1.32.5"))  # rolls the VM
    registered = wait("v1.32.5")
    assert registered.ready and registered.kubelet_version == "v1.32.5"
    assert registered.unschedulable  # a cordon survives the VM's roll: uncordoning is the upgrade's job

    heartbeats.clear()
    with pytest.raises(ApplicationError) as raised:
        wait("1.33.0", timeout=0.5)
    error = application_error(raised)
    assert error.type == NodesNotReady.__name__ and error.non_retryable
    assert "node worker-0" in str(error) and "kubelet runs v1.32.5, not v1.33.0" in str(error)
    assert error.details[0] == ["worker-0"]
    assert heartbeats and "waiting_for" in heartbeats[-1]

    AppsV1Api(host).patch_namespaced_deployment(
        "worker-0", kvm_namespace(spec.id), {"metadata": {"annotations": {NEVER_READY: "true"}}}
    )
    deadline = time.monotonic() + 5
    while tenant.read_node("worker-0").status.conditions[0].status == "True":  # the emulator reacts on its own
        assert time.monotonic() < deadline, "the never-ready annotation did not turn the node NotReady"
        time.sleep(0.05)
    with pytest.raises(ApplicationError) as raised:
        wait("1.32.5", timeout=0.5)
    assert "Ready=False KubeletNotReady" in str(raised.value)
    with pytest.raises(ApplicationError) as raised:
        env.run(
            tenants.wait_node_registered,
            WaitRegisteredInput(
                spec=spec, node="worker-9", kubernetes_version="1.32.5", timeout=timedelta(seconds=0.2)
            ),
        )
    assert "not registered in the tenant cluster" in str(raised.value)


# --- reaching the tenant API in production: the admin key pair over TLS -------------------------------
def _name(common_name: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _issue(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _pem(item: x509.Certificate | ec.EllipticCurvePrivateKey) -> str:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM).decode()
    return item.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def tls_tenant_api(tmp_path: Path) -> Iterator[tuple[str, str, str, str, list[str]]]:
    """An HTTPS server that demands a client certificate from the cluster's CA; answers /version and nodes.

    Yields (url, ca_pem, admin_cert_pem, admin_key_pem, subjects of the client certificates it saw).
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("tenant root CA")
    ca = _issue(ca_name, ca_name, ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(_name("kube-apiserver"), ca_name, server_key, ca_key, ip="127.0.0.1")
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(_name("tenantctl-admin", "system:masters"), ca_name, admin_key, ca_key)
    (tmp_path / "server.pem").write_text(_pem(server) + _pem(server_key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    context.load_verify_locations(cadata=_pem(ca))
    context.verify_mode = ssl.CERT_REQUIRED
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            peer = self.connection.getpeercert()  # type: ignore[attr-defined]
            seen.append(",".join(f"{k}={v}" for rdn in peer["subject"] for k, v in rdn))
            version = self.path.rstrip("/") == "/version"
            body = {"gitVersion": "v1.32.4"} if version else {"kind": "NodeList", "items": []}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", _pem(ca), _pem(admin), _pem(admin_key), seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _admin_pair(ca: str, certificate: str, key: str) -> KeyPair:
    return KeyPair(
        certificate=certificate,
        private_key=key,
        ca_chain=ca,
        serial="01",
        not_after=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        issuer_id="issuer",
    )


def _aws_spec() -> ClusterSpec:
    return example(
        "aws-cluster.yaml",
        id=unique_id("tls"),
        masters={"count": 1},
        workers={"count": 1, "instance_type": "m5.large"},
    )


def _aws_clients(moto_url: str) -> AwsClients:
    return aws_clients(
        Settings(
            _env_file=None,
            vault_token="unused",
            aws_endpoint_url=moto_url,
            aws_region="eu-central-1",
            aws_access_key_id="testing",
            aws_secret_access_key=SecretStr("testing"),
        )
    )


def worker_providers(host: ApiClient, moto_url: str) -> Providers:
    """Both providers, as worker/backends.py builds them."""
    kvm = KvmProvider(host)
    return Providers([kvm, AwsProvider(_aws_clients(moto_url))])


def test_admin_key_pair_factory_reaches_a_tls_tenant_api(
    env: ActivityEnvironment,
    spec: ClusterSpec,
    host: ApiClient,
    moto_url: str,
    tls_tenant_api: tuple[str, str, str, str, list[str]],
) -> None:
    """KVM: the admin key pair is read from the host Secret tenant-<id>/cert-admin."""
    url, ca, certificate, key, seen = tls_tenant_api
    core = CoreV1Api(host)
    namespace = kvm_namespace(spec.id)
    core.create_namespace({"metadata": {"name": namespace}})
    providers = worker_providers(host, moto_url)
    factory = tenant_api_factory(providers.tenant_admin_credentials, lambda s: url)

    with pytest.raises(MissingPrerequisite, match=f"secret {namespace}/cert-admin does not exist"):
        factory(spec)

    encoded = {
        k: base64.b64encode(v.encode()).decode()
        for k, v in (("tls.crt", certificate), ("tls.key", key), ("ca.crt", ca))
    }
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "cert-admin"}, "type": "kubernetes.io/tls", "data": encoded}
    )
    before = set(Path(tempfile.gettempdir()).iterdir())
    health = env.run(TenantClusters(factory).check_health, HealthInput(spec=spec))
    assert health.api_reachable and health.api_detail == "v1.32.4" and health.healthy
    assert seen and all(s == "commonName=tenantctl-admin,organizationName=system:masters" for s in seen)
    assert set(Path(tempfile.gettempdir()).iterdir()) == before  # the key never landed in a file

    # trusting the same CA but without the admin key pair, the server refuses the connection
    anonymous = Configuration(host=url)
    anonymous.ca_cert_data = ca
    anonymous.retries = False
    health = env.run(TenantClusters(lambda s: ApiClient(anonymous)).check_health, HealthInput(spec=spec))
    assert not health.api_reachable and len(seen) == 2

    # http:// URLs (the local stack) get a plain client, no key pair read
    plain = tenant_api_factory(providers.tenant_admin_credentials, lambda s: "http://127.0.0.1:1/tenants/x")
    assert plain(small_kvm(id="no-such")).configuration.host == "http://127.0.0.1:1/tenants/x"


def test_an_aws_cluster_reaches_its_tls_tenant_api_with_the_admin_key_pair_from_secrets_manager(
    env: ActivityEnvironment,
    host: ApiClient,
    moto_url: str,
    tls_tenant_api: tuple[str, str, str, str, list[str]],
) -> None:
    """Issue 11's bug, fixed through the provider contract: the tenant API client asks the cluster's
    provider for the admin credentials, and AWS reads them from Secrets Manager, where the PKI
    activities wrote them (this test failed before: it looked for tenant-<id>/cert-admin)."""
    url, ca, certificate, key, seen = tls_tenant_api
    spec = _aws_spec()
    providers = worker_providers(host, moto_url)
    factory = tenant_api_factory(providers.tenant_admin_credentials, lambda s: url)  # as the worker wires it
    tenants = TenantClusters(factory)

    with pytest.raises(MissingPrerequisite, match=f"secretsmanager secret tenantctl/{spec.id}/admin does not exist"):
        env.run(tenants.check_health, HealthInput(spec=spec))
    assert not seen

    admin = next(r for r in certificate_requests(spec) if r.name == "admin")
    providers.key_pairs(spec.provider).write(spec.id, admin, _admin_pair(ca, certificate, key))  # as pki does
    health = env.run(tenants.check_health, HealthInput(spec=spec))
    assert health.api_reachable and health.api_detail == "v1.32.4" and health.healthy
    assert seen and all(s == "commonName=tenantctl-admin,organizationName=system:masters" for s in seen)
    with pytest.raises(Exception, match="404"):  # nothing of the cluster was ever looked for in the host
        CoreV1Api(host).read_namespace(kvm_namespace(spec.id))


# --- wiring ------------------------------------------------------------------------------------------
def test_every_tenant_activity_the_workflows_call_is_registered() -> None:
    stubs = (ROOT / "workflows" / "activity_stubs.py").read_text()
    called = set(re.findall(r'"(tenant\.\w+)"', stubs))
    from temporalio import activity

    registered = {
        activity._Definition.must_from_callable(fn).name
        for fn in activities_of(TenantClusters(plain_http_factory(lambda s: "http://unused")))
    }
    assert called and called == registered
