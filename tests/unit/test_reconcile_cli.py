"""``tenantctl reconcile``: what it prints for each outcome, and that object names are not markup."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from models.drift import DriftItem, DriftKind
from models.reconcile import ReconcileResult
from starter import reconcile_commands
from starter.cli import app


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> Console:
    console = Console(record=True, width=200, highlight=False)
    monkeypatch.setattr(reconcile_commands, "out", console)
    return console


def test_in_sync_says_nothing_changed(printed: Console) -> None:
    reconcile_commands.print_result(ReconcileResult())
    assert "in sync: nothing differs; nothing changed, no node restarted" in printed.export_text()


def test_repair_lists_findings_repairs_and_restarts_and_keeps_brackets(printed: Console) -> None:
    result = ReconcileResult(
        drift=[
            DriftItem(kind=DriftKind.MISSING, object="deployment/worker-1"),
            DriftItem(kind=DriftKind.EXTRA, object="configmap/[bold]stray[/]"),
        ],
        repaired=["node worker-1", "key pairs (apiserver)"],
        restarted=["master-0"],
        waited_for="upgrade (cluster/acme/upgrade/3)",
    )
    reconcile_commands.print_result(result)
    text = printed.export_text()
    assert "waited for upgrade (cluster/acme/upgrade/3) to finish first" in text
    assert "missing  deployment/worker-1" in text
    assert "extra    configmap/[bold]stray[/]" in text  # shown as written, not as markup
    assert "repaired: node worker-1; key pairs (apiserver)" in text
    assert "nodes restarted (one at a time, for re-issued certificates): master-0" in text
    assert "1 extra object(s) reported, not deleted" in text


def test_dry_run_and_skip(printed: Console) -> None:
    reconcile_commands.print_result(
        ReconcileResult(drift=[DriftItem(kind=DriftKind.MISSING, object="vault:role/kubelet")], dry_run=True)
    )
    reconcile_commands.print_result(ReconcileResult(skipped="upgrade (x) was running"))
    text = printed.export_text()
    assert "missing  vault:role/kubelet" in text and "dry run: nothing changed" in text
    assert "skipped: upgrade (x) was running" in text


def test_pause_and_resume_together_are_refused() -> None:
    result = CliRunner().invoke(
        app,
        ["reconcile", "acme", "--pause-checks", "--resume-checks"],
        env={"TENANTCTL_TEMPORAL_ADDRESS": "127.0.0.1:9", "COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert "choose one of --pause-checks and --resume-checks" in result.output
