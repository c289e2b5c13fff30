"""A real worker process's probes and Prometheus endpoint, scraped while it creates, pauses and
deletes a KVM cluster on the local stack (Temporal dev server, OpenBao, host API emulator), the
worker logged in to OpenBao with an AppRole of deploy/vault's policy, not the stack's root token."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import hvac
import pytest
from dotenv import dotenv_values
from prometheus_client.parser import text_string_to_metric_families

from starter.clusters import get_status
from tests.deploy.promql import exported_names
from tests.deploy.test_monitoring import all_named_metrics
from tests.deploy.vault_helpers import approle, install_worker_policy
from tests.e2e.conftest import Stack, WorkerProcess, slow_host_api, stack_settings, wait_for, write_spec
from tests.servers import free_port
from tests.specs import small_kvm, unique_id
from worker import metrics as m
from worker.clients import connect_temporal
from worker.health import TERMINATION_GRACE

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(url: str) -> Samples:
    status, text = get(url)
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum over the series of ``name`` whose labels include ``labels`` (None: no such series)."""
    found = [v for (n, have), v in samples.items() if n == name and set(labels.items()) <= have]
    return sum(found) if found else None


def eventually(url: str, check: Callable[[Samples], bool], what: str, timeout: float = 60) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.fixture
def endpoints() -> dict[str, str]:
    return {"health": f"127.0.0.1:{free_port()}", "metrics": f"127.0.0.1:{free_port()}"}


# the stack's own worker identity, replaced here by a short-TTL AppRole
STACK_VAULT_IDENTITY = {"TENANTCTL_VAULT_TOKEN", "TENANTCTL_VAULT_ROLE_ID", "TENANTCTL_VAULT_SECRET_ID"}


@pytest.fixture
def worker_identity(local_stack: Stack, tmp_path: Path) -> Path:
    """A state folder whose stack.env gives the worker an AppRole of deploy/vault's policy instead of
    the stack's root token, with a TTL that runs out several times during the test."""
    env = {**dotenv_values(local_stack.state_dir / "stack.env"), **local_stack.env}
    env = {k: v for k, v in env.items() if k.startswith("TENANTCTL_") and v is not None}
    root = hvac.Client(url=env["TENANTCTL_VAULT_ADDR"], token=local_stack.stack.vault_root_token())
    install_worker_policy(root)
    # tokens capped at 4 s: even a fast lifecycle (~6 s, idle machine) outlives one: the worker logs in again
    mount, role_id, secret_id = approle(root, token_ttl="2s", token_max_ttl="4s")
    state = tmp_path / "worker-state"
    state.mkdir()
    lines = [f"{key}={value}" for key, value in env.items() if key not in STACK_VAULT_IDENTITY]
    lines += [
        f"TENANTCTL_VAULT_ROLE_ID={role_id}",
        f"TENANTCTL_VAULT_SECRET_ID={secret_id}",
        f"TENANTCTL_VAULT_APPROLE_MOUNT={mount}",
    ]
    (state / "stack.env").write_text("\n".join(lines) + "\n")
    (state / "stack.env").chmod(0o600)
    return state


