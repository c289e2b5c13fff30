"""The benchmark's own logic (statistics, /proc parsing, floor shapes, recorded calls, the report): pure, no servers.

The benchmark itself is not a test (``make bench``); these keep its arithmetic honest.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import ActivityType, Payload, Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import ActivityTaskScheduledEventAttributes, HistoryEvent

from bench.__main__ import parse_args
from bench.procstat import ProcessMeter, Window, cpu_ticks_from_stat, memory_from_status
from bench.raw import recorded_waves
from bench.report import (
    DEFAULT_CHECK_INTERVAL_SECONDS,
    MIB,
    NOT_DERIVED,
    NOT_IMPLEMENTED,
    BenchResult,
    CliResult,
    ConcurrencyResult,
    DriftCheckResult,
    FleetBatch,
    FleetHold,
    FleetRolloutBench,
    LoadSide,
    OperationResult,
    PendingResult,
    concurrency_table,
    drift_check_table,
    fleet_rollout_table,
    fleet_table,
    operations_table,
    render,
    table,
    targets,
)
from bench.shapes import CREATE, DRIFT_CHECK, FORCED_ROTATION, NODES, PATCH_UPGRADE, TEARDOWN, waves_from_events
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
    assert cells == ["create", "3.50 s", "250 ms", "14.0x", NOT_DERIVED, "n/a", "202", "91", "2.2x", "3"]


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


def test_targets_of_a_run_without_operations_leave_them_out() -> None:
    result = BenchResult("2026-12-01T00:00:00+00:00", "quick", cli=[CliResult("tenantctl --help", [1.0])])
    assert [c.target for c in targets(result)] == ["tenantctl --help < 0.7 s"]


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


def test_fleet_table_prints_each_batch_rate() -> None:
    batch = FleetBatch(100, 20.0, 50, rss_bytes={"worker": 300 * MIB}, cpu_seconds={"worker": 12.34})
    cells = [c.strip() for c in fleet_table([batch]).splitlines()[2].strip("|").split("|")]
    assert cells == ["100", "20.00 s", "2.50", "0", "worker 300 MiB", "worker 12.3"]


def test_recorded_calls_keep_their_inputs_and_waves() -> None:
    def scheduled(name: str, data: bytes) -> HistoryEvent:
        return HistoryEvent(
            event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
            activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
                activity_type=ActivityType(name=name), input=Payloads(payloads=[Payload(data=data)])
            ),
        )

    completed = HistoryEvent(event_type=EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    waves = recorded_waves([completed, scheduled("a", b"1"), completed, scheduled("b", b"2"), scheduled("b", b"3")])
    assert [[(c.activity, [p.data for p in c.payloads]) for c in w] for w in waves] == [
        [("a", [b"1"])],
        [("b", [b"2"]), ("b", [b"3"])],
    ]


def _cells(text: str) -> list[str]:
    return [c.strip() for c in text.splitlines()[2].strip("|").split("|")]


def test_a_drift_check_is_three_observes_side_by_side() -> None:
    assert DRIFT_CHECK.waves == (3,) and DRIFT_CHECK.activities == 3


def test_the_report_assumes_the_spec_default_check_interval() -> None:
    from models.spec import DriftCheck

    assert DriftCheck().interval.total_seconds() == DEFAULT_CHECK_INTERVAL_SECONDS


def _drift_check() -> DriftCheckResult:
    # figures of a real quick run (seconds, events and activities as the bench read them)
    return DriftCheckResult(
        product_seconds=[0.412, 0.388, 0.405],
        floor_seconds=[0.151, 0.139, 0.147],
        entity_events=[6, 6, 6],
        child_events=[17, 17, 17],
        activities=[3, 3, 3],
        floor_events=[20, 20, 20],
        floor_activities=3,
    )


def test_drift_check_table_derives_events_per_check_and_per_day() -> None:
    result = _drift_check()
    assert result.checks_per_day == 288.0  # every 5 minutes
    assert result.events_per_check() == 23.0
    cells = _cells(drift_check_table(result))
    assert cells == ["405 ms", "147 ms", "2.8x", "3 / 3", "6 + 17 = 23", "20", "1.1x", "1728 / 6624", "3"]


def test_a_drift_check_without_history_figures_says_so() -> None:
    result = DriftCheckResult(product_seconds=[0.4], floor_seconds=[0.2], failures=["drift check of c: boom"])
    cells = _cells(drift_check_table(result))
    assert cells[4] == "n/a + n/a = n/a" and cells[7] == "n/a / n/a" and cells[8] == "1 (1 failed)"


def test_fleet_rollout_table_compares_with_the_sum_of_single_upgrades() -> None:
    result = FleetRolloutBench(3, 1, single_seconds=[7.1, 7.5, 7.3], single_events=[311, 309, 312],
                               fleet_seconds=23.4, fleet_events=61, succeeded=3)  # fmt: skip
    cells = _cells(fleet_rollout_table(result))
    assert cells == ["3 (parallel 1)", "23.40 s", "21.90 s", "1.1x", "7.30 s", "61", "20.3", "3"]


def test_render_shows_drift_check_and_fleet_rollout_and_their_failures() -> None:
    rollout = FleetRolloutBench(3, 1, single_seconds=[7.0], failures=["upgrade of b: boom"])
    result = BenchResult("2026-12-01T00:00:00+00:00", "quick", drift_check=_drift_check(), fleet_rollout=rollout)
    text = render(result)
    assert "Drift check of an in-sync 3 + 3 cluster" in text
    assert "events per day at 5 min (entity / all)" in text
    assert "Fleet rollout (patch upgrade" in text and "3 (parallel 1)" in text
    assert "- upgrade of b: boom" in text
    assert "Not measured yet" not in text


def _lifecycle_result() -> BenchResult:
    return BenchResult(
        "2026-12-01T00:00:00+00:00",
        "quick",
        operations=[
            OperationResult("create", [1.2], [0.2], [110], [100], raw_seconds=[0.7]),
            OperationResult("teardown", [1.0], [0.4], [90], [88], raw_seconds=[5.0]),
            OperationResult("patch upgrade", [9.0], [2.5], [390], [300]),
        ],
        concurrency=[
            ConcurrencyResult(1, LoadSide([1.0], 1.0), LoadSide([0.5], 0.5)),
            ConcurrencyResult(
                100,
                LoadSide([20.0], 30.0, worker_peak_rss_bytes=400 * 1000 * 1000, worker_cpu_seconds=90.0),
                LoadSide([15.0], 21.0, worker_cpu_seconds=50.0),
            ),
        ],
        cli=[CliResult("tenantctl --help", [0.5, 0.6, 0.9])],
        drift_check=_drift_check(),
        fleet_rollout=FleetRolloutBench(3, 1, [7.0, 7.2, 7.1], [311, 310, 312], 22.0, 60, 3),
    )


def test_targets_compare_against_floor_plus_raw_and_say_what_was_not_measured() -> None:
    checks = {c.target: (c.measured, c.met) for c in targets(_lifecycle_result())}
    assert checks["create <= 1.5 x (floor + raw)"] == ("1.3x", True)  # 1.2 / (0.2 + 0.7)
    assert checks["teardown <= 2 x floor"] == ("2.5x", False)  # raw is not part of teardown's target
    assert checks["patch upgrade <= 1.5 x (floor + raw)"] == ("raw not derived", None)
    assert checks["forced rotation <= 1.5 x (floor + raw)"] == ("n/a", None)  # no rotation in this run
    assert checks["100 creates at once: all Ready <= 1.5 x floor"] == ("1.4x", True)  # the largest K
    assert checks["100 creates at once: worker CPU per cluster <= 2 x floor"] == ("1.8x", True)
    assert checks["100 creates at once: worker peak RSS <= 300 MB"] == ("381 MiB", False)
    assert checks["events per create <= 1.3 x floor"] == ("1.1x", True)
    assert checks["events of a 6-node upgrade < 400"] == ("390", True)
    assert checks["tenantctl --help < 0.7 s"] == ("600 ms", True)


def test_worker_cpu_shows_the_raw_client_cpu_beside_the_floor_ratio_without_changing_the_target() -> None:
    result = _lifecycle_result()
    create = result.operations[0]
    create.raw_cpu_seconds = [0.5, 0.3, 0.4]  # median 0.4 CPU-s of the create's calls without Temporal
    checks = {c.target: (c.measured, c.met) for c in targets(result)}
    # 0.9 / 0.5 CPU-s per cluster is 1.8x the floor; against 0.5 + 0.4 it is 1.0x; met stays the floor's
    assert checks["100 creates at once: worker CPU per cluster <= 2 x floor"] == (
        "1.8x (vs floor + raw client CPU of a create, 0.400 s: 1.0x)",
        True,
    )
    assert "0.400" in operations_table(result.operations)
    assert "raw client CPU-s" in operations_table(result.operations)


def test_all_ready_shows_the_least_time_the_products_cpu_needs_on_the_cores_without_changing_the_target() -> None:
    result = _lifecycle_result()
    result.machine = {"cpus": 4}
    product, floor = result.concurrency[1].product, result.concurrency[1].floor
    product.temporal_cpu_seconds, product.backend_cpu_seconds = 20.0, 5.0  # with the worker's 90: 115 CPU-s
    floor.temporal_cpu_seconds, floor.backend_cpu_seconds = 19.0, 0.2
    checks = {c.target: (c.measured, c.met) for c in targets(result)}
    # 115 CPU-s on 4 cores take at least 28.75 s: 1.4x the floor's 21 s; the target is still 30 / 21
    assert checks["100 creates at once: all Ready <= 1.5 x floor"] == (
        "1.4x (the product's 115.0 CPU-s need 28.8 s of 4 cores: 1.4x the floor's time)",
        True,
    )
    # 115 / (30 s x 4 cores) and 69.2 / (21 s x 4 cores)
    assert _busy_cell(concurrency_table(result.concurrency, cpus=4)) == "96% / 82%"
    assert "cores kept busy" in render(result)


def test_cores_busy_and_the_least_time_are_left_out_when_a_figure_is_missing() -> None:
    result = _lifecycle_result()  # no Temporal or backend CPU measured, no machine
    checks = {c.target: c.measured for c in targets(result)}
    assert checks["100 creates at once: all Ready <= 1.5 x floor"] == "1.4x"
    assert _busy_cell(concurrency_table(result.concurrency)) == "n/a / n/a"


def _busy_cell(rendered: str) -> str:
    """The K=100 row's "cores kept busy" cell."""
    header, _, _, row = rendered.splitlines()[:4]
    headers = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    return cells[headers.index("cores kept busy (product / floor)")]


