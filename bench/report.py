"""What a bench run found, as data (written as JSON) and as tables (printed): pure, no I/O."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import median, per, percentile, ratio

NOT_IMPLEMENTED = "n/a: not implemented"
NOT_DERIVED = "n/a: not derived"
MIB = 1024 * 1024


@dataclass
class OperationResult:
    """One operation of a 3 + 3 cluster, each repetition's figures (product and floor alternated)."""

    operation: str
    product_seconds: list[float] = field(default_factory=list)
    floor_seconds: list[float] = field(default_factory=list)
    product_events: list[int] = field(default_factory=list)
    floor_events: list[int] = field(default_factory=list)
    raw_seconds: list[float] = field(default_factory=list)  # empty: not derived
    raw_cpu_seconds: list[float] = field(default_factory=list)
    """CPU of the raw replay: the activities' own code and backend clients, without Temporal."""
    failures: list[str] = field(default_factory=list)


@dataclass
class LoadSide:
    """K creates started at once on one side (product or floor)."""

    per_cluster_seconds: list[float] = field(default_factory=list)
    all_ready_seconds: float | None = None
    failures: list[str] = field(default_factory=list)
    worker_peak_rss_bytes: int | None = None
    worker_cpu_seconds: float | None = None
    temporal_cpu_seconds: float | None = None
    backend_cpu_seconds: float | None = None
    """OpenBao, moto and the host API emulator together: the backends' share of the two cores."""

    @property
    def stack_cpu_seconds(self) -> float | None:
        """What the side cost the machine: worker, Temporal and backends together."""
        parts = (self.worker_cpu_seconds, self.temporal_cpu_seconds, self.backend_cpu_seconds)
        return None if None in parts else sum(p for p in parts if p is not None)


@dataclass
class ConcurrencyResult:
    clusters: int
    product: LoadSide = field(default_factory=LoadSide)
    floor: LoadSide = field(default_factory=LoadSide)


@dataclass
class CliResult:
    command: str
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class PendingResult:
    """A cost the issue asks for whose feature does not exist yet: reported, never invented."""

    name: str
    note: str = NOT_IMPLEMENTED
    seconds: list[float] = field(default_factory=list)


DAY_SECONDS = 86400.0
DEFAULT_CHECK_INTERVAL_SECONDS = 300.0
"""``models.spec.DriftCheck``'s default interval (a unit test holds the two equal)."""


@dataclass
class DriftCheckResult:
    """Drift checks of one in-sync cluster (the entity's ``reconcile`` update), and their floor."""

    product_seconds: list[float] = field(default_factory=list)
    floor_seconds: list[float] = field(default_factory=list)
    entity_events: list[int] = field(default_factory=list)  # added to the entity per check
    child_events: list[int] = field(default_factory=list)  # the check's own workflow
    activities: list[int] = field(default_factory=list)
    floor_events: list[int] = field(default_factory=list)
    floor_activities: int | None = None
    interval_seconds: float = DEFAULT_CHECK_INTERVAL_SECONDS
    failures: list[str] = field(default_factory=list)

    @property
    def checks_per_day(self) -> float:
        return DAY_SECONDS / self.interval_seconds

    def events_per_check(self) -> float | None:
        entity, child = _events(self.entity_events), _events(self.child_events)
        return None if entity is None or child is None else entity + child


@dataclass
class FleetRolloutBench:
    """A fleet upgrade of ``clusters`` clusters against the same upgrade run on as many clusters one by one."""

    clusters: int
    parallel: int
    single_seconds: list[float] = field(default_factory=list)
    single_events: list[int] = field(default_factory=list)
    fleet_seconds: float | None = None
    fleet_events: int | None = None  # the fleet workflow's own history
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class FleetBatch:
    clusters_total: int
    batch_seconds: float
    created: int = 0
    failures: list[str] = field(default_factory=list)
    rss_bytes: dict[str, int | None] = field(default_factory=dict)
    cpu_seconds: dict[str, float | None] = field(default_factory=dict)


