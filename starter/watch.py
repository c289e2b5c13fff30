"""``--watch``: follow a cluster's operation step by step until it settles."""

from __future__ import annotations

import asyncio

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from temporalio.client import Client

from models.cluster import ClusterPhase, ClusterStatus, StepState
from starter.clusters import get_status

SETTLED = (ClusterPhase.READY, ClusterPhase.FAILED, ClusterPhase.DELETED)
POLL_SECONDS = 0.5


def settled(status: ClusterStatus) -> bool:
    return status.current is None and status.phase in SETTLED


async def watch(client: Client, cluster_id: str, poll: float = POLL_SECONDS) -> ClusterStatus:
    """Show phases and a progress bar until the cluster is Ready, Failed or Deleted."""
    printed: set[tuple[str, str, str]] = set()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task(f"{cluster_id}: starting", total=None, count="")
        last_phase: ClusterPhase | None = None
        while True:
            status = await get_status(client, cluster_id)
            if status.phase is not last_phase:
                progress.console.print(f"[bold]{cluster_id}[/] phase [bold]{status.phase}[/]")
                last_phase = status.phase
            op = status.current
            if op is not None:
                for step in op.steps:
                    key = (op.workflow_id, step.name, step.state.value)
                    if step.state in (StepState.DONE, StepState.FAILED, StepState.SKIPPED) and key not in printed:
                        printed.add(key)
                        mark = {"done": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[dim]-[/]"}[step.state.value]
                        progress.console.print(f"  {mark} {op.kind}: {step.name} {step.message}".rstrip())
                finished = sum(1 for s in op.steps if s.state in (StepState.DONE, StepState.SKIPPED))
                running = next((s for s in op.steps if s.state is StepState.RUNNING), None)
                fraction = op.progress.done / op.progress.total if op.progress.total else 0.0
                detail = f" ({op.progress.done}/{op.progress.total} {op.progress.unit})" if op.progress.total else ""
                progress.update(
                    bar,
                    total=max(len(op.steps), 1),
                    completed=finished + (fraction if running else 0.0),
                    description=f"{op.kind}: {running.name if running else op.state}{detail}",
                    count=f"{finished}/{len(op.steps)} steps",
                )
                if op.state.value == "paused":
                    progress.update(bar, description=f"{op.kind}: PAUSED — {op.message}")
            if settled(status):
                progress.update(bar, description=f"{cluster_id}: {status.phase}", completed=1, total=1, count="")
                return status
            await asyncio.sleep(poll)
