"""``make faults``: the whole fault suite (issue 14), a measurement that also checks outcomes.

On a local stack of its own (free ports, a temporary state folder) with two workers of this checkout:

1. Worker SIGKILL at a random moment of every operation on both providers: for KVM and AWS, one
   lifecycle unkilled (the baseline), then one where each operation — create, scale, upgrade,
   rotation, CA rotation, drift repair (reconcile), teardown — has the worker that runs one of its
   activities SIGKILLed at a random moment. The other worker takes over; the delay is the
   operation's time against the baseline's.
2. Backends: Temporal server kill -9 and restart; OpenBao paused (SIGSTOP), killed and restarted,
   sealed and unsealed; the host API answering 20% of requests with 500/503/429 and 200 ms late (against
   the latency alone), and a 10 s host-API outage; AWS answering 20% of requests with ``Throttling``
   400s / 503s through a proxy in front of moto; moto restarted mid-create (AWS state lost: the
   create must fail saying what is missing, and the teardown must still finish).

After every operation it counts what exists (host objects by label, AWS resources by tag, Vault
mount/roles/policy/valid leaves, nodes) against the spec: nothing duplicated, nothing missing
(valid leaves no key pair holds are counted, and must be gone after the drift repair); after every
teardown nothing may be left. Last, every history and worker log of the run is scanned for PEM
private keys. Prints a line per case and a table; exits 1 when any outcome is wrong.

Run: ``make faults`` (about 15-25 min on a loaded 2-core machine; ``ROUNDS=2`` repeats the kills).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.services import MOTO, OPENBAO, TEMPORAL
from models.cluster import ClusterPhase
from models.spec import ClusterSpec
from tests.faults.cases import (
    OPERATIONS,
    PROVIDERS,
    FaultStack,
    aws_throttling,
    connect,
    fault_stack,
    inventory,
    kill_a_worker_at_random,
    kill_and_restart,
    private_keys_in_histories,
    private_keys_in_logs,
    process_paused,
    run_operation,
    schedule_exists,
    seal_and_unseal,
    spec_for,
)
from tests.faults.create_under_faults import set_faults

GOAL = {op: ClusterPhase.DELETED if op == "teardown" else ClusterPhase.READY for op in OPERATIONS}
EXACT_LEAVES_AFTER = {"create", "reconcile", "teardown"}
"""After these no valid leaf may lack a key pair; after the others superseded ones wait for the repair."""


@dataclass
class Row:
    case: str
    seconds: float
    baseline: float | None
    outcome: str
    ok: bool

    def figure(self) -> str:
        if self.baseline is None:
            return ""
        return f"{self.seconds - self.baseline:+.1f}s ({self.seconds / self.baseline:.2f}x)"


def report(row: Row) -> Row:
    mark = "ok  " if row.ok else "FAIL"
    print(f"{mark} {row.case:44s} {row.seconds:6.1f}s {row.figure():20s} {row.outcome}", flush=True)  # noqa: T201
    return row


async def lifecycle(
    faults: FaultStack, provider: str, rng: random.Random | None, baseline: dict[str, float]
) -> list[Row]:
    """Every operation once on a fresh cluster; with ``rng``, a worker killed at random in each."""
    spec, rows = spec_for(provider), []
    for op in OPERATIONS:
        faults.restart_workers()
        within = 0.8 * baseline.get(op, 3.0)
        killing = asyncio.create_task(kill_a_worker_at_random(faults, spec.id, rng, within)) if rng else None
        began = time.monotonic()
        status, error = await run_operation(faults, spec, op)
        took = time.monotonic() - began
        killed = await killing if killing else "unkilled"
        # a kill between issuing and storing a certificate leaves a valid leaf nobody holds: the
        # retried attempt revokes it (pki.ensure_certificates), so after a create the count is exact
        counted = inventory(faults, spec, status, leaves_exact=op in EXACT_LEAVES_AFTER)
        problems = counted.problems
        if op == "teardown" and await schedule_exists(faults, spec.id):
            problems.append("rotation schedule left")
        ok = status.phase is GOAL[op] and not problems and not error
        outcome = f"{status.phase.value}; {killed}; {sum(counted.found.values())} counted"
        outcome += f", {counted.unheld} unheld leaves" if counted.unheld else ""
        outcome += f"; PROBLEMS: {problems}" if problems else ""
        outcome += f"; error: {error[:200]}" if error else ""
        if rng is None:
            baseline[op] = took
        rows.append(
            report(
                Row(
                    f"{provider} {op} {'SIGKILL' if rng else 'baseline'}",
                    took,
                    baseline.get(op) if rng else None,
                    outcome,
                    ok,
                )
            )
        )
        if status.phase is ClusterPhase.FAILED:
            break
    return rows


async def create_case(
    faults: FaultStack,
    case: str,
    provider: str,
    baseline: float | None,
    fault: Callable[[ClusterSpec], Awaitable[str]] | None,
    expect_failure: str = "",
    clear: Callable[[], None] | None = None,
) -> tuple[Row, float]:
    """A create with ``fault`` beside it, counted; then a teardown, counted (nothing left).
    ``clear`` ends a fault that lasts the whole create, before anything is counted."""
    faults.restart_workers()
    spec = spec_for(provider)
    await connect(faults)
    began = time.monotonic()
    running = asyncio.create_task(fault(spec)) if fault else None
    status, _ = await run_operation(faults, spec, "create")
    took = time.monotonic() - began
    what = await running if running else "no fault"
    if clear is not None:
        clear()
    problems: list[str] = []
    if expect_failure:
        if status.phase is not ClusterPhase.FAILED or expect_failure not in status.message:
            problems.append(f"expected a failure saying {expect_failure!r}, got {status.phase}: {status.message[:200]}")
        if "must be ensured first" in status.message:
            problems.append("the message reads like an ordering error")
    else:
        if status.phase is not ClusterPhase.READY:
            problems.append(f"{status.phase}: {status.message[:200]}")
        problems += inventory(faults, spec, status).problems
    faults.restart_workers()
    deleted, error = await run_operation(faults, spec, "teardown")
    if deleted.phase is not ClusterPhase.DELETED:
        problems.append(f"teardown ended {deleted.phase}: {error[:200]}")
    problems += [f"left: {p}" for p in inventory(faults, spec, None).problems]
    said = f"; said: {status.message[:160]}" if expect_failure else ""
    outcome = f"{what}; {status.phase.value}{said}; teardown {deleted.phase.value}"
    outcome += f"; PROBLEMS: {problems}" if problems else ""
    return report(Row(case, took, baseline, outcome, not problems)), took


async def after(seconds: float, then: Callable[[], None], said: str) -> str:
    await asyncio.sleep(seconds)
    await asyncio.to_thread(then)
    return said


async def when_step_done(faults: FaultStack, cluster_id: str, step: str) -> None:
    from starter import clusters

    client = await connect(faults)
    while True:
        try:
            current = (await clusters.get_status(client, cluster_id)).current
        except clusters.UserError:
            current = None
        if current is not None and any(s.name == step and s.state == "done" for s in current.steps):
            return
        await asyncio.sleep(0.05)


async def backend_cases(faults: FaultStack) -> list[Row]:
    rows: list[Row] = []
    kvm_baseline = statistics.median(
        [(await create_case(faults, "kvm create baseline", "kvm", None, None))[1] for _ in range(2)]
    )
    aws_row, aws_baseline = await create_case(faults, "aws create baseline", "aws", None, None)
    rows.append(aws_row)

    async def temporal_kill(spec: ClusterSpec) -> str:
        return await after(
            0.5, lambda: kill_and_restart(faults, TEMPORAL, 2.0), "Temporal kill -9, 2 s down, restarted"
        )

    # OpenBao faults strike once the PKI step is done, while the certificates are being issued: a
    # create takes about a second, and a fault at a fixed moment could miss every Vault call.
    async def openbao_pause(spec: ClusterSpec) -> str:
        await when_step_done(faults, spec.id, "pki")
        with process_paused(faults.pid(OPENBAO)):
            await asyncio.sleep(10)
        return "OpenBao SIGSTOP 10 s while issuing"

    async def openbao_kill(spec: ClusterSpec) -> str:
        await when_step_done(faults, spec.id, "pki")
        await asyncio.to_thread(kill_and_restart, faults, OPENBAO, 3.0)
        return "OpenBao kill -9 while issuing, 3 s down, restarted"

    async def openbao_seal(spec: ClusterSpec) -> str:
        await when_step_done(faults, spec.id, "pki")
        await asyncio.to_thread(seal_and_unseal, faults, 5.0)
        return "OpenBao sealed 5 s while issuing, unsealed"

    async def host_outage(spec: ClusterSpec) -> str:
        await asyncio.sleep(0.3)
        set_faults(faults.endpoints.kube_api_url, {"outage_seconds": 10})
        await asyncio.sleep(10.5)
        set_faults(faults.endpoints.kube_api_url, None)
        return "host API outage 10 s"

    async def moto_restart(spec: ClusterSpec) -> str:
        await when_step_done(faults, spec.id, "foundation")
        await asyncio.to_thread(kill_and_restart, faults, MOTO, 0.5)
        return "moto restarted after the foundation step (AWS state lost)"

    for case, provider, fault in (
        ("Temporal server kill -9 + restart", "kvm", temporal_kill),
        ("OpenBao pause (SIGSTOP 10 s)", "kvm", openbao_pause),
        ("OpenBao kill -9 + restart", "kvm", openbao_kill),
        ("OpenBao seal + unseal", "kvm", openbao_seal),
        ("host API outage window 10 s", "kvm", host_outage),
    ):
        rows.append((await create_case(faults, case, provider, kvm_baseline, fault))[0])

    # Host API errors: against the same latency without errors (the ratio).
    def calm_host() -> None:
        set_faults(faults.endpoints.kube_api_url, None)

    set_faults(faults.endpoints.kube_api_url, {"latency_ms": 200})
    calm, calm_s = await create_case(faults, "host API 200 ms latency", "kvm", None, None, clear=calm_host)
    set_faults(faults.endpoints.kube_api_url, {"latency_ms": 200, "error_rate": 0.2, "error_codes": [500, 503, 429]})
    try:
        errors = await create_case(faults, "host API 20% errors + 200 ms latency", "kvm", calm_s, None, clear=calm_host)
        rows += [calm, errors[0]]
    finally:
        calm_host()

    def calm_aws() -> None:
        faults.aws_faults.error_rate = 0.0

    faults.aws_faults.respond, faults.aws_faults.error_rate = aws_throttling, 0.2
    try:
        throttled = await create_case(
            faults, "AWS 20% Throttling/503 (proxy)", "aws", aws_baseline, None, clear=calm_aws
        )
        rows.append(throttled[0])
    finally:
        calm_aws()
    rows.append((await create_case(faults, "moto restart mid-create", "aws", None, moto_restart, "missing"))[0])
    return rows


async def measure(rounds: int, state_dir: Path, logs_dir: Path, providers: list[str], backends: bool = True) -> bool:
    began = time.monotonic()
    with fault_stack(state_dir, logs_dir) as faults:
        await connect(faults)
        rows: list[Row] = []
        for provider in providers:
            baseline: dict[str, float] = {}
            rows += await lifecycle(faults, provider, None, baseline)
            for round_ in range(rounds):
                rows += await lifecycle(faults, provider, random.Random(14 + round_), baseline)
        if backends:
            rows += await backend_cases(faults)
        scanned, events, holding = await private_keys_in_histories(await connect(faults))
        leaked_logs = private_keys_in_logs(faults.logs())
        keys_ok = not holding and not leaked_logs and scanned > 0
        rows.append(
            report(
                Row(
                    "private keys in histories and worker logs",
                    0.0,
                    None,
                    f"{len(holding)} in {scanned} histories ({events} events), {len(leaked_logs)} in "
                    f"{len(faults.logs())} worker logs",
                    keys_ok,
                )
            )
        )
    killed = [r for r in rows if "SIGKILL" in r.case and "killed in" in r.outcome and r.baseline is not None]
    print("\nSIGKILL with a second worker: delay against the unkilled run")  # noqa: T201
    for r in killed:
        print(f"  {r.case:30s} {r.seconds - (r.baseline or 0):+6.1f}s")  # noqa: T201
    if killed:
        delays = [r.seconds - (r.baseline or 0) for r in killed]
        print(f"  median {statistics.median(delays):+.1f}s, worst {max(delays):+.1f}s over {len(delays)} kills")  # noqa: T201
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} cases ok, {len(failed)} failed; {time.monotonic() - began:.0f}s in all")  # noqa: T201
    print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")  # noqa: T201
    for r in failed:
        print(f"FAILED: {r.case}: {r.outcome}")  # noqa: T201
    return not failed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "1")))
    parser.add_argument("--providers", default=",".join(PROVIDERS), help="lifecycles to run, e.g. aws")
    parser.add_argument("--no-backends", action="store_true", help="only the SIGKILL lifecycles")
    args = parser.parse_args()
    providers = [p for p in args.providers.split(",") if p]
    with tempfile.TemporaryDirectory(prefix="tenantctl-fault-suite-") as tmp:
        state_dir, logs_dir = Path(tmp) / "stack", Path(tmp) / "logs"
        state_dir.mkdir()
        logs_dir.mkdir()
        ok = asyncio.run(measure(args.rounds, state_dir, logs_dir, providers, backends=not args.no_backends))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