def test_a_saved_result_renders_the_same_after_a_json_round_trip() -> None:
    original = _lifecycle_result()
    again = BenchResult.from_dict(json.loads(json.dumps(original.as_dict())))
    assert again == original
    assert render(again) == render(original)


async def test_a_window_measures_this_process_cpu_and_rss_from_proc() -> None:
    meter = ProcessMeter(os.getpid(), "me")
    window = Window([meter, ProcessMeter(2**22 + 1, "gone")], interval=0.01)  # above pid_max: no such process
    window.start()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn some CPU inside the window
        pass
    await asyncio.sleep(0.03)
    await window.stop()
    assert (window.cpu["me"] or 0.0) >= 0.03
    assert (window.peak_rss["me"] or 0) > 1024 * 1024
    assert window.cpu["gone"] is None and window.peak_rss["gone"] is None


def test_a_held_fleet_reports_its_check_rate_and_machine_share_against_the_targets() -> None:
    # checked is counted over the window's last interval (300 s): 990 clusters in it is 3.3/s
    hold = FleetHold(
        clusters=1000, seconds=330.0, cpus=2, checked=990, overdue=0, counted_seconds=300.0,
        cpu_seconds={"product worker": 150.0, "temporal": 120.0, "openbao": 20.0, "kube-emulator": None},
        rss_bytes={"product worker": 900 * MIB},
    )  # fmt: skip
    assert hold.checks_per_second == 3.3 and hold.machine_share == 290.0 / 660.0
    result = BenchResult("t", "fleet", fleet_hold=hold)
    checks = {c.target: (c.measured, c.met) for c in targets(result)}
    assert checks["1000 clusters held: checks/s >= 3.3 (every 5 min)"] == ("3.30", True)
    assert checks["1000 clusters held: CPU <= 50% of the cores"] == ("44%", True)
    shown = render(result)
    assert "990 of 1000 in the last 300.00 s" in shown and "44%" in shown and "900 MiB" in shown
    assert "1000 clusters held: CPU <= 50% of the cores" in shown  # the targets table comes with it
    again = BenchResult.from_dict(json.loads(json.dumps(result.as_dict())))
    assert again == result


