"""Issue 15 end to end on the real local stack: maintenance windows in the cluster entity, and the
fleet view ``tenantctl list``.

- ``tenantctl apply`` sets a window opening within the next minute and an upgrade: the upgrade waits
  for it (``status`` and ``list`` say so, a drift check is not held back), then runs once it opens.
- ``tenantctl list`` over six clusters (four KVM, two AWS): every column, ``--where``, ``-o json``,
  and a bad query is one line, exit 1, no traceback.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from models.cluster import OperationKind
from models.maintenance import Maintenance, MaintenanceWindow
from models.naming import operation_workflow_id
from tests.e2e.conftest import Stack, WorkerProcess, stack_settings, wait_for, write_spec
from tests.e2e.test_fleet import TARGET, create_clusters, entity_status
from worker.clients import connect_temporal

pytestmark = pytest.mark.stack


def next_minute_after(moment: datetime) -> datetime:
    """Windows start on the minute: the first minute boundary after ``moment``."""
    return (moment + timedelta(minutes=1)).replace(second=0, microsecond=0)


async def test_an_upgrade_by_apply_waits_for_a_window_opening_shortly(
    local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path
) -> None:
    client = await connect_temporal(stack_settings(local_stack))
    owner = f"win-{uuid.uuid4().hex[:6]}"
    (cluster_id,) = await create_clusters(local_stack, client, tmp_path, owner, 1)
    live = (await entity_status(client, cluster_id)).spec
    opens = next_minute_after(datetime.now(UTC) + timedelta(seconds=15))  # 15-75 s away
    window = MaintenanceWindow(days=[opens.strftime("%a").lower()], start=opens.strftime("%H:%M"), duration="1h")
    wanted = live.model_copy(update={"kubernetes_version": TARGET, "maintenance": Maintenance(window=window)})
    applying = asyncio.ensure_future(
        asyncio.to_thread(local_stack.cli, "apply", "-f", str(write_spec(tmp_path, wanted)), timeout=300)
    )
    said = f"waiting for the maintenance window, opens at {opens:%Y-%m-%d %H:%M} UTC"

    async def waiting() -> bool:
        status = await entity_status(client, cluster_id)
        return bool(status.queued) and status.queued[0].window_opens_at == opens

    await wait_for(waiting, "the upgrade to wait for its window", timeout=60)
    assert datetime.now(UTC) < opens, "the window opened before the test could see the wait"
    shown = local_stack.cli("status", cluster_id).stdout
    assert said in " ".join(shown.split()), shown
    listed = json.loads(local_stack.cli("list", "--where", f'ClusterOwner = "{owner}"', "-o", "json").stdout)
    assert [row["id"] for row in listed] == [cluster_id]
    assert listed[0]["operation"].startswith("upgrade (waiting for window"), listed[0]
    # The wait holds no lock: a drift check runs now, not after the window.
    checked = local_stack.cli("reconcile", cluster_id, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert (await entity_status(client, cluster_id)).queued, "the check must not have consumed the wait"

    run = await applying
    assert run.returncode == 0, run.stderr
    assert said in run.stdout and f"upgraded {cluster_id} to Kubernetes {TARGET}" in run.stdout, run.stdout
    status = await entity_status(client, cluster_id)
    assert status.kubernetes_version == TARGET and status.queued == []
    upgrade = next(op for op in status.recent if op.kind is OperationKind.UPGRADE)
    described = await client.get_workflow_handle(upgrade.workflow_id).describe()
    assert opens <= described.start_time < opens + timedelta(seconds=30)
    assert upgrade.workflow_id == operation_workflow_id(cluster_id, OperationKind.UPGRADE, status.operations_started)


async def test_list_is_the_fleet_view(local_stack: Stack, worker_process: WorkerProcess, tmp_path: Path) -> None:
    client: Client = await connect_temporal(stack_settings(local_stack))
    owner = f"list-{uuid.uuid4().hex[:6]}"
    ids = await create_clusters(local_stack, client, tmp_path, owner, 4, aws=2)
    began = time.monotonic()
    table = local_stack.cli("list")
    took = time.monotonic() - began
    print(f"\ntenantctl list (table) over {len(ids)}+ clusters: {took:.2f} s wall")  # noqa: T201
    for column in ("id", "owner", "provider", "version", "phase", "operation", "earliest expiry", "last drift check"):
        assert column in table.stdout, table.stdout
    rows = json.loads(local_stack.cli("list", "--where", f'ClusterOwner = "{owner}"', "-o", "json").stdout)
    assert sorted(r["id"] for r in rows) == ids
    assert sorted(r["provider"] for r in rows) == ["aws", "aws", "kvm", "kvm", "kvm", "kvm"]
    for row in rows:
        status = await entity_status(client, row["id"])
        assert row["owner"] == owner and row["phase"] == "Ready" and row["operation"] == ""
        assert status.earliest_expiry is not None
        assert datetime.fromisoformat(row["earliest_expiry"]) == status.earliest_expiry
        assert row["last_check"] == ""  # drift checks are paused in these clusters
    yaml_rows = local_stack.cli(
        "list", "--where", f'ClusterOwner = "{owner}" AND ClusterProvider = "kvm"', "-o", "yaml"
    )
    assert yaml_rows.stdout.count("provider: kvm") == 4 and "provider: aws" not in yaml_rows.stdout
    bad = local_stack.cli("list", "--where", "ClusterOwner = ", check=False)
    assert bad.returncode == 1, bad
    assert bad.stderr.startswith("error: --where is not a valid visibility query"), bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