@dataclass
class FleetHold:
    """The held fleet left alone for a while: its periodic drift checks (every cluster's interval,
    5 min by default) are the load. Issue 13: 1,000 clusters checked every 5 min (3.3 checks/s)
    under 50% of the machine's cores."""

    clusters: int
    seconds: float
    cpus: int
    checked: int = 0  # clusters whose last check ended inside the counted part of the window
    # The window's last check interval (or all of it, if shorter), where ``checked`` is counted: a
    # fleet that keeps its cadence checks every cluster in any stretch that long, one that falls
    # behind checks fewer. Counting over a longer window would cap the rate at clusters / window
    # (1,000 in 330 s: 3.0/s) however fast the checks run. None: the whole window (older results).
    counted_seconds: float | None = None
    overdue: int = 0  # clusters whose next check was due more than a minute before the window ended
    check_failures: int = 0  # clusters whose last check failed
    cpu_seconds: dict[str, float | None] = field(default_factory=dict)
    rss_bytes: dict[str, int | None] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def checks_per_second(self) -> float | None:
        return ratio(float(self.checked), self.counted_seconds or self.seconds)

    @property
    def machine_share(self) -> float | None:
        """CPU of every process of the stack and the worker, as a share of all cores, over the window."""
        used = [v for v in self.cpu_seconds.values() if v is not None]
        return ratio(sum(used), self.seconds * self.cpus) if used else None


@dataclass
class BenchResult:
    started_at: str
    mode: str
    machine: dict[str, Any] = field(default_factory=dict)
    shapes: list[dict[str, Any]] = field(default_factory=list)
    operations: list[OperationResult] = field(default_factory=list)
    concurrency: list[ConcurrencyResult] = field(default_factory=list)
    cli: list[CliResult] = field(default_factory=list)
    pending: list[PendingResult] = field(default_factory=list)
    fleet: list[FleetBatch] = field(default_factory=list)
    fleet_hold: FleetHold | None = None
    wall_seconds: float | None = None
    drift_check: DriftCheckResult | None = None
    fleet_rollout: FleetRolloutBench | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> BenchResult:
        """A result written by ``as_dict`` (a JSON file in bench/results), to render or compare again."""
        data = dict(document)
        data["operations"] = [OperationResult(**o) for o in data.get("operations", [])]
        data["concurrency"] = [
            ConcurrencyResult(c["clusters"], LoadSide(**c["product"]), LoadSide(**c["floor"]))
            for c in data.get("concurrency", [])
        ]
        data["cli"] = [CliResult(**c) for c in data.get("cli", [])]
        data["pending"] = [PendingResult(**p) for p in data.get("pending", [])]
        data["fleet"] = [FleetBatch(**b) for b in data.get("fleet", [])]
        if data.get("fleet_hold") is not None:
            data["fleet_hold"] = FleetHold(**data["fleet_hold"])
        if data.get("drift_check") is not None:
            data["drift_check"] = DriftCheckResult(**data["drift_check"])
        if data.get("fleet_rollout") is not None:
            data["fleet_rollout"] = FleetRolloutBench(**data["fleet_rollout"])
        return cls(**data)


# --- formatting --------------------------------------------------------------------------------------
def seconds(value: float | None, missing: str = "n/a") -> str:
    if value is None:
        return missing
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def mebibytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f} MiB"


def number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, columns padded so it also reads as plain text."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def _events(values: list[int]) -> float | None:
    return median([float(v) for v in values])


