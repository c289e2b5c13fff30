"""Node names and Kubernetes version spellings are read in one place each (models.naming, models.versions)."""

from __future__ import annotations

import pytest

from models.errors import InvalidInput
from models.naming import NodeName, node_index, node_order, node_role, parse_node_name
from models.versions import normalize_version, reported_version


def test_node_names_parse_into_role_and_number() -> None:
    assert parse_node_name("worker-3") == NodeName("worker", 3)
    assert str(parse_node_name("master-0")) == "master-0"
    assert (node_role("master-2"), node_index("worker-17")) == ("master", 17)
    for bad in ("etcd-0", "worker-", "worker-01", "master", "worker-3-x", "Worker-1"):
        with pytest.raises(InvalidInput, match=f"node '{bad}' is not a node name"):
            parse_node_name(bad)


def test_nodes_order_masters_first_then_by_number_and_strangers_last() -> None:
    names = ["worker-10", "someone-elses-node", "worker-2", "master-1", "master-0"]
    assert sorted(names, key=node_order) == ["master-0", "master-1", "worker-2", "worker-10", "someone-elses-node"]


def test_one_spelling_of_a_version() -> None:
    assert normalize_version("v1.32.4") == normalize_version("1.32.4") == "1.32.4"
    with pytest.raises(InvalidInput, match=r"kubernetes_version: '1\.32' is not a semantic version"):
        normalize_version("1.32")


def test_reported_versions_drop_the_v_and_vendor_suffixes() -> None:
    assert reported_version("v1.33.1") == "1.33.1"
    assert reported_version("v1.33.1+k3s1") == reported_version("v1.33.1-eks-1") == "1.33.1"
    assert reported_version("") == reported_version("unknown") == ""
