"""The CLI starts light: ``tenantctl --help`` imports no backend library, Temporal or pydantic model.

Start-up time itself is a figure for the benchmarks (``make bench``), not a timed test; this holds the
cause of a slow start away: which modules the CLI loads before a command runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

from models.durations import format_duration
from models.pki import DEFAULT_USER_CERTIFICATE_TTL
from starter.rotation_commands import DEFAULT_USER_TTL

# pydantic is not here: typer (0.29) itself imports it to convert parameters.
HEAVY = ("boto3", "botocore", "hvac", "kubernetes", "temporalio", "cryptography", "devstack", "yaml", "workflows")


def loaded_after(code: str) -> set[str]:
    # os._exit: the Temporal client's runtime may abort a finalizing interpreter (see starter.cli.main)
    probe = f"import os, sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)), flush=True)\nos._exit(0)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_help_loads_no_backend_library() -> None:
    code = (
        "from typer.testing import CliRunner\nfrom starter.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
        "for sub in (['upgrade', '--help'], ['kubeconfig', '--help'], ['dev', 'up', '--help']):\n"
        "    assert CliRunner().invoke(app, sub).exit_code == 0, sub"
    )
    loaded = loaded_after(code)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy


def test_status_loads_temporal_but_no_backend_library() -> None:
    loaded = loaded_after(
        "from typer.testing import CliRunner\nfrom starter.cli import app\n"
        "import os\nos.environ['TENANTCTL_TEMPORAL_ADDRESS'] = '127.0.0.1:1'\n"
        "r = CliRunner().invoke(app, ['status', 'acme'])\nassert r.exit_code == 3, r.output"
    )
    # Temporal's service API only: the full client (converters, nexus, workflow machinery) is not needed
    assert "temporalio.service" in loaded and "temporalio.client" not in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("boto3", "botocore", "hvac", "kubernetes", "cryptography"))
    assert heavy == [] and "workflows.cluster" not in loaded, heavy


def test_kubeconfig_default_ttl_is_the_models_default() -> None:
    assert format_duration(DEFAULT_USER_CERTIFICATE_TTL) == DEFAULT_USER_TTL


def test_status_query_name_is_the_workflows() -> None:
    from starter.clusters import STATUS_QUERY
    from workflows.cluster import ClusterWorkflow

    assert ClusterWorkflow.get_status.__temporal_query_definition.name == STATUS_QUERY  # type: ignore[attr-defined]


def test_status_reader_query_names_are_the_workflows() -> None:
    from starter import status_reader
    from workflows.cluster import ClusterWorkflow
    from workflows.names import PROGRESS_QUERY

    assert ClusterWorkflow.get_status.__temporal_query_definition.name == status_reader.STATUS_QUERY  # type: ignore[attr-defined]
    assert status_reader.PROGRESS_QUERY == PROGRESS_QUERY