def operations_table(results: list[OperationResult]) -> str:
    rows = []
    for r in results:
        product, floor = median(r.product_seconds), median(r.floor_seconds)
        product_events, floor_events = _events(r.product_events), _events(r.floor_events)
        rows.append(
            [
                r.operation,
                seconds(product),
                seconds(floor),
                times(ratio(product, floor)),
                seconds(median(r.raw_seconds), NOT_DERIVED),
                number(median(r.raw_cpu_seconds), 3) if r.raw_cpu_seconds else "n/a",
                number(product_events, 0),
                number(floor_events, 0),
                times(ratio(product_events, floor_events)),
                f"{len(r.product_seconds)}" + (f" ({len(r.failures)} failed)" if r.failures else ""),
            ]
        )
    headers = ["operation", "tenantctl", "bare floor", "ratio", "raw backend work", "raw client CPU-s", "events",
               "floor events", "events ratio", "runs"]  # fmt: skip
    return table(headers, rows)


def _side(side: LoadSide, clusters: int, cpus: int | None = None) -> dict[str, float | None]:
    capacity = None if cpus is None or side.all_ready_seconds is None else side.all_ready_seconds * cpus
    return {
        "all": side.all_ready_seconds,
        "p50": percentile(side.per_cluster_seconds, 0.50),
        "p95": percentile(side.per_cluster_seconds, 0.95),
        "rate": ratio(float(clusters), side.all_ready_seconds) if not side.failures else None,
        "worker_cpu": per(side.worker_cpu_seconds, clusters),
        "temporal_cpu": per(side.temporal_cpu_seconds, clusters),
        "backend_cpu": per(side.backend_cpu_seconds, clusters),
        # Near 100%: the side was bound by the cores, and only less CPU makes it faster.
        "busy": ratio(side.stack_cpu_seconds, capacity),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def concurrency_table(results: list[ConcurrencyResult], cpus: int | None = None) -> str:
    """``cpus``: the machine's cores, for the share of them the stack kept busy (omitted: n/a)."""
    rows = []
    for r in results:
        p, f = _side(r.product, r.clusters, cpus), _side(r.floor, r.clusters, cpus)
        failed = f" ({len(r.product.failures)} failed)" if r.product.failures else ""
        rows.append(
            [
                f"{r.clusters}{failed}",
                seconds(p["all"]),
                seconds(f["all"]),
                times(ratio(p["all"], f["all"])),
                f"{seconds(p['p50'])} / {seconds(p['p95'])}",
                f"{seconds(f['p50'])} / {seconds(f['p95'])}",
                f"{number(p['rate'])} / {number(f['rate'])}",
                f"{mebibytes(r.product.worker_peak_rss_bytes)} / {mebibytes(r.floor.worker_peak_rss_bytes)}",
                f"{number(p['worker_cpu'], 3)} / {number(f['worker_cpu'], 3)}"
                f" ({times(ratio(p['worker_cpu'], f['worker_cpu']))})",
                f"{number(p['temporal_cpu'], 3)} / {number(f['temporal_cpu'], 3)}",
                f"{number(p['backend_cpu'], 3)} / {number(f['backend_cpu'], 3)}",
                f"{_percent(p['busy'])} / {_percent(f['busy'])}",
            ]
        )
    headers = ["K creates", "all Ready", "floor all Ready", "ratio", "p50 / p95", "floor p50 / p95",
               "clusters/s (product / floor)", "worker peak RSS (product / floor)",
               "worker CPU-s per cluster (product / floor)",
               "Temporal CPU-s per cluster (product / floor)",
               "backends' CPU-s per cluster (product / floor)",
               "cores kept busy (product / floor)"]  # fmt: skip
    return table(headers, rows)


def cli_table(results: list[CliResult]) -> str:
    rows = [
        [
            f"`{r.command}`",
            seconds(median(r.seconds)),
            seconds(min(r.seconds) if r.seconds else None),
            seconds(max(r.seconds) if r.seconds else None),
            str(len(r.seconds)) + (f" ({len(r.failures)} failed)" if r.failures else ""),
        ]
        for r in results
    ]
    return table(["command", "median", "min", "max", "runs"], rows)


def pending_table(results: list[PendingResult]) -> str:
    return table(
        ["cost", "result"], [[r.name, r.note if not r.seconds else seconds(median(r.seconds))] for r in results]
    )


def drift_check_table(result: DriftCheckResult) -> str:
    product, floor = median(result.product_seconds), median(result.floor_seconds)
    per_check, entity = result.events_per_check(), _events(result.entity_events)
    day = result.checks_per_day
    entity_day = None if entity is None else entity * day
    all_day = None if per_check is None else per_check * day
    runs = f"{len(result.product_seconds)}" + (f" ({len(result.failures)} failed)" if result.failures else "")
    row = [
        seconds(product),
        seconds(floor),
        times(ratio(product, floor)),
        f"{number(_events(result.activities), 0)} / {number(result.floor_activities, 0)}",
        f"{number(entity, 0)} + {number(_events(result.child_events), 0)} = {number(per_check, 0)}",
        number(_events(result.floor_events), 0),
        times(ratio(per_check, _events(result.floor_events))),
        f"{number(entity_day, 0)} / {number(all_day, 0)}",
        runs,
    ]
    headers = ["tenantctl", "bare floor", "ratio", "activities (product / floor)",
               "events per check (entity + check = all)", "floor events", "events ratio",
               f"events per day at {result.interval_seconds / 60:g} min (entity / all)", "checks"]  # fmt: skip
    return table(headers, [row])


def fleet_rollout_table(result: FleetRolloutBench) -> str:
    singles = sum(result.single_seconds) if result.single_seconds else None
    per_cluster = per(None if result.fleet_events is None else float(result.fleet_events), result.clusters)
    row = [
        f"{result.clusters} (parallel {result.parallel})",
        seconds(result.fleet_seconds),
        seconds(singles),
        times(ratio(result.fleet_seconds, singles)),
        seconds(median(result.single_seconds)),
        number(None if result.fleet_events is None else float(result.fleet_events), 0),
        number(per_cluster, 1),
        f"{result.succeeded}" + (f" ({len(result.failures)} failed)" if result.failures else ""),
    ]
    headers = ["clusters", "fleet upgrade", "sum of single upgrades", "ratio", "single upgrade (median)",
               "fleet workflow events", "fleet events per cluster", "upgraded"]  # fmt: skip
    return table(headers, [row])


def fleet_table(batches: list[FleetBatch]) -> str:
    rows = []
    for b in batches:
        rss = ", ".join(f"{name} {mebibytes(v)}" for name, v in b.rss_bytes.items())
        cpu = ", ".join(f"{name} {number(v, 1)}" for name, v in b.cpu_seconds.items())
        rate = number(ratio(float(b.created), b.batch_seconds))
        rows.append([str(b.clusters_total), seconds(b.batch_seconds), rate, str(len(b.failures)), rss, cpu])
    return table(["clusters held", "batch time", "clusters/s", "failed", "RSS", "CPU-s since start"], rows)


def fleet_hold_table(hold: FleetHold) -> str:
    cpu = ", ".join(f"{name} {number(v, 1)}" for name, v in hold.cpu_seconds.items())
    rss = ", ".join(f"{name} {mebibytes(v)}" for name, v in hold.rss_bytes.items())
    share = hold.machine_share
    rows = [[
        str(hold.clusters), seconds(hold.seconds),
        f"{hold.checked} of {hold.clusters} in the last {seconds(hold.counted_seconds or hold.seconds)}",
        str(hold.overdue),
        str(hold.check_failures), number(hold.checks_per_second), "n/a" if share is None else f"{share:.0%}", cpu, rss,
    ]]  # fmt: skip
    headers = ["clusters", "window", "checked", "overdue", "failed checks", "checks/s",
               f"CPU share of {hold.cpus} cores", "CPU-s in the window", "RSS at its end"]  # fmt: skip
    return table(headers, rows)


def render(result: BenchResult) -> str:
    """Every table of a run, with the machine and the run's wall time."""
    parts = [
        f"tenantctl bench ({result.mode}), {result.started_at}; machine: "
        + ", ".join(f"{k} {v}" for k, v in result.machine.items()),
    ]
    if result.operations:
        parts += ["", "Operations on a 3 + 3 KVM cluster (medians; product and floor alternated):",
                  operations_table(result.operations)]  # fmt: skip
    if result.concurrency:
        parts += ["", "Concurrent creates (3 + 3 each):", concurrency_table(result.concurrency, _cpus(result))]
    if result.cli:
        parts += ["", "CLI start-up:", cli_table(result.cli)]
    if result.drift_check is not None:
        parts += ["", "Drift check of an in-sync 3 + 3 cluster (on demand, 'tenantctl reconcile'):",
                  drift_check_table(result.drift_check)]  # fmt: skip
    if result.fleet_rollout is not None:
        parts += ["", "Fleet rollout (patch upgrade, 'tenantctl fleet upgrade') vs single upgrades:",
                  fleet_rollout_table(result.fleet_rollout)]  # fmt: skip
    if result.pending:
        parts += ["", "Not measured yet:", pending_table(result.pending)]
    if result.operations or result.concurrency or result.cli or result.fleet_hold:
        parts += ["", "Targets:", targets_table(targets(result))]
    if result.fleet:
        parts += ["", "Fleet scale (one worker):", fleet_table(result.fleet)]
    if result.fleet_hold is not None:
        parts += ["", "The fleet held, its periodic drift checks the only load:", fleet_hold_table(result.fleet_hold)]
    failures = [f for op in result.operations for f in op.failures]
    failures += [f for c in result.concurrency for f in (*c.product.failures, *c.floor.failures)]
    failures += [f for c in result.cli for f in c.failures] + [f for b in result.fleet for f in b.failures]
    failures += result.fleet_hold.failures if result.fleet_hold else []
    failures += result.drift_check.failures if result.drift_check else []
    failures += result.fleet_rollout.failures if result.fleet_rollout else []
    if failures:
        parts += ["", f"Failures ({len(failures)}):", *(f"- {f}" for f in failures[:20])]
    if result.wall_seconds is not None:
        parts += ["", f"bench wall time: {seconds(result.wall_seconds)}"]
    return "\n".join(parts)


# --- the targets ------------------------------------------------------------------------------
@dataclass
class TargetCheck:
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def _operation(result: BenchResult, name: str) -> OperationResult | None:
    return next((r for r in result.operations if r.operation == name), None)


def _against(result: BenchResult, name: str, limit: float, with_raw: bool) -> TargetCheck:
    target = f"{name} <= {limit:g} x {'(floor + raw)' if with_raw else 'floor'}"
    op = _operation(result, name)
    if op is None:
        return TargetCheck(target, "n/a", None)
    product, floor, raw = median(op.product_seconds), median(op.floor_seconds), median(op.raw_seconds)
    if with_raw and raw is None:
        return TargetCheck(target, f"raw {NOT_DERIVED.removeprefix('n/a: ')}", None)
    base = None if floor is None else floor + ((raw or 0.0) if with_raw else 0.0)
    value = ratio(product, base)
    return TargetCheck(target, times(value), None if value is None else value <= limit)


def targets(result: BenchResult) -> list[TargetCheck]:
    """Issue 13's targets, each with this run's figure and whether it is met."""
    checks = []
    if result.operations:
        checks += [
            _against(result, "create", 1.5, with_raw=True),
            _against(result, "forced rotation", 1.5, with_raw=True),
            _against(result, "patch upgrade", 1.5, with_raw=True),
            _against(result, "teardown", 2.0, with_raw=False),
        ]
    largest = max(result.concurrency, key=lambda c: c.clusters, default=None)
    if largest is not None:
        k = largest.clusters
        p, f = _side(largest.product, k), _side(largest.floor, k)
        all_ready, cpu = ratio(p["all"], f["all"]), ratio(p["worker_cpu"], f["worker_cpu"])
        rss = largest.product.worker_peak_rss_bytes
        checks += [
            TargetCheck(f"{k} creates at once: all Ready <= 1.5 x floor", _all_ready(result, largest),
                        None if all_ready is None else all_ready <= 1.5),
            TargetCheck(f"{k} creates at once: worker CPU per cluster <= 2 x floor", _worker_cpu(result, p, f),
                        None if cpu is None else cpu <= 2.0),
            TargetCheck(f"{k} creates at once: worker peak RSS <= 300 MB", mebibytes(rss),
                        None if rss is None else rss <= 300 * 1000 * 1000),
        ]  # fmt: skip
    create = _operation(result, "create")
    if create is not None:
        events = ratio(_events(create.product_events), _events(create.floor_events))
        checks.append(TargetCheck("events per create <= 1.3 x floor", times(events),
                                  None if events is None else events <= 1.3))  # fmt: skip
    upgrade = _operation(result, "patch upgrade")
    if upgrade is not None:
        events = _events(upgrade.product_events)
        checks.append(TargetCheck("events of a 6-node upgrade < 400", number(events, 0),
                                  None if events is None else events < 400))  # fmt: skip
    for cli in result.cli:
        took = median(cli.seconds)
        checks.append(TargetCheck(f"{cli.command} < 0.7 s", seconds(took), None if took is None else took < 0.7))
    hold = result.fleet_hold
    if hold is not None:
        share, rate = hold.machine_share, hold.checks_per_second
        wanted = hold.clusters / DEFAULT_CHECK_INTERVAL_SECONDS
        checks += [
            TargetCheck(f"{hold.clusters} clusters held: checks/s >= {wanted:.1f} (every 5 min)", number(rate),
                        None if rate is None else rate >= wanted * 0.95 and hold.overdue == 0),
            TargetCheck(f"{hold.clusters} clusters held: CPU <= 50% of the cores",
                        "n/a" if share is None else f"{share:.0%}", None if share is None else share <= 0.5),
        ]  # fmt: skip
    return checks


def _cpus(result: BenchResult) -> int | None:
    cpus = result.machine.get("cpus")
    return cpus if isinstance(cpus, int) and cpus > 0 else None


def _all_ready(result: BenchResult, largest: ConcurrencyResult) -> str:
    """The all-Ready ratio, and beside it (context, not the target) the least time the product's
    CPU needs on this machine's cores, against the floor's time: the floor's activities call no
    backend, and the product's backends run on the same cores."""
    product, floor = largest.product, largest.floor
    measured = times(ratio(product.all_ready_seconds, floor.all_ready_seconds))
    cpus, spent = _cpus(result), product.stack_cpu_seconds
    if cpus is None or spent is None or not floor.all_ready_seconds:
        return measured
    least = spent / cpus
    return (
        f"{measured} (the product's {spent:.1f} CPU-s need {least:.1f} s of {cpus} cores:"
        f" {times(ratio(least, floor.all_ready_seconds))} the floor's time)"
    )


def _worker_cpu(result: BenchResult, product: dict[str, float | None], floor: dict[str, float | None]) -> str:
    """The worker CPU ratio, and beside it (context, not the target) the ratio against the floor plus
    the CPU the same create's calls take without Temporal: the floor's activities call no backend."""
    measured = times(ratio(product["worker_cpu"], floor["worker_cpu"]))
    create = _operation(result, "create")
    raw = None if create is None else median(create.raw_cpu_seconds)
    if raw is None or floor["worker_cpu"] is None:
        return measured
    against_raw = times(ratio(product["worker_cpu"], floor["worker_cpu"] + raw))
    return f"{measured} (vs floor + raw client CPU of a create, {raw:.3f} s: {against_raw})"


def targets_table(checks: list[TargetCheck]) -> str:
    mark = {True: "yes", False: "no", None: "n/a"}
    return table(["target (issue 13)", "this run", "met"], [[c.target, c.measured, mark[c.met]] for c in checks])


def main(paths: list[str]) -> None:
    """``python -m bench.report FILE...``: print the tables of saved results again."""
    for path in paths:
        print(render(BenchResult.from_dict(json.loads(Path(path).read_text()))))  # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1:])
