"""The fault suite's quick subset (issue 14), run in CI as ordinary tests on a local stack of its own
with two workers: a worker SIGKILLed at a random moment of a KVM and of an AWS create (the other
worker takes over), OpenBao paused (SIGSTOP) mid-create, AWS answering 20% of requests with
``Throttling``/503 through a proxy in front of moto, and no private key in any history or worker log
of these runs. Each case counts what exists afterwards (host objects by label, AWS resources by tag,
Vault mount/roles/policy/valid leaves, nodes): nothing duplicated, nothing missing, and nothing left
after the teardown. ``make faults`` runs every case (tests/faults/suite.py).
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Iterator

import pytest

from devstack.services import OPENBAO
from models.cluster import ClusterPhase
from models.spec import ClusterSpec
from tests.faults.cases import (
    FaultStack,
    aws_throttling,
    connect,
    fault_stack,
    history_holds_private_key,
    inventory,
    kill_a_worker_at_random,
    private_keys_in_histories,
    private_keys_in_logs,
    process_paused,
    run_operation,
    schedule_exists,
    spec_for,
)

pytestmark = pytest.mark.stack

KILL_WITHIN_SECONDS = 2.0
"""A create takes a few seconds here: the kill falls somewhere in its first two."""
OPENBAO_PAUSE_SECONDS = 5.0


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    root = tmp_path_factory.mktemp("faults")
    (root / "stack").mkdir()
    (root / "logs").mkdir()
    with fault_stack(root / "stack", root / "logs") as stack:
        yield stack


async def create_then_teardown(faults: FaultStack, spec: ClusterSpec, killing: asyncio.Task[str] | None) -> str:
    """Create (with whatever fault runs beside it), count, tear down, count again."""
    began = time.monotonic()
    status, _ = await run_operation(faults, spec, "create")
    took = time.monotonic() - began
    try:
        killed = (await killing) if killing is not None else "no kill"
    finally:
        faults.restart_workers()  # whatever happens here, the next case starts with two workers
    assert status.phase is ClusterPhase.READY, status.message
    # A worker killed between issuing certificates and storing them leaves valid leaves nobody holds;
    # the retried attempt revokes them, so the count is exact (valid leaves included) even after a kill.
    counted = inventory(faults, spec, status)
    assert counted.problems == [], counted.problems  # nothing duplicated, nothing missing
    assert len(status.nodes) == len(spec.node_names())
    status, error = await run_operation(faults, spec, "teardown")
    assert status.phase is ClusterPhase.DELETED, error or status.message
    left = inventory(faults, spec, None)
    assert left.problems == [] and not await schedule_exists(faults, spec.id), left.problems  # nothing left
    return f"create {took:.1f}s ({killed}); {sum(counted.found.values())} objects counted, 0 left after teardown"


@pytest.mark.parametrize("provider", ["kvm", "aws"])
async def test_a_worker_sigkilled_mid_create_is_taken_over_by_the_other(faults: FaultStack, provider: str) -> None:
    spec = spec_for(provider)
    await connect(faults)
    killing = asyncio.create_task(kill_a_worker_at_random(faults, spec.id, random.Random(), KILL_WITHIN_SECONDS))
    outcome = await create_then_teardown(faults, spec, killing)
    print(f"\n{provider} SIGKILL mid-create: {outcome}")  # noqa: T201


async def test_openbao_paused_mid_create(faults: FaultStack) -> None:
    spec = spec_for("kvm")
    await connect(faults)

    async def pause() -> str:
        await asyncio.sleep(0.5)  # the create is under way: the CA or the certificates wait for Vault
        with process_paused(faults.pid(OPENBAO)):
            await asyncio.sleep(OPENBAO_PAUSE_SECONDS)
        return f"OpenBao paused {OPENBAO_PAUSE_SECONDS:.0f}s"

    outcome = await create_then_teardown(faults, spec, asyncio.create_task(pause()))
    print(f"\nOpenBao SIGSTOP mid-create: {outcome}")  # noqa: T201


async def test_aws_throttling_through_a_proxy_in_front_of_moto(faults: FaultStack) -> None:
    spec = spec_for("aws")
    faults.aws_faults.respond, faults.aws_faults.error_rate = aws_throttling, 0.2
    failed_before = sum(faults.aws_faults.failed.values())
    try:
        outcome = await create_then_teardown(faults, spec, None)
    finally:
        faults.aws_faults.error_rate = 0.0
    throttled = sum(faults.aws_faults.failed.values()) - failed_before
    forwarded = sum(faults.aws_faults.forwarded.values())
    assert throttled > 0
    print(f"\nAWS 20% Throttling/503: {outcome}; {throttled} requests refused, {forwarded} forwarded")  # noqa: T201


def test_the_private_key_scan_finds_a_key_in_a_payload_and_in_plain_text() -> None:
    marker = b"PRIVATE" + b" KEY-----"  # assembled here: the repository holds no PEM key block
    pem = b"-----BEGIN EC " + marker + b"\nMHcCAQEE\n-----END EC " + marker + b"\n"
    payload = {"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": base64.b64encode(b'{"k": "%s"}' % pem).decode()}
    assert history_holds_private_key({"events": [{"input": {"payloads": [payload]}}]})
    assert history_holds_private_key({"events": [{"details": pem.decode()}]})
    secret_data = {"metadata": {}, "data": base64.b64encode(base64.b64encode(pem)).decode()}  # a Secret's data
    assert history_holds_private_key({"events": [secret_data]})
    assert not history_holds_private_key({"events": [{"details": "-----BEGIN CERTIFICATE-----"}]})


async def test_no_private_key_in_any_history_or_worker_log(faults: FaultStack) -> None:
    """Runs last: the histories of every workflow above (creates, teardowns, rotations they
    scheduled) and every worker log, killed ones included."""
    client = await connect(faults)
    scanned, events, holding = await private_keys_in_histories(client)
    logs = faults.logs()
    assert scanned >= 3 and logs, (scanned, logs)  # a create, its provision and its teardown at least
    assert holding == [], holding
    assert private_keys_in_logs(logs) == []
    print(f"\nprivate keys: 0 in {scanned} histories ({events} events) and {len(logs)} worker logs")  # noqa: T201
