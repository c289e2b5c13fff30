"""The local stack against the real binaries: up, status, endpoints, idempotence, CLI, down, persistence.

The tests of this module share one stack (see conftest), and each starts from the same state: the
``stack`` fixture runs ``up`` first, which restarts whatever an earlier test killed or stopped and
stops a worker an earlier test started. Any test can run alone or in any order.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import hvac
import pytest
from dotenv import dotenv_values
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from typer.testing import CliRunner

from config.settings import ENV_PREFIX, STACK_ENV_FILE, Settings, load_settings
from devstack.processes import alive
from devstack.stack import (
    BASE_SERVICES,
    EMULATOR,
    MARKER_ENV,
    MOTO,
    PROJECT_ROOT,
    WORKER,
    LocalStack,
    ServiceStatus,
    StackEndpoints,
    StackState,
)
from starter.dev_commands import dev_app
from tests.devstack.conftest import HOLD_PORT, TIMINGS, running, stack_processes, wait_until
from workflows.search_attributes import ALL_KEYS, CLUSTER_ID

pytestmark = pytest.mark.stack

runner = CliRunner()


def recorded(stack: LocalStack) -> StackState:
    return StackState.model_validate_json(stack.stack_file.read_text())


def service_status(stack: LocalStack, name: str) -> ServiceStatus:
    return next(s for s in stack.status() if s.name == name)


def reap_or_gone(pid: int, start_ticks: int) -> bool:
    """The killed process is gone (reaped here when this interpreter started it)."""
    return not alive(pid, start_ticks)


def kube_core(kubeconfig: Path) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]


def vault(stack: LocalStack) -> hvac.Client:
    """OpenBao as root: asked for explicitly (the endpoints carry the worker's AppRole only)."""
    return hvac.Client(url=stack.endpoints().vault_addr, token=stack.vault_root_token())


def ec2(endpoints: StackEndpoints) -> object:
    return boto3.client(
        "ec2",
        endpoint_url=endpoints.aws_endpoint_url,
        region_name=endpoints.aws_region,
        aws_access_key_id=endpoints.aws_access_key_id,
        aws_secret_access_key=endpoints.aws_secret_access_key.get_secret_value(),
    )


async def temporal(endpoints: StackEndpoints) -> Client:
    return await Client.connect(endpoints.temporal_address, namespace=endpoints.temporal_namespace)


# --- up -------------------------------------------------------------------------------------------


def test_every_service_is_up_and_healthy(stack: LocalStack) -> None:
    statuses = {s.name: s for s in stack.status()}
    assert list(statuses) == list(BASE_SERVICES)
    unhealthy = {name: s.detail for name, s in statuses.items() if not s.healthy}
    assert not unhealthy
    assert all(s.pid for s in statuses.values())
    assert statuses["temporal"].url == stack.endpoints().temporal_ui_url
    assert "no state across a restart" in statuses["moto"].detail  # said plainly where it matters
    state = recorded(stack)
    assert set(state.services) == set(BASE_SERVICES)
    for name, record in state.services.items():
        assert running(record.pid, record.start_ticks), name
        assert Path(record.log) == stack.state_dir / "logs" / f"{name}.log"
        assert Path(record.log).exists()


def test_env_file_holds_only_settings_fields_and_is_private(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = stack.endpoints()
    env_file = stack.state_dir / STACK_ENV_FILE
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((stack.state_dir / "openbao" / "init.json").stat().st_mode) == 0o600
    written = dotenv_values(env_file)
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert set(written) <= fields, set(written) - fields
    assert written == endpoints.as_env()
    assert set(endpoints.as_env()) <= fields
    for key in (
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "TEMPORAL_UI_URL",
        "VAULT_ADDR",
        "VAULT_ROLE_ID",
        "VAULT_SECRET_ID",
        "KUBECONFIG",
        "TENANT_API_URL_TEMPLATE",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert written.get(ENV_PREFIX + key), key
    # the worker and CLI pick the stack up with no flags: only the state folder is known
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv(f"{ENV_PREFIX}STATE_DIR", str(stack.state_dir))
    settings = load_settings()
    assert settings.temporal_address == endpoints.temporal_address
    assert settings.vault_token is None  # the worker's AppRole, never the root token
    assert settings.vault_role_id == endpoints.vault_role_id
    assert settings.vault_secret_id is not None and endpoints.vault_secret_id is not None
    assert settings.vault_secret_id.get_secret_value() == endpoints.vault_secret_id.get_secret_value()
    assert settings.kubeconfig == stack.state_dir / "kubeconfig"
    assert settings.aws_endpoint_url == endpoints.aws_endpoint_url
    assert settings.tenant_api_url("acme", "example.org") == f"{endpoints.kube_api_url}/tenants/acme"
    assert endpoints.vault_secret_id.get_secret_value() not in repr(endpoints)
    assert stack.vault_root_token() not in env_file.read_text()


async def test_temporal_answers_with_the_search_attributes(stack: LocalStack) -> None:
    endpoints = stack.endpoints()
    client = await temporal(endpoints)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=endpoints.temporal_namespace)
    )
    for key in ALL_KEYS:
        assert listed.custom_attributes.get(key.name) == int(key.indexed_value_type), key.name


def test_openbao_is_a_real_unsealed_server(stack: LocalStack) -> None:
    bao = vault(stack)
    health = bao.sys.read_health_status(method="GET")
    assert health["initialized"] and not health["sealed"] and not health["standby"]
    assert bao.is_authenticated()


def test_moto_serves_ec2(stack: LocalStack) -> None:
    vpcs = ec2(stack.endpoints()).describe_vpcs()["Vpcs"]  # type: ignore[attr-defined]
    assert vpcs  # moto's default VPC


def test_kubeconfig_reaches_the_emulator(stack: LocalStack) -> None:
    endpoints = stack.endpoints()
    names = {ns.metadata.name for ns in kube_core(endpoints.kubeconfig).list_namespace().items if ns.metadata}
    assert "default" in names


# --- idempotence ----------------------------------------------------------------------------------


def test_up_twice_keeps_the_same_processes(stack: LocalStack) -> None:
    before = {name: r.pid for name, r in recorded(stack).services.items()}
    began = time.monotonic()
    stack.up()
    TIMINGS["warm up"] = time.monotonic() - began
    assert stack.started == [] and sorted(stack.kept) == sorted(BASE_SERVICES)
    assert {name: r.pid for name, r in recorded(stack).services.items()} == before


def test_a_dead_service_is_restarted_and_the_others_kept(stack: LocalStack) -> None:
    moto = recorded(stack).services["moto"]
    os.killpg(moto.pid, signal.SIGKILL)
    assert wait_until(lambda: "not running" in service_status(stack, "moto").detail, timeout=20)
    stack.up()
    assert stack.started == ["moto"]
    assert sorted(stack.kept) == sorted(set(BASE_SERVICES) - {"moto"})
    assert recorded(stack).services["moto"].pid != moto.pid
    assert all(s.healthy for s in stack.status())


def test_cli_up_right_after_a_sigkill_restarts_the_killed_services(stack: LocalStack) -> None:
    """The user's case: a service crashes and `tenantctl dev up` (another process) runs at once,
    while the kernel may still be tearing the killed processes down and their ports are held."""
    before = recorded(stack).services
    killed = {MOTO: before[MOTO], EMULATOR: before[EMULATOR]}
    for record in killed.values():
        os.killpg(record.pid, signal.SIGKILL)
    tenantctl = str(Path(sys.executable).parent / "tenantctl")
    result = subprocess.run(
        [tenantctl, "dev", "up", "--state-dir", str(stack.state_dir), "--no-worker", "-o", "json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["started"]) == sorted(killed)
    assert sorted(report["kept"]) == sorted(set(BASE_SERVICES) - set(killed))
    after = recorded(stack).services
    for name, record in killed.items():
        assert after[name].pid != record.pid, name
        assert wait_until(lambda record=record: reap_or_gone(record.pid, record.start_ticks)), name
    assert {name: after[name].pid for name in set(BASE_SERVICES) - set(killed)} == {
        name: before[name].pid for name in set(BASE_SERVICES) - set(killed)
    }
    assert all(row["healthy"] for row in report["services"])


def test_up_waits_for_a_port_a_process_of_the_stack_still_holds(stack: LocalStack) -> None:
    """A dead service's port held for a moment longer by a process of this stack (an exiting child,
    a socket not closed yet): `up` waits for it to be released instead of failing at once."""
    moto = recorded(stack).services[MOTO]
    os.killpg(moto.pid, signal.SIGKILL)
    assert wait_until(lambda: reap_or_gone(moto.pid, moto.start_ticks), timeout=20)
    port = moto.ports["moto"]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_PORT, str(port), "1.5"],
        env={**os.environ, MARKER_ENV: str(stack.state_dir)},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"bound"
        stack.up()
        assert holder.wait(timeout=10) == 0  # it let go of the port, and only then did moto start
        assert stack.started == [MOTO]
        assert service_status(stack, MOTO).healthy
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_status_and_warm_up(stack: LocalStack) -> None:
    result = runner.invoke(dev_app, ["status", "--state-dir", str(stack.state_dir)])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in BASE_SERVICES)
    assert stack.endpoints().temporal_ui_url in result.output

    result = runner.invoke(dev_app, ["status", "--state-dir", str(stack.state_dir), "-o", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == list(BASE_SERVICES) and all(row["healthy"] for row in rows)

    pids = {name: r.pid for name, r in recorded(stack).services.items()}
    result = runner.invoke(dev_app, ["up", "--state-dir", str(stack.state_dir), "--no-worker"])
    assert result.exit_code == 0, result.output
    assert "Temporal UI" in result.output and stack.endpoints().temporal_ui_url in result.output
    assert "started: nothing" in result.output
    assert {name: r.pid for name, r in recorded(stack).services.items()} == pids  # ports came from stack.json


def test_python_m_devstack_status(stack: LocalStack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "status", "--state-dir", str(stack.state_dir), "-o", "json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert result.stdout.strip(), result.stderr
    rows = json.loads(result.stdout)
    assert result.returncode == 0 and rows and all(row["healthy"] for row in rows), [
        (row["name"], row["detail"]) for row in rows if not row["healthy"]
    ] or result.stderr


# --- worker ---------------------------------------------------------------------------------------


def test_worker_runs_with_the_stack_settings(stack: LocalStack) -> None:
    if not (PROJECT_ROOT / "worker" / "__main__.py").exists():
        pytest.skip("worker/__main__.py does not exist yet: the worker part of the stack is not wired")
    with_worker = LocalStack(stack.state_dir, with_worker=True)
    endpoints = with_worker.up()
    assert with_worker.started == [WORKER] and sorted(with_worker.kept) == sorted(BASE_SERVICES)
    worker = next(s for s in with_worker.status() if s.name == WORKER)
    assert worker.healthy, worker.detail
    assert "polling" in worker.detail
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{worker.pid}/environ").read_text().split("\0") if "=" in item
    )
    for key, value in endpoints.as_env().items():
        assert environ[key] == value, key
    assert stack.status()[-1].name == WORKER  # status shows a recorded worker even when not asked for


# --- down, and up again from the same folder ------------------------------------------------------


async def test_down_leaves_nothing_and_up_brings_the_data_back(stack: LocalStack) -> None:
    endpoints = stack.endpoints()
    probe = f"devstack-probe-{uuid.uuid4().hex[:6]}"
    # data in every backend
    client = await temporal(endpoints)
    handle = await client.start_workflow(
        "DevstackProbe",
        id=probe,
        task_queue=f"{probe}-nobody-polls",
        search_attributes=TypedSearchAttributes([SearchAttributePair(CLUSTER_ID, probe)]),
    )
    vault(stack).sys.enable_secrets_engine("pki", path=f"pki/{probe}")
    kube_core(endpoints.kubeconfig).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=probe)))
    vpc = ec2(endpoints).create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]  # type: ignore[attr-defined]
    time.sleep(0.5)  # the emulator saves its state file debounced

    # a process carrying the stack's marker that down did not start: must survive
    bystander = subprocess.Popen(
        ["sleep", "60"], env={**os.environ, MARKER_ENV: str(stack.state_dir)}, start_new_session=True
    )
    try:
        records = recorded(stack).services
        began = time.monotonic()
        messages = stack.down()
        TIMINGS["down"] = time.monotonic() - began
        for name, record in records.items():
            assert f"stopped {name} (pid {record.pid}" in "\n".join(messages)
            assert not running(record.pid, record.start_ticks), name
        assert "moto starts empty" in messages[-1]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    assert stack_processes(stack.state_dir) == []
    assert recorded(stack).services == {}
    assert not any(s.healthy for s in stack.status())
    assert runner.invoke(dev_app, ["status", "--state-dir", str(stack.state_dir)]).exit_code == 1
    assert stack.down()[0].startswith("no process of the stack")  # down twice is harmless

    began = time.monotonic()
    endpoints = stack.up()
    TIMINGS["up after down"] = time.monotonic() - began
    assert sorted(stack.started) == sorted(BASE_SERVICES)
    client = await temporal(endpoints)
    description = await client.get_workflow_handle(handle.id, run_id=handle.result_run_id).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert description.typed_search_attributes.get(CLUSTER_ID) == probe
    mounts = vault(stack).sys.list_mounted_secrets_engines()["data"]
    assert f"pki/{probe}/" in mounts  # raft kept the mount
    restored = kube_core(endpoints.kubeconfig).read_namespace(probe).metadata
    assert restored is not None and restored.name == probe
    vpcs = ec2(endpoints).describe_vpcs()["Vpcs"]  # type: ignore[attr-defined]
    assert vpc not in {v["VpcId"] for v in vpcs}  # moto starts empty, as documented