@pytest.fixture
def worker(
    local_stack: Stack, endpoints: dict[str, str], worker_identity: Path, tmp_path: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        env={
            **{k: v for k, v in local_stack.env.items() if k not in STACK_VAULT_IDENTITY},
            "TENANTCTL_STATE_DIR": str(worker_identity),
            "TENANTCTL_HEALTH_ADDRESS": endpoints["health"],
            "TENANTCTL_METRICS_ADDRESS": endpoints["metrics"],
            "TENANTCTL_METRICS_REFRESH_SECONDS": "0.5",
            "TENANTCTL_STICKY_QUEUE_TIMEOUT_SECONDS": "1",  # a restarted worker takes over at once
        },
        log=tmp_path / "worker",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_probes_and_metrics_follow_a_cluster_through_its_life(
    local_stack: Stack, worker: WorkerProcess, endpoints: dict[str, str], tmp_path: Path
) -> None:
    health, url = f"http://{endpoints['health']}", f"http://{endpoints['metrics']}/metrics"
    assert get(f"{health}/livez") == (200, "ok\n")
    assert get(f"{health}/readyz") == (200, "polling\n")
    assert get(f"{health}/nothing")[0] == 404

    spec = small_kvm(id=unique_id("metrics"))
    local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)), "--watch")
    created = datetime.now(UTC).timestamp()
    cluster = {"cluster": spec.id}
    samples = eventually(
        url,
        lambda s: value(s, m.CLUSTER_READY, **cluster) == 1 and value(s, m.SCHEDULE_PRESENT, **cluster) == 1,
        f"{spec.id} ready in the fleet metrics",
    )
    labels = {"phase": "Ready", "provider": "kvm", "version": spec.kubernetes_version}
    assert value(samples, m.CLUSTERS, **labels) == 1
    assert value(samples, m.CLUSTER_INFO, **cluster, **labels) == 1
    expiry = value(samples, m.CERTIFICATE_EXPIRY, **cluster)
    ttl = spec.certificates.ttl.total_seconds()
    assert expiry is not None and created - 120 < expiry - ttl <= created + 1, (expiry, created, ttl)
    assert value(samples, m.SCHEDULE_PAUSED, **cluster) == 0
    assert value(samples, m.OPERATION_BLOCKED, **cluster) is None
    # operations: counted by the worker that ran them, with the SDK's exporter
    create = {"kind": "create"}
    assert value(samples, f"{m.OPERATIONS_STARTED}_total", **create) == 1
    assert value(samples, f"{m.OPERATIONS_FINISHED}_total", **create, outcome="succeeded") == 1
    assert value(samples, f"{m.OPERATION_DURATION}_count", **create, outcome="succeeded") == 1
    took = value(samples, f"{m.OPERATION_DURATION}_sum", **create, outcome="succeeded")
    assert took is not None and 0 < took < 120
    # the SDK's own runtime metrics come through the same endpoint
    assert any(name.startswith("temporal_") for name, _ in samples), "no Temporal SDK metrics"
    assert value(samples, "temporal_workflow_completed_total", workflow_type="ProvisionCluster") is not None

    local_stack.cli("schedule", "pause", spec.id)
    eventually(url, lambda s: value(s, m.SCHEDULE_PAUSED, **cluster) == 1, "the paused schedule")

    local_stack.cli("delete", spec.id)
    samples = eventually(url, lambda s: value(s, m.CLUSTER_INFO, **cluster) is None, f"{spec.id} gone")
    assert value(samples, m.CERTIFICATE_EXPIRY, **cluster) is None  # no stale expiry to alert on
    assert value(samples, f"{m.OPERATIONS_FINISHED}_total", kind="delete", outcome="succeeded") == 1
    assert (value(samples, f"{m.FLEET_REFRESH_ERRORS}_total") or 0) == 0

    # every metric the alerts and the dashboard name, SDK ones included, is on this live endpoint
    missing = all_named_metrics() - exported_names(get(url)[1])
    assert not missing, f"deploy/monitoring names metrics the worker does not export: {sorted(missing)}"

    assert worker.stop() == 0
    output = worker.output()
    assert "worker stopped" in output
    # the worker ran under the least-privilege policy, its short-lived token replaced on the way
    assert output.count("logged in to Vault") >= 2 and "policies tenantctl_worker" in output


async def test_sigterm_makes_the_worker_unready_and_hands_its_work_on(
    local_stack: Stack, worker: WorkerProcess, endpoints: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM mid-operation: not ready at once, exit 0 within the pod's grace period, and the
    operation finishes on the next worker (what a rolling update of the Deployment does)."""
    health = f"http://{endpoints['health']}/readyz"
    spec = small_kvm(id=unique_id("sigterm"))
    client = await connect_temporal(stack_settings(local_stack))

    async def provisioning_nodes() -> bool:
        current = (await get_status(client, spec.id)).current  # the running operation's own steps
        return current is not None and any(s.name == "nodes" and s.state == "running" for s in current.steps)

    with slow_host_api(local_stack, 400):
        local_stack.cli("create", "-f", str(write_spec(tmp_path, spec)))
        await wait_for(provisioning_nodes, f"{spec.id} to provision its nodes")
        assert worker.proc is not None
        signalled = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        seen = []
        while worker.proc.poll() is None and len(seen) < 20:
            try:
                seen.append(get(health)[0])
            except OSError:
                break  # the probe server is gone: the worker is leaving
            time.sleep(0.05)
        code = worker.proc.wait(timeout=TERMINATION_GRACE.total_seconds())
        took = time.monotonic() - signalled
    # a probe may still be answered before the signal handler has run; once unready, it stays unready
    assert 503 in seen and 200 not in seen[seen.index(503) :], seen
    assert code == 0 and took < TERMINATION_GRACE.total_seconds()
    assert "shutting down: in-flight activities get up to" in worker.output()

    worker.start()  # the next worker picks the operation up where it was
    local_stack.cli("watch", spec.id, timeout=300)
    status = json.loads(local_stack.cli("status", spec.id, "-o", "json").stdout)
    assert status["phase"] == "Ready"
    local_stack.cli("delete", spec.id)
