"""Every ``tenantctl`` command, given wrong arguments, a stopped stack, or a Temporal server with no
worker: one clear line and an exit code, never a traceback, never a wait of half a minute.

The CLI runs in-process (typer's CliRunner) against a real Temporal dev server; "stopped" is a
Temporal address where nothing listens.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

from models.naming import entity_workflow_id
from starter.cli import app
from tests.specs import EXAMPLES, small_kvm
from tests.workflows.helpers import start_entity
from workflows.cluster import ClusterWorkflow

# Every command that talks to a cluster, with valid arguments (the cluster need not exist).
CLUSTER_COMMANDS: list[list[str]] = [
    ["status", "acme-prod"],
    ["status", "acme-prod", "-o", "json"],
    ["watch", "acme-prod"],
    ["delete", "acme-prod"],
    ["protect", "acme-prod"],
    ["protect", "acme-prod", "--off"],
    ["rotate", "acme-prod"],
    ["rotate", "acme-prod", "--ca"],
    ["schedule", "pause", "acme-prod"],
    ["schedule", "resume", "acme-prod"],
    ["kubeconfig", "acme-prod", "--user", "alice", "--group", "devs"],
    ["upgrade", "acme-prod", "--version", "1.33.0"],
    ["upgrade", "pause", "acme-prod"],
    ["upgrade", "resume", "acme-prod"],
    ["upgrade", "abort", "acme-prod"],
]
# These need no worker: list reads visibility, schedule show the Schedules API.
ALL_TEMPORAL_COMMANDS = [
    *CLUSTER_COMMANDS,
    ["list"],
    ["schedule", "show", "acme-prod"],
    ["create", "-f", str(EXAMPLES / "kvm-cluster.yaml")],
]

MARKUP = "[/]"
LONG = "x" * 100_000
WRONG_ARGUMENTS: list[list[str]] = [
    [],
    ["no-such-command"],
    ["status"],
    ["status", MARKUP],
    ["status", LONG],
    ["status", "Acme_Prod"],
    ["status", "acme", "-o", "xml"],
    ["status", "acme", "extra"],
    ["list", "-o", MARKUP],
    ["watch"],
    ["watch", "[bold]x"],
    ["create"],
    ["create", "-f"],
    ["create", "-f", "/no/such/file.yaml"],
    ["create", "-f", "/"],
    ["create", "-f", MARKUP],
    ["delete"],
    ["delete", MARKUP],
    ["protect", "a", "--off=maybe"],
    ["rotate", "acme", "--ca", "--force"],
    ["rotate", MARKUP],
    ["schedule"],
    ["schedule", "show"],
    ["schedule", "explode", "acme"],
    ["schedule", "pause", "[red]"],
    ["kubeconfig", "acme"],
    ["kubeconfig", "acme", "--user", "a", "--group", "b", "--ttl", "99999999999999h"],
    ["kubeconfig", "acme", "--user", "a", "--group", "b", "--ttl", MARKUP],
    ["kubeconfig", "acme", "--user", " ", "--group", "b"],
    ["kubeconfig", MARKUP, "--user", "a", "--group", "b"],
    ["upgrade"],
    ["upgrade", "acme"],
    ["upgrade", "pause"],
    ["upgrade", "acme", "--version", MARKUP],
    ["upgrade", "acme", "--version", "1.33"],
    ["upgrade", "acme", "--version", "1.33.0", "--drain-timeout", "99999999999999h"],
    ["upgrade", "acme", "--version", "1.33.0", "--node-ready-timeout", "soon"],
    ["upgrade", "explode", "acme"],
    ["upgrade", MARKUP, "acme"],
    ["upgrade", LONG, "acme"],
    ["upgrade", "pause", MARKUP],
    ["upgrade", "pause", "acme", "--version", "1.33.0"],
    ["dev"],
    ["dev", "up", "--port", "bogus"],
    ["dev", "up", "--port", "temporal=notaport"],
    ["dev", "up", "-o", "xml"],
    ["dev", "status", "-o", MARKUP],
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


def run(args: list[str], env: dict[str, str]) -> tuple[Result, float]:
    began = time.monotonic()
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", "TENANTCTL_DEBUG": "", **env})
    return result, time.monotonic() - began


def assert_no_traceback(result: Result, args: list[str]) -> None:
    shown = f"tenantctl {' '.join(a[:40] for a in args)} -> {result.exit_code}:\n{result.output[:2000]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{shown}\n{result.exception!r}"
    assert "Traceback" not in result.output, shown
    assert "error: unexpected" not in result.output, shown  # the error boundary's last resort
    # a value is never echoed whole; the longest honest answer is the command list of a bare 'tenantctl'
    assert len(result.output) < 10_000, shown


@pytest.fixture
def stopped_stack_env(tmp_path: Path) -> dict[str, str]:
    return {"TENANTCTL_TEMPORAL_ADDRESS": f"127.0.0.1:{closed_port()}", "TENANTCTL_STATE_DIR": str(tmp_path)}


@pytest.mark.parametrize("args", WRONG_ARGUMENTS, ids=lambda a: " ".join(x[:12] for x in a) or "<none>")
def test_wrong_arguments_are_refused_without_traceback(args: list[str], stopped_stack_env: dict[str, str]) -> None:
    result, _ = run(args, stopped_stack_env)
    assert_no_traceback(result, args)
    assert result.exit_code in (1, 2), result.output  # a usage error, or a file that is no spec


@pytest.mark.parametrize("args", ALL_TEMPORAL_COMMANDS, ids=" ".join)
def test_stopped_stack_is_one_line_and_exit_3(args: list[str], stopped_stack_env: dict[str, str]) -> None:
    result, seconds = run(args, stopped_stack_env)
    assert_no_traceback(result, args)
    assert result.exit_code == 3, result.output
    assert "cannot reach Temporal" in result.output and "tenantctl dev up" in result.output, result.output
    assert seconds < 15, seconds


def test_dev_commands_on_a_stack_that_never_ran(stopped_stack_env: dict[str, str], tmp_path: Path) -> None:
    status, _ = run(["dev", "status", "--state-dir", str(tmp_path / "never")], stopped_stack_env)
    down, _ = run(["dev", "down", "--state-dir", str(tmp_path / "never")], stopped_stack_env)
    for args, result in ((["dev", "status"], status), (["dev", "down"], down)):
        assert_no_traceback(result, args)
    assert status.exit_code == 1 and "down" in status.output, status.output
    assert down.exit_code == 0, down.output


async def test_no_worker_is_said_in_seconds(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """A Temporal server with no worker on the task queue: every command that needs one says so at once
    (and ``create`` without ``--watch`` starts the cluster with a warning)."""
    queue = f"no-worker-{uuid.uuid4().hex[:8]}"
    env = {
        "TENANTCTL_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "TENANTCTL_TEMPORAL_TASK_QUEUE": queue,
        "TENANTCTL_STATE_DIR": str(tmp_path),
    }
    spec = small_kvm()
    await start_entity(temporal_env.client, spec, queue)  # exists, but nobody runs it
    for command in CLUSTER_COMMANDS:
        args = [spec.id if a == "acme-prod" else a for a in command]
        result, seconds = await asyncio.to_thread(run, args, env)
        assert_no_traceback(result, args)
        assert result.exit_code == 3, (args, result.output)
        assert f"no worker is polling task queue {queue}" in " ".join(result.output.split()), (args, result.output)
        assert "accepted" not in result.output, (args, result.output)
        assert seconds < 5, (args, seconds)
    listed, _ = await asyncio.to_thread(run, ["list"], env)
    assert listed.exit_code == 0, listed.output  # list reads visibility: no worker needed
    schedule, _ = await asyncio.to_thread(run, ["schedule", "show", spec.id], env)
    assert schedule.exit_code == 1 and "has no rotation schedule" in schedule.output, schedule.output

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text((EXAMPLES / "kvm-cluster.yaml").read_text().replace("id: acme-prod", f"id: {spec.id}-2"))
    created, _ = await asyncio.to_thread(run, ["create", "-f", str(spec_file)], env)
    assert created.exit_code == 0 and "warning: no worker is polling" in " ".join(created.output.split())
    watched, seconds = await asyncio.to_thread(run, ["create", "-f", str(spec_file), "--watch"], env)
    assert watched.exit_code == 3 and "no worker is polling" in watched.output and seconds < 5
    await temporal_env.client.get_workflow_handle(entity_workflow_id(f"{spec.id}-2")).terminate("test done")
    await temporal_env.client.get_workflow_handle(entity_workflow_id(spec.id)).terminate("test done")


async def test_a_worker_that_just_stopped_is_reported_within_the_query_timeout(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Temporal lists a stopped worker's pollers for a while: then the status query's own timeout
    (10 s) ends the wait, with a message, not a traceback."""
    queue = f"stopped-worker-{uuid.uuid4().hex[:8]}"
    env = {
        "TENANTCTL_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "TENANTCTL_TEMPORAL_TASK_QUEUE": queue,
        "TENANTCTL_STATE_DIR": str(tmp_path),
    }
    async with Worker(temporal_env.client, task_queue=queue, workflows=[ClusterWorkflow]):
        await asyncio.sleep(1)  # the worker polls
    spec = small_kvm()
    await start_entity(temporal_env.client, spec, queue)
    result, seconds = await asyncio.to_thread(run, ["status", spec.id], env)
    assert_no_traceback(result, ["status", spec.id])
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "no worker answered within 10s" in text or f"no worker is polling task queue {queue}" in text, text
    assert seconds < 15, seconds
    print(f"\nstatus with a just-stopped worker: exit 3 after {seconds:.1f}s")  # noqa: T201
    await temporal_env.client.get_workflow_handle(entity_workflow_id(spec.id)).terminate("test done")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TENANTCTL_CALL_RETRIES", "many"), ("TENANTCTL_LOG_LEVEL", "[/]"), ("TENANTCTL_KUBE_API_QPS", "-1")],
)
def test_invalid_settings_are_one_line(variable: str, value: str, stopped_stack_env: dict[str, str]) -> None:
    result, _ = run(["status", "acme-prod"], {**stopped_stack_env, variable: value})
    assert_no_traceback(result, ["status", "acme-prod"])
    assert result.exit_code == 2 and "invalid settings" in result.output and variable in result.output, result.output
