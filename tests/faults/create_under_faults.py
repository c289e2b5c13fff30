"""``make faults``: how much a flaky host API slows a create, a rotation and an upgrade down (a
measurement, not a test).

On a local stack of its own (free ports, a temporary state folder, the worker of this checkout), it
creates 3-master/3-worker KVM clusters through the product's client path (``starter.clusters``), then
forces a rotation of all their certificates, then upgrades them to the next patch version (every
node replaced or restarted, one at a time), in alternation under two conditions set on the host API
emulator's fault endpoint:

- ``latency``: every host-API request 200 ms late;
- ``latency+errors``: the same, and 20% of requests answered 500, 503 or 429 (with Retry-After).

It prints each operation's time and outcome, the median per condition and their ratio (issue 14's
target: at most 2x). Run: ``make faults`` (``ROUNDS=1`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config.settings import load_settings
from devstack.stack import LocalStack, StackPorts
from models.cluster import ClusterPhase
from models.operations import RotateCertificatesRequest, UpgradeRequest
from starter import clusters
from tests.faults.cases import next_patch
from tests.specs import example, unique_id
from workflows.cluster import ClusterWorkflow

CONDITIONS: dict[str, dict[str, Any]] = {
    "latency": {"latency_ms": 200},
    "latency+errors": {"latency_ms": 200, "error_rate": 0.2, "error_codes": [500, 503, 429]},
}
SETTLE_TIMEOUT_SECONDS = 900.0
OPERATIONS = ("create", "rotate", "upgrade")


def set_faults(kube_api_url: str, faults: dict[str, Any] | None) -> None:
    request = urllib.request.Request(
        f"{kube_api_url}/_emulator/faults",
        data=json.dumps(faults or {}).encode(),
        method="PUT" if faults else "DELETE",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


async def one_create(client: Any, task_queue: str) -> tuple[str, float, str]:
    spec = example(id=unique_id("fault"))
    began = time.monotonic()
    await clusters.start_cluster(client, spec, task_queue)
    while time.monotonic() - began < SETTLE_TIMEOUT_SECONDS:
        status = await clusters.get_status(client, spec.id)
        if status.current is None and status.phase in (ClusterPhase.READY, ClusterPhase.FAILED):
            return spec.id, time.monotonic() - began, f"{status.phase.value} ({len(status.nodes)} nodes)"
        await asyncio.sleep(0.1)
    return spec.id, time.monotonic() - began, "timed out"


async def timed_update(
    client: Any, cluster_id: str, method: Any, request: Any, described: Callable[[Any], str]
) -> tuple[float, str]:
    """Run an entity update to its end: the seconds it took and ``described(result)``, or the refusal."""
    began = time.monotonic()
    try:
        result = await clusters.update(client, cluster_id, method, request)
    except clusters.UserError as exc:
        return time.monotonic() - began, f"failed: {exc}"
    return time.monotonic() - began, described(result)


async def one_rotation(client: Any, cluster_id: str) -> tuple[float, str]:
    request = RotateCertificatesRequest(force=True, requested_by="make faults")
    return await timed_update(
        client, cluster_id, ClusterWorkflow.rotate_certificates, request,
        lambda result: f"{len(result.reissued)} certificates, {len(result.restarted_nodes)} restarts",
    )  # fmt: skip


async def one_upgrade(client: Any, cluster_id: str, version: str) -> tuple[float, str]:
    request = UpgradeRequest(version=next_patch(version), requested_by="make faults")
    return await timed_update(
        client, cluster_id, ClusterWorkflow.upgrade, request,
        lambda result: f"{result.outcome.value} {result.from_version} -> {result.to_version}",
    )  # fmt: skip


async def measure(rounds: int, state_dir: Path) -> dict[str, list[float]]:
    stack = LocalStack(state_dir, ports=StackPorts.free(), with_worker=True, emulator_ready_delay=0.3)
    print(f"starting a local stack in {state_dir} ...", flush=True)  # noqa: T201
    endpoints = stack.up()
    os.environ.update({**endpoints.as_env(), "TENANTCTL_STATE_DIR": str(state_dir)})
    settings = load_settings()
    seconds: dict[str, list[float]] = {f"{op} {name}": [] for op in OPERATIONS for name in CONDITIONS}
    try:
        client = await clusters.connect(settings)
        version = example().kubernetes_version  # every measured cluster is the example: upgrades start here
        await one_create(client, settings.temporal_task_queue)  # warm-up: worker caches, first mounts
        for round_ in range(1, rounds + 1):
            for name, faults in CONDITIONS.items():
                set_faults(endpoints.kube_api_url, faults)
                cluster_id, took, outcome = await one_create(client, settings.temporal_task_queue)
                print(f"round {round_}: {name:15s} create {took:6.1f}s -> {outcome}", flush=True)  # noqa: T201
                if outcome.startswith(ClusterPhase.READY.value):
                    seconds[f"create {name}"].append(took)
                    took, outcome = await one_rotation(client, cluster_id)
                    print(f"round {round_}: {name:15s} rotate {took:6.1f}s -> {outcome}", flush=True)  # noqa: T201
                    if not outcome.startswith("failed"):
                        seconds[f"rotate {name}"].append(took)
                    took, outcome = await one_upgrade(client, cluster_id, version)
                    print(f"round {round_}: {name:15s} upgrade {took:5.1f}s -> {outcome}", flush=True)  # noqa: T201
                    if outcome.startswith("completed"):
                        seconds[f"upgrade {name}"].append(took)
                set_faults(endpoints.kube_api_url, None)
    finally:
        set_faults(endpoints.kube_api_url, None)
        stack.down(purge=True)
    return seconds


def report(seconds: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in seconds.items() if values}
    print("\noperation and condition   runs  median")  # noqa: T201
    for name, values in seconds.items():
        shown = f"{medians[name]:6.1f}s" if name in medians else "     -"
        print(f"{name:22s} {len(values):6d}  {shown}")  # noqa: T201
    for op in OPERATIONS:
        faulty, calm = medians.get(f"{op} latency+errors"), medians.get(f"{op} latency")
        if faulty and calm:
            verdict = "within" if faulty / calm <= 2 else "over"
            print(f"{op}: slowdown from 20% host-API errors {faulty / calm:.2f}x ({verdict} the 2x target)")  # noqa: T201
    print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "2")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantctl-faults-") as state_dir:
        report(asyncio.run(measure(args.rounds, Path(state_dir))))


if __name__ == "__main__":
    main()
