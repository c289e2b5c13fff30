"""``python -m bench [--quick] [--fleet N]`` (``make bench``, ``make bench-fleet``): see README, "Benchmarks".

One run starts a fresh local stack on free ports in a temporary state folder (``LocalStack``, as
``tenantctl dev up`` does), the product's worker and the floor's worker (each its own process, so
their CPU and memory are read from ``/proc``), then measures, product and floor alternated:

1. each operation of a 3 + 3 KVM cluster (create, forced rotation, patch upgrade, teardown);
2. K creates at once, for each K;
3. the CLI's start-up (``tenantctl --help``, ``tenantctl status ID``);
4. drift checks of an in-sync cluster (wall time, activities, history events per check and per day);
5. a fleet rollout (patch upgrade) against as many single upgrades run one by one;

and prints the tables, writing everything to ``bench/results/<time>.json``. ``--fleet N`` instead
creates N clusters in batches and holds them with one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench import floor, product
from bench.processes import ROOT, WorkerProcess, stack_meters, worker_env
from bench.procstat import ProcessMeter, Window
from bench.raw import RawBackends
from bench.report import (
    DEFAULT_CHECK_INTERVAL_SECONDS,
    BenchResult,
    CliResult,
    ConcurrencyResult,
    DriftCheckResult,
    FleetBatch,
    FleetHold,
    FleetRolloutBench,
    LoadSide,
    OperationResult,
    render,
)
from bench.shapes import CREATE, DRIFT_CHECK, FORCED_ROTATION, PATCH_UPGRADE, SHAPES, TEARDOWN, Shape
from config.settings import STACK_ENV_FILE, Settings
from devstack.stack import TEMPORAL, WORKER, LocalStack, StackError, StackPorts
from models.drift import CheckOutcome

RESULTS = ROOT / "bench" / "results"
TENANTCTL = str(Path(sys.executable).parent / "tenantctl")
FULL_REPS, QUICK_REPS = 5, 1
FULL_K, QUICK_K = (1, 10, 50, 100), (1, 10)
CLI_REPS_FULL, CLI_REPS_QUICK = 5, 3
PARTS = ("operations", "concurrency", "cli", "drift", "fleet-rollout")
CHECK_REPS_FULL, CHECK_REPS_QUICK = 5, 3
FLEET_ROLLOUT_FULL, FLEET_ROLLOUT_QUICK = 6, 3
"""Clusters a fleet rollout upgrades (and as many more upgraded one by one to compare)."""
OPERATION_TIMEOUT = 900.0
FLEET_STATUS_READS = 20
"""Status queries in flight at once when the held fleet is looked at."""

log = logging.getLogger("tenantctl.bench")


# --- the run ------------------------------------------------------------------------------------------
class Run:
    def __init__(self, args: argparse.Namespace, state_dir: Path, client: Client, env: dict[str, str]) -> None:
        self.args = args
        self.state_dir = state_dir
        self.client = client
        self.env = env
        self.tag = uuid.uuid4().hex[:6]
        self.product_queue = f"bench-product-{self.tag}"
        self.floor_queue = f"bench-floor-{self.tag}"
        self.product_worker = WorkerProcess(
            "product worker", "worker", worker_env(env, self.product_queue), state_dir / "bench-product-worker.log"
        )
        self.floor_worker = WorkerProcess(
            "floor worker",
            "bench.floor_worker",
            worker_env(env, self.floor_queue),
            state_dir / "bench-floor-worker.log",
        )
        self.reps: int = args.reps
        self.raw = RawBackends(
            Settings(_env_file=state_dir / STACK_ENV_FILE, temporal_task_queue=self.product_queue), client
        )
        self._serial = 0
        self.live_cluster: str | None = None
        self.ready_clusters: list[str] = []  # created by the concurrency step and still held, at VERSION
        self.fleet_clusters: list[str] = []  # created and held by the fleet-scale run

    def name(self, what: str) -> str:
        self._serial += 1
        return f"b{self.tag}-{what}-{self._serial}"

    async def floor_op(self, shape: Shape, count_events: bool = True) -> product.Outcome:
        return await floor.run(self.client, shape, f"floor/{self.name(shape.operation.replace(' ', '-'))}",
                               self.floor_queue, count_events)  # fmt: skip

    # --- 1. operations, side by side ------------------------------------------------------------------
    async def operations(self) -> list[OperationResult]:
        results = {shape.operation: OperationResult(shape.operation) for shape in SHAPES.values()}
        steps: list[tuple[Shape, Callable[[str], Awaitable[product.Outcome]]]] = [
            (CREATE, lambda cid: product.create(self.client, cid, self.product_queue)),
            (FORCED_ROTATION, lambda cid: product.forced_rotation(self.client, cid)),
            (PATCH_UPGRADE, lambda cid: product.patch_upgrade(self.client, cid)),
            (TEARDOWN, lambda cid: product.teardown(self.client, cid)),
        ]
        for rep in range(self.reps):
            cluster_id = self.name("op")
            broken = False
            replays: list[tuple[OperationResult, str | None]] = []
            for shape, run_product in steps:
                result = results[shape.operation]
                sides = ["floor", "product"] if rep % 2 else ["product", "floor"]  # alternate who goes first
                for side in sides:
                    if side == "floor":
                        outcome = await self.floor_op(shape)
                        result.floor_seconds.append(outcome.seconds)
                        if outcome.events is not None:
                            result.floor_events.append(outcome.events)
                    elif not broken:
                        try:
                            outcome = await asyncio.wait_for(run_product(cluster_id), OPERATION_TIMEOUT)
                        except (product.OperationFailed, TimeoutError) as exc:
                            result.failures.append(f"{shape.operation} of {cluster_id}: {exc or 'timed out'}")
                            broken = True  # the rest of this cluster's lifecycle cannot run
                            continue
                        result.product_seconds.append(outcome.seconds)
                        if outcome.events is not None:
                            result.product_events.append(outcome.events)
                        replays.append((result, outcome.workflow_id))
                log.info("rep %d/%d %s done", rep + 1, self.reps, shape.operation)
            if not broken:  # the cluster is gone again: the same calls without Temporal, in order
                await self._raw(cluster_id, replays)
        return list(results.values())

    async def _raw(self, cluster_id: str, replays: list[tuple[OperationResult, str | None]]) -> None:
        for result, workflow_id in replays:
            if workflow_id is None:
                return
            try:
                replayed = await asyncio.wait_for(self.raw.replay(workflow_id), OPERATION_TIMEOUT)
                result.raw_seconds.append(replayed.seconds)
                result.raw_cpu_seconds.append(replayed.cpu_seconds)
            except Exception as exc:  # a replay that breaks says so in the report; the run goes on
                result.failures.append(f"raw {result.operation} of {cluster_id}: {type(exc).__name__}: {exc}")
                return
        log.info("raw backend work of %s replayed", cluster_id)

    # --- 2. K creates at once -------------------------------------------------------------------------
    async def _load(self, clusters: int, start: Callable[[], Awaitable[object]], worker: ProcessMeter) -> LoadSide:
        """Start ``clusters`` operations at once; each one's time counts from the common start."""
        side = LoadSide()
        stack = stack_meters(self.state_dir)
        backends = [meter for name, meter in stack.items() if name not in (TEMPORAL, WORKER)]
        window = Window([worker, stack[TEMPORAL], *backends])
        window.start()
        began = time.monotonic()

        async def timed() -> float:
            await start()
            return time.monotonic() - began

        outcomes = await asyncio.gather(*(timed() for _ in range(clusters)), return_exceptions=True)
        side.all_ready_seconds = time.monotonic() - began
        await window.stop()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                side.failures.append(f"{type(outcome).__name__}: {outcome}")
            else:
                side.per_cluster_seconds.append(outcome)
        side.worker_peak_rss_bytes = window.peak_rss.get(worker.name)
        side.worker_cpu_seconds = window.cpu.get(worker.name)
        side.temporal_cpu_seconds = window.cpu.get(TEMPORAL)
        spent = [window.cpu.get(meter.name) for meter in backends]
        side.backend_cpu_seconds = None if None in spent else sum(s for s in spent if s is not None)
        log.info("CPU-s of %d operations: %s", clusters,
                 ", ".join(f"{m.name} {window.cpu.get(m.name) or 0:.2f}" for m in window.meters))  # fmt: skip
        return side

    async def concurrency(self, ks: list[int]) -> list[ConcurrencyResult]:
        results: list[ConcurrencyResult] = []
        for k in ks:
            result = ConcurrencyResult(k)
            tag = f"k{k}"

            async def one_product(tag: str = tag) -> object:
                cluster_id = self.name(tag)
                # All Ready is when the last one is Ready: neither side counts events inside the window
                outcome = await product.create(self.client, cluster_id, self.product_queue, count_events=False)
                self.live_cluster = cluster_id  # held afterwards: what `tenantctl status ID` looks at
                self.ready_clusters.append(cluster_id)
                return outcome

            async def one_floor() -> object:
                return await self.floor_op(CREATE, count_events=False)

            for side in ("product", "floor") if len(results) % 2 == 0 else ("floor", "product"):
                if side == "product":
                    result.product = await self._load(k, one_product, self.product_worker.meter)
                else:
                    result.floor = await self._load(k, one_floor, self.floor_worker.meter)
            log.info("K=%d done: product %.2fs, floor %.2fs", k, result.product.all_ready_seconds or 0,
                     result.floor.all_ready_seconds or 0)  # fmt: skip
            results.append(result)
        return results

    # --- 3. the CLI ---------------------------------------------------------------------------------
    def cli(self, cluster_id: str | None) -> list[CliResult]:
        # the product worker polls its own queue: the CLI must ask that one (it refuses when none polls)
        env = {
            **os.environ,
            "TENANTCTL_STATE_DIR": str(self.state_dir),
            "TENANTCTL_TEMPORAL_TASK_QUEUE": self.product_queue,
            "NO_COLOR": "1",
        }
        commands = [["--help"]] + ([["status", cluster_id]] if cluster_id else [])
        results = []
        for command in commands:
            shown = " ".join(["tenantctl", *command[:1], *(["ID"] if len(command) > 1 else [])])
            result = CliResult(shown)
            for _ in range(self.args.cli_reps):
                began = time.monotonic()
                done = subprocess.run([TENANTCTL, *command], env=env, capture_output=True, text=True, check=False)
                took = time.monotonic() - began
                if done.returncode == 0:
                    result.seconds.append(took)
                else:
                    result.failures.append(f"{shown} exited {done.returncode}: {done.stderr.strip()[-300:]}")
            results.append(result)
        return results

    # --- 4. a drift check of an in-sync cluster ----------------------------------------------------------
    async def drift_checks(self, cluster_id: str, reps: int) -> DriftCheckResult:
        """On-demand checks of a Ready cluster (nothing drifted), each next to a floor of the same shape."""
        result = DriftCheckResult(floor_activities=DRIFT_CHECK.activities)
        for rep in range(reps):
            for side in ("product", "floor") if rep % 2 == 0 else ("floor", "product"):
                if side == "floor":
                    outcome = await self.floor_op(DRIFT_CHECK)
                    result.floor_seconds.append(outcome.seconds)
                    if outcome.events is not None:
                        result.floor_events.append(outcome.events)
                    continue
                try:
                    check = await asyncio.wait_for(product.drift_check(self.client, cluster_id), OPERATION_TIMEOUT)
                except (product.OperationFailed, TimeoutError) as exc:
                    result.failures.append(f"drift check of {cluster_id}: {exc or 'timed out'}")
                    return result
                if not check.in_sync:
                    result.failures.append(f"drift check of {cluster_id} found drift: not an in-sync check")
                result.product_seconds.append(check.seconds)
                for values, value in ((result.entity_events, check.entity_events),
                                      (result.child_events, check.child_events),
                                      (result.activities, check.activities)):  # fmt: skip
                    if value is not None:
                        values.append(value)
        log.info("drift checks of %s done", cluster_id)
        return result

    # --- 5. a fleet rollout against single upgrades ---------------------------------------------------
    async def fleet_rollout(self, clusters: int, parallel: int) -> FleetRolloutBench:
        """Upgrade ``clusters`` Ready clusters one by one, then as many others with one fleet rollout."""
        result = FleetRolloutBench(clusters, parallel)
        spare = [c for c in self.ready_clusters if c != self.live_cluster]
        missing = max(0, 2 * clusters - len(spare))
        if missing:
            log.info("fleet rollout: creating %d more clusters to upgrade", missing)
            made = [self.name("fleet-rollout") for _ in range(missing)]
            outcomes = await asyncio.gather(
                *(product.create(self.client, c, self.product_queue) for c in made), return_exceptions=True
            )
            for cluster_id, outcome in zip(made, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    result.failures.append(f"create of {cluster_id}: {type(outcome).__name__}: {outcome}")
                else:
                    spare.append(cluster_id)
            if len(spare) < 2 * clusters:
                return result
        singles, rollout = spare[:clusters], spare[clusters : 2 * clusters]
        for cluster_id in singles:
            try:
                outcome = await asyncio.wait_for(product.patch_upgrade(self.client, cluster_id), OPERATION_TIMEOUT)
            except (product.OperationFailed, TimeoutError) as exc:
                result.failures.append(f"upgrade of {cluster_id}: {exc or 'timed out'}")
                return result
            result.single_seconds.append(outcome.seconds)
            if outcome.events is not None:
                result.single_events.append(outcome.events)
        workflow_id = f"fleet/{self.name('bench-upgrade')}"
        try:
            fleet = await asyncio.wait_for(
                product.fleet_upgrade(self.client, rollout, self.product_queue, workflow_id, parallel),
                OPERATION_TIMEOUT,
            )
        except TimeoutError:
            result.failures.append(f"fleet rollout {workflow_id}: timed out")
            return result
        result.fleet_seconds, result.fleet_events, result.succeeded = fleet.seconds, fleet.events, fleet.succeeded
        result.failures += fleet.failures
        self.ready_clusters = [c for c in self.ready_clusters if c not in singles and c not in rollout]
        log.info("fleet rollout of %d clusters done in %.2fs", clusters, fleet.seconds)
        return result

    # --- fleet scale ----------------------------------------------------------------------------------
    async def fleet(self, total: int, batch: int, deadline: float = 0.0) -> list[FleetBatch]:
        """Create ``total`` clusters ``batch`` at a time; no new batch after ``deadline`` seconds (0: none)."""
        meters = [self.product_worker.meter, *stack_meters(self.state_dir).values()]
        cpu_start = {m.name: m.cpu_seconds() for m in meters}
        batches: list[FleetBatch] = []
        held = 0
        began_all = time.monotonic()
        while held < total:
            if deadline and time.monotonic() - began_all > deadline:
                log.info("fleet: %d clusters held when the %.0fs creation budget ran out", held, deadline)
                break
            size = min(batch, total - held)
            began = time.monotonic()
            names = [self.name("fleet") for _ in range(size)]
            outcomes = await asyncio.gather(
                *(product.create(self.client, name, self.product_queue) for name in names),
                return_exceptions=True,
            )
            self.fleet_clusters += [n for n, o in zip(names, outcomes, strict=True) if not isinstance(o, BaseException)]
            failures = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
            created = size - len(failures)
            held += created
            process = self.product_worker.proc
            if process is not None and process.poll() is not None:
                failures.append(f"the product worker exited ({process.returncode}); see {self.product_worker.log}")
            cpu = {}
            for m in meters:
                now, then = m.cpu_seconds(), cpu_start.get(m.name)
                cpu[m.name] = None if now is None or then is None else now - then
            rss = {m.name: m.rss() for m in meters}
            batches.append(FleetBatch(held, time.monotonic() - began, created, failures, rss, cpu))
            log.info("fleet: %d clusters held (%d failed in this batch)", held, len(failures))
            if failures:
                break  # what broke first is in the failures; more load would only bury it
        return batches

    async def hold(self, seconds: float) -> FleetHold:
        """Leave the held fleet alone for ``seconds``: the load is its periodic drift checks."""
        meters = [self.product_worker.meter, *stack_meters(self.state_dir).values()]
        hold = FleetHold(len(self.fleet_clusters), seconds, os.cpu_count() or 1)
        log.info("fleet: holding %d clusters for %.0fs (their periodic checks)", hold.clusters, seconds)
        began, wall = {m.name: m.cpu_seconds() for m in meters}, time.monotonic()
        window_start = datetime.now(UTC)
        await asyncio.sleep(seconds)
        hold.seconds = time.monotonic() - wall
        for m in meters:
            now, then = m.cpu_seconds(), began.get(m.name)
            hold.cpu_seconds[m.name] = None if now is None or then is None else now - then
            hold.rss_bytes[m.name] = m.rss()
        window_end = datetime.now(UTC)
        # counted over the window's last check interval: see FleetHold.counted_seconds
        counted_from = max(window_start, window_end - timedelta(seconds=DEFAULT_CHECK_INTERVAL_SECONDS))
        hold.counted_seconds = (window_end - counted_from).total_seconds()
        asking = asyncio.Semaphore(FLEET_STATUS_READS)

        async def look(cluster_id: str) -> None:
            async with asking:
                try:
                    status = await product.status(self.client, cluster_id)
                except Exception as exc:  # one unreadable cluster is reported, the rest still counted
                    hold.failures.append(f"status of {cluster_id}: {type(exc).__name__}: {exc}")
                    return
            last = status.last_check
            if last is not None and counted_from <= last.at <= window_end:
                hold.checked += 1
            if last is not None and last.outcome is CheckOutcome.FAILED:
                hold.check_failures += 1
            if status.next_check is not None and status.next_check < window_end - timedelta(minutes=1):
                hold.overdue += 1

        await asyncio.gather(*(look(c) for c in self.fleet_clusters))
        log.info("fleet: %d of %d clusters checked in the last %.0fs of %.0fs", hold.checked, hold.clusters,
                 hold.counted_seconds, hold.seconds)  # fmt: skip
        return hold


def load_average() -> str:
    load = os.getloadavg()
    return f"{load[0]:.1f}/{load[1]:.1f}"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> str:
    """The code measured: the checkout's commit, '+' when it has uncommitted changes."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown"
    return head + ("+" if _git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict[str, object]:
    return {
        "commit": commit(),
        "cpus": os.cpu_count(),
        "load at start (1/5 min)": load_average(),
        "python": platform.python_version(),
    }


async def bench(args: argparse.Namespace) -> BenchResult:
    began = time.monotonic()
    mode = "fleet" if args.fleet else ("quick" if args.quick else "full")
    result = BenchResult(datetime.now(UTC).isoformat(timespec="seconds"), mode, machine(),
                         [s.as_dict() for s in (*SHAPES.values(), DRIFT_CHECK)])  # fmt: skip
    state_dir = Path(tempfile.mkdtemp(prefix="tenantctl-bench-", dir=args.state_parent))
    stack = LocalStack(state_dir, ports=StackPorts.free())
    log.info("starting a local stack in %s", state_dir)
    run: Run | None = None
    finished = False
    try:
        endpoints = await asyncio.to_thread(stack.up)
        env = {**os.environ, **endpoints.as_env(), "TENANTCTL_STATE_DIR": str(state_dir)}
        client = await Client.connect(
            endpoints.temporal_address, namespace=endpoints.temporal_namespace, data_converter=pydantic_data_converter
        )
        run = Run(args, state_dir, client, env)
        for worker in (run.product_worker, run.floor_worker):
            worker.start()
        for worker in (run.product_worker, run.floor_worker):
            await asyncio.to_thread(worker.wait_ready)
        log.info("warming up (not counted): one create and teardown, and their floors")
        warm = run.name("warm")
        await product.create(client, warm, run.product_queue)
        await product.teardown(client, warm)
        for shape in (CREATE, TEARDOWN):
            await run.floor_op(shape)
        if args.fleet:
            result.fleet = await run.fleet(args.fleet, args.fleet_batch, args.fleet_deadline)
            if args.fleet_hold > 0 and run.fleet_clusters:
                result.fleet_hold = await run.hold(args.fleet_hold)
        else:
            if "operations" in args.parts:
                result.operations = await run.operations()
            if "concurrency" in args.parts:
                result.concurrency = await run.concurrency(args.k)
            if run.live_cluster is None and ("cli" in args.parts or "drift" in args.parts):
                run.live_cluster = run.name("cli")  # no concurrency step made one
                await product.create(client, run.live_cluster, run.product_queue)
            if "cli" in args.parts and run.live_cluster is not None:
                result.cli = await asyncio.to_thread(run.cli, run.live_cluster)
            if "drift" in args.parts and run.live_cluster is not None:
                result.drift_check = await run.drift_checks(run.live_cluster, args.check_reps)
            if "fleet-rollout" in args.parts:
                result.fleet_rollout = await run.fleet_rollout(args.fleet_clusters, args.fleet_parallel)
        finished = True
    finally:
        if run is not None:
            for worker in (run.product_worker, run.floor_worker):
                await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(stack.down)
        if args.keep_state or not finished:  # a run that broke keeps its logs for a look
            log.info("state (logs) kept in %s", state_dir)
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    result.wall_seconds = time.monotonic() - began
    result.machine["load at end (1/5 min)"] = load_average()
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"K in {QUICK_K}, {QUICK_REPS} repetitions (~2 min)")
    parser.add_argument("--reps", type=int, help=f"repetitions per operation (default {FULL_REPS}, quick {QUICK_REPS})")
    parser.add_argument("--k", help=f"comma-separated concurrent creates (default {FULL_K}, quick {QUICK_K})")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"what to measure, comma-separated: {','.join(PARTS)}")
    parser.add_argument("--fleet", type=int, default=0, metavar="N", help="fleet-scale run: create and hold N clusters")
    parser.add_argument("--fleet-batch", type=int, default=50, metavar="B", help="fleet creates started at once")
    parser.add_argument(
        "--fleet-deadline",
        type=float,
        default=0.0,
        metavar="S",
        help="start no new fleet batch after S seconds of creating (0: until N are held); the hold follows",
    )
    parser.add_argument(
        "--fleet-hold",
        type=float,
        default=330.0,
        metavar="S",
        help="after the fleet run, seconds to hold it and measure its periodic drift checks (default 330: "
        "one 5-minute interval and some; 0: skip)",
    )
    rollout_help = f"clusters of the fleet rollout (default {FLEET_ROLLOUT_FULL}, quick {FLEET_ROLLOUT_QUICK})"
    parser.add_argument("--fleet-clusters", type=int, metavar="N", help=rollout_help)
    parallel_help = "the rollout's clusters in flight at most (default 1: its cost over single upgrades)"
    parser.add_argument("--fleet-parallel", type=int, default=1, metavar="P", help=parallel_help)
    parser.add_argument("--out", type=Path, help="JSON result file (default bench/results/<time>.json)")
    parser.add_argument("--state-parent", help="where the temporary stack folder goes (default: the system's tmp)")
    parser.add_argument("--keep-state", action="store_true", help="keep the stack's folder (logs) afterwards")
    args = parser.parse_args(argv)
    args.reps = args.reps or (QUICK_REPS if args.quick else FULL_REPS)
    try:
        args.k = [int(k) for k in args.k.split(",")] if args.k else list(QUICK_K if args.quick else FULL_K)
    except ValueError:
        parser.error(f"--k takes comma-separated whole numbers such as 1,10,50, not {args.k!r}")
    args.cli_reps = CLI_REPS_QUICK if args.quick else CLI_REPS_FULL
    args.check_reps = CHECK_REPS_QUICK if args.quick else CHECK_REPS_FULL
    args.fleet_clusters = args.fleet_clusters or (FLEET_ROLLOUT_QUICK if args.quick else FLEET_ROLLOUT_FULL)
    if args.state_parent:
        try:  # a folder that is not there yet is made, as --out's is
            Path(args.state_parent).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--state-parent {args.state_parent}: {exc.strerror or exc}")
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown or not args.parts:
        parser.error(f"--parts takes some of {','.join(PARTS)}, not {','.join(unknown) or 'nothing'}")
    if args.reps < 1 or any(k < 1 for k in args.k) or args.fleet < 0 or args.fleet_batch < 1:
        parser.error("--reps, --k and --fleet-batch must be positive, --fleet not negative")
    if args.fleet_clusters < 1 or not 1 <= args.fleet_parallel <= args.fleet_clusters:
        parser.error("--fleet-clusters must be positive and --fleet-parallel between 1 and --fleet-clusters")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", stream=sys.stderr)
    for noisy in ("tenantctl.devstack", "temporalio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = asyncio.run(bench(args))
    except (StackError, RuntimeError, product.OperationFailed) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(1) from None
    out = args.out or RESULTS / f"{result.started_at.replace(':', '')}-{result.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.as_dict(), indent=1) + "\n")
    print(render(result))  # noqa: T201
    print(f"results: {out}")  # noqa: T201


if __name__ == "__main__":
    main()
