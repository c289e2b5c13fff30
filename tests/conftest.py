"""Shared fixtures: one real instance of each backend per test session.

Layers (see README "Tests"): pure logic needs none; activity tests use the backend they drive;
workflow-logic tests use the time-skipping server with activities mocked by name; end-to-end
tests use a full local stack through the CLI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.servers import SERVER_STARTUP_TIMEOUT, OpenBao, binary, moto_server, openbao_dev, start_time_skipping
from workflows.search_attributes import ALL_KEYS

# boto3 must never reach real AWS from tests, whatever the developer's environment holds.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-central-1",
    }
)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def openbao(session_dir: Path) -> Iterator[OpenBao]:
    with openbao_dev(session_dir) as server:
        yield server


@pytest.fixture(scope="session")
def moto_url(session_dir: Path) -> Iterator[str]:
    with moto_server(session_dir) as url:
        yield url


@pytest.fixture(scope="session")
def kube_emulator(session_dir: Path) -> Iterator[object]:
    from devstack.kube_emulator import Emulator

    emulator = Emulator(port=0, ready_delay=0.2)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server with the project's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        search_attributes=ALL_KEYS,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"],
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    # One server per test module: a workflow another module left with pending work (an activity no
    # worker will run any more) stops a shared server's time skipping, and then every later test
    # that waits on a durable timer hangs until its timeout.
    env = await start_time_skipping()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


def pytest_report_header() -> list[str]:
    return [f"kubectl: {shutil.which('kubectl') or 'not installed'}"]
