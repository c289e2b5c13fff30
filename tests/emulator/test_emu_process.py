"""Kubeconfig, the state file across restarts, `python -m devstack.kube_emulator`, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from devstack.kube_emulator import TENANT_NODE, Emulator
from devstack.kube_emulator.resources import BY_KEY, NAMESPACES
from devstack.kube_emulator.store import Store

REPO = Path(__file__).resolve().parents[2]
CONFIG_MAPS = BY_KEY["/configmaps"]


def test_kubeconfig_loads_with_the_official_loader(emulator: Emulator, tmp_path: Path) -> None:
    path = emulator.write_kubeconfig(tmp_path / "nested" / "config")
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == emulator.url and doc["current-context"]
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == emulator.url
    with config.new_client_from_config(config_file=str(path)) as api:
        assert client.CoreV1Api(api).read_namespace("default").status.phase == "Active"


def test_state_survives_restart(tmp_path: Path, kit: Any) -> None:
    state = tmp_path / "state" / "kube.json"
    with Emulator(port=0, ready_delay=0.05, state_file=state, save_debounce=0.01) as emu:
        with kit.client_for(emu.write_kubeconfig(tmp_path / "kc1")) as api:
            core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
            core.create_namespace({"metadata": {"name": "kept"}})
            cm = core.create_namespaced_config_map("kept", {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
            apps.create_namespaced_deployment("kept", kit.deployment("vm", annotations={TENANT_NODE: "acme/n1"}))
            kit.wait_for(lambda: apps.read_namespaced_deployment("vm", "kept").status.available_replicas)
            with kit.tenant_client(emu, "acme", tmp_path) as tapi:
                kit.wait_for(lambda: client.CoreV1Api(tapi).list_node().items, what="tenant node")
            last_rv = int(core.list_namespace().metadata.resource_version)
        kit.wait_for(lambda: json.loads(state.read_text())["resourceVersion"] == last_rv, what="saved")
        # Saves re-encode only the objects written since the last one: what lands is still all of it.
        kit.wait_for(lambda: json.loads(state.read_text()) == json.loads(json.dumps(emu.store.snapshot())))
    assert not [p for p in state.parent.iterdir() if p != state]  # temp files were renamed into place

    with Emulator(port=0, state_file=state) as emu, kit.client_for(emu.write_kubeconfig(tmp_path / "kc2")) as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        restored = core.read_namespaced_config_map("cfg", "kept")
        assert (restored.metadata.uid, restored.data) == (cm.metadata.uid, {"a": "1"})
        assert apps.read_namespaced_deployment("vm", "kept").status.available_replicas == 1
        assert int(core.list_namespace().metadata.resource_version) == last_rv
        created = core.create_namespaced_config_map("kept", {"metadata": {"name": "new"}})
        assert int(created.metadata.resource_version) > last_rv  # the counter continues
        with kit.tenant_client(emu, "acme", tmp_path) as tapi:
            assert [n.metadata.name for n in client.CoreV1Api(tapi).list_node().items] == ["n1"]
        with pytest.raises(ApiException) as info:  # history did not survive: old versions are expired
            list(watch.Watch().stream(core.list_namespaced_config_map, "kept", resource_version="1", timeout_seconds=1))
        assert info.value.status == 410


def test_a_save_encodes_only_the_groups_that_changed_and_still_writes_everything(tmp_path: Path) -> None:
    """A save keeps the text of each kind in each namespace; a group nothing was written to since is
    not encoded again, while one with a new, changed or deleted object is, and an emptied group is
    gone: the file always equals the store."""
    state = tmp_path / "state.json"
    emu = Emulator(port=0, state_file=state)
    store = emu.store

    def configmap(ns: str, name: str, value: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": ns}, "data": {"v": value}}

    for ns in ("quiet", "busy", "emptied"):
        store.create("", NAMESPACES, "", {"metadata": {"name": ns}})
    store.create("", CONFIG_MAPS, "quiet", configmap("quiet", "a", "1"))
    store.create("", CONFIG_MAPS, "busy", configmap("busy", "a", "1"))
    store.create("", CONFIG_MAPS, "busy", configmap("busy", "b", "1"))
    store.create("", CONFIG_MAPS, "emptied", configmap("emptied", "a", "1"))
    emu.save_state()
    assert json.loads(state.read_text()) == json.loads(json.dumps(store.snapshot()))
    quiet_text = emu._group_texts[("", CONFIG_MAPS.key, "quiet")][1]

    store.patch("", CONFIG_MAPS, "busy", "b", "application/merge-patch+json", b'{"data": {"v": "2"}}')
    store.create("", CONFIG_MAPS, "busy", configmap("busy", "c", "1"))
    store.delete("", CONFIG_MAPS, "emptied", "a")
    emu.save_state()
    saved = json.loads(state.read_text())
    assert saved == json.loads(json.dumps(store.snapshot()))
    assert emu._group_texts[("", CONFIG_MAPS.key, "quiet")][1] is quiet_text  # not encoded again
    assert ("", CONFIG_MAPS.key, "emptied") not in emu._group_texts
    configmaps = {(o["metadata"]["namespace"], o["metadata"]["name"]): o["data"]["v"] for o in saved["clusters"][""]
                  if o["kind"] == "ConfigMap" and o["metadata"]["namespace"] != "kube-system"}  # fmt: skip
    assert configmaps == {("quiet", "a"): "1", ("busy", "a"): "1", ("busy", "b"): "2", ("busy", "c"): "1"}
    restored = Store()
    restored.restore(saved)
    assert restored.snapshot() == store.snapshot()


def test_a_save_keeps_the_state_text_once(tmp_path: Path) -> None:
    """What a save keeps to re-encode less next time is the state's text once, not once per object
    and again per group (at 1,000 clusters that was 100 MiB more, and a whole copy while saving)."""
    state = tmp_path / "state.json"
    emu = Emulator(port=0, state_file=state)
    for i in range(30):
        ns = f"tenant-{i}"
        emu.store.create("", NAMESPACES, "", {"metadata": {"name": ns}})
        for j in range(10):
            emu.store.create("", CONFIG_MAPS, ns, {"metadata": {"name": f"cm-{j}"}, "data": {"v": "x" * 2000}})
    tracemalloc.start()
    try:
        held_before = tracemalloc.get_traced_memory()[0]
        emu.save_state()
        kept = tracemalloc.get_traced_memory()[0] - held_before
    finally:
        tracemalloc.stop()
    size = state.stat().st_size
    assert size > 600_000
    assert kept < 1.3 * size, f"a save keeps {kept} bytes for a state of {size}"


def test_runs_as_a_module(tmp_path: Path, kit: Any) -> None:
    kubeconfig, state = tmp_path / "kc", tmp_path / "state.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.kube_emulator",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--state-file",
            str(state),
            "--ready-delay",
            "0.1",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
    )
    try:
        kit.wait_for(lambda: kubeconfig.exists() and kubeconfig.stat().st_size, timeout=15, what="kubeconfig")
        with kit.client_for(kubeconfig) as api:
            core = client.CoreV1Api(api)
            assert "default" in {n.metadata.name for n in core.list_namespace().items}
            core.create_namespaced_config_map("default", {"metadata": {"name": "from-cli"}})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr.decode()
    assert b"serving on http://127.0.0.1:" in stderr
    names = [o["metadata"]["name"] for o in json.loads(state.read_text())["clusters"][""]]
    assert "from-cli" in names


def test_concurrent_clients(kubeconfig: Path, core: client.CoreV1Api, ns: str, kit: Any) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "counter"}, "data": {"n": "0"}})
    rvs: list[int] = []
    conflicts: list[int] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        with kit.client_for(kubeconfig) as api:
            mine = client.CoreV1Api(api)
            for i in range(10):
                made = mine.create_namespaced_config_map(ns, {"metadata": {"name": f"w{index}-{i}"}})
                with lock:
                    rvs.append(int(made.metadata.resource_version))
                while True:  # optimistic concurrency: read-modify-replace, retry on 409
                    current = mine.read_namespaced_config_map("counter", ns)
                    current.data["n"] = str(int(current.data["n"]) + 1)
                    try:
                        mine.replace_namespaced_config_map("counter", ns, current)
                        break
                    except ApiException as exc:
                        assert exc.status == 409
                        with lock:
                            conflicts.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(rvs) == len(set(rvs)) == 80
    assert len(core.list_namespaced_config_map(ns).items) == 81
    assert core.read_namespaced_config_map("counter", ns).data["n"] == "80"  # no lost update