def test_a_fleet_that_falls_behind_fails_the_check_rate_and_so_does_an_overdue_one() -> None:
    behind = FleetHold(clusters=1000, seconds=330.0, cpus=2, checked=700, counted_seconds=300.0)
    overdue = FleetHold(clusters=1000, seconds=330.0, cpus=2, checked=1000, overdue=3, counted_seconds=300.0)
    for hold, rate in ((behind, "2.33"), (overdue, "3.33")):
        checks = {c.target: (c.measured, c.met) for c in targets(BenchResult("t", "fleet", fleet_hold=hold))}
        assert checks["1000 clusters held: checks/s >= 3.3 (every 5 min)"] == (rate, False)
    # a result saved before the counted part existed is read as counted over its whole window
    old = {k: v for k, v in behind.__dict__.items() if k != "counted_seconds"}
    assert FleetHold(**old).checks_per_second == 700 / 330.0


def test_a_state_parent_that_is_not_there_is_made_and_a_file_is_refused(tmp_path: Path, capsys: Any) -> None:
    parent = tmp_path / "new" / "stacks"
    assert parse_args(["--quick", "--state-parent", str(parent)]).state_parent == str(parent)
    assert parent.is_dir()
    taken = tmp_path / "a-file"
    taken.write_text("")
    with pytest.raises(SystemExit) as refused:
        parse_args(["--state-parent", str(taken / "below")])
    assert refused.value.code == 2
    assert "--state-parent" in capsys.readouterr().err
