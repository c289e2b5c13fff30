"""The benchmark's own logic (statistics, /proc parsing, floor shapes, the report): pure, no servers.

The benchmark itself is not a test (``make bench``); these keep its arithmetic honest.
"""

from __future__ import annotations

import pytest

from bench.procstat import cpu_ticks_from_stat, memory_from_status
from bench.report import (
    NOT_DERIVED,
    NOT_IMPLEMENTED,
    BenchResult,
    ConcurrencyResult,
    LoadSide,
    OperationResult,
    PendingResult,
    concurrency_table,
    operations_table,
    render,
    table,
)
from bench.shapes import CREATE, FORCED_ROTATION, NODES, PATCH_UPGRADE, TEARDOWN, waves_from_events
from bench.stats import median, per, percentile, ratio


# --- statistics -----------------------------------------------------------------------------------------
def test_median_of_odd_and_even_counts_and_of_nothing() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([]) is None


def test_percentiles_interpolate_between_closest_ranks() -> None:
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 0.95) == pytest.approx(95.05)
    assert percentile(hundred, 0.5) == pytest.approx(50.5)
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([2.0, 1.0], 0.0) == 1.0
    assert percentile([2.0, 1.0], 1.0) == 2.0
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        percentile([1.0], 95)


def test_ratio_and_per_cluster_refuse_what_cannot_be_divided() -> None:
    assert ratio(3.43, 0.23) == pytest.approx(14.913, rel=1e-3)
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None
    assert per(10.0, 4) == 2.5
    assert per(10.0, 0) is None
    assert per(None, 3) is None


# --- /proc ------------------------------------------------------------------------------------------
def test_cpu_ticks_are_utime_plus_stime_even_with_parentheses_in_the_name() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    line = "4242 (python (worker) x) S 1 4242 4242 0 -1 4194560 2117 0 0 0 150 37 0 0 20 0 9 0 1234 0 0"
    assert cpu_ticks_from_stat(line) == 187


def test_memory_from_status_reads_kilobytes_as_bytes() -> None:
    text = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t  200000 kB\nVmRSS:\t  150000 kB\nThreads:\t9\n"
    memory = memory_from_status(text)
    assert memory == {"VmPeak": 300000 * 1024, "VmHWM": 200000 * 1024, "VmRSS": 150000 * 1024}


# --- floor shapes -----------------------------------------------------------------------------------
def _event(kind: str, activity: str | None = None) -> dict[str, object]:
    event: dict[str, object] = {"eventType": f"EVENT_TYPE_{kind}"}
    if activity is not None:
        event["activityTaskScheduledEventAttributes"] = {"activityType": {"name": activity}}
    return event


def test_waves_are_the_activities_each_workflow_task_schedules() -> None:
    events = [
        _event("WORKFLOW_EXECUTION_STARTED"),
        _event("WORKFLOW_TASK_COMPLETED"),
        _event("SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED"),  # a task with no activity makes no wave
        _event("WORKFLOW_TASK_COMPLETED"),
        _event("ACTIVITY_TASK_SCHEDULED", "pki.ensure_ca"),
        _event("ACTIVITY_TASK_COMPLETED"),
        _event("WORKFLOW_TASK_COMPLETED"),
        _event("ACTIVITY_TASK_SCHEDULED", "kvm.ensure_node"),
        _event("ACTIVITY_TASK_SCHEDULED", "kvm.ensure_node"),
        _event("WORKFLOW_TASK_COMPLETED"),
        _event("ACTIVITY_TASK_SCHEDULED", "kvm.wait_nodes_ready"),
    ]
    assert waves_from_events(events) == [
        ["pki.ensure_ca"],
        ["kvm.ensure_node", "kvm.ensure_node"],
        ["kvm.wait_nodes_ready"],
    ]
    assert waves_from_events([]) == []


def test_floor_shapes_for_three_masters_and_three_workers() -> None:
    assert CREATE.waves == (1, 1, 1, 1, 1, 1, 5, 1, 1, 1) and CREATE.activities == 14  # the definition
    assert TEARDOWN.activities == 8 + NODES and max(TEARDOWN.waves) == NODES  # every node removed at once
    assert FORCED_ROTATION.activities == 1 + 2 * NODES and set(FORCED_ROTATION.waves) == {1}  # node by node
    assert PATCH_UPGRADE.activities == 2 + 7 * 3 + 8 * 3 + 2 and set(PATCH_UPGRADE.waves) == {1}


# --- the report -----------------------------------------------------------------------------------
def test_table_pads_columns_to_the_widest_cell() -> None:
    assert table(["a", "bb"], [["ccc", "d"]]).splitlines() == ["| a   | bb |", "| --- | -- |", "| ccc | d  |"]


def test_operations_table_prints_medians_their_ratio_and_events() -> None:
    result = OperationResult(
        "create",
        product_seconds=[3.0, 4.0, 3.5],
        floor_seconds=[0.2, 0.25, 0.3],
        product_events=[200, 204],
        floor_events=[90, 92],
    )
    row = operations_table([result]).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["create", "3.50 s", "250 ms", "14.0x", NOT_DERIVED, "202", "91", "2.2x", "3"]


def test_a_failed_side_shows_no_throughput_and_counts_its_failures() -> None:
    result = ConcurrencyResult(
        10,
        product=LoadSide(per_cluster_seconds=[1.0] * 9, all_ready_seconds=5.0, failures=["boom"]),
        floor=LoadSide(per_cluster_seconds=[0.5] * 10, all_ready_seconds=2.0, worker_cpu_seconds=1.0),
    )
    row = concurrency_table([result]).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "10 (1 failed)"
    assert cells[3] == "2.5x"
    assert cells[6] == "n/a / 5.00"  # clusters/s: none claimed for the side that failed
    assert cells[8] == "n/a / 0.100 (n/a)"


def test_render_says_not_implemented_instead_of_inventing_numbers() -> None:
    result = BenchResult(
        "2026-12-01T00:00:00+00:00",
        "quick",
        {"cpus": 2},
        pending=[PendingResult("drift check of an in-sync cluster"), PendingResult("fleet rollout", "", [1.0, 3.0])],
        wall_seconds=118.0,
    )
    text = render(result)
    assert f"drift check of an in-sync cluster | {NOT_IMPLEMENTED}" in text
    assert "fleet rollout                     | 2.00 s" in text
    assert text.endswith("bench wall time: 118.00 s")
