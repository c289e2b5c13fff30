"""The node images (images/) against what tenantctl hands them, checked statically.

Neither image can be built or booted here (no Docker engine, no KVM, no AWS): this holds the
contract between the manifests and cloud-configs the providers write (activities/kvm/manifests.py,
activities/aws/resources.py) and the image definitions — env names, ports, mount points, paths,
the 9p tag, graceful stop, image and AMI names — so a change on one side fails here.
"""

from __future__ import annotations

import py_compile
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.aws import resources as aws
from activities.kvm import manifests as m
from models.naming import NODE_LABEL, ROLES
from models.spec import AwsSettings, ClusterSpec, KvmSettings
from tests.specs import example, small_kvm

ROOT = Path(__file__).resolve().parents[2]
KVM_IMAGE, AWS_IMAGE = ROOT / "images" / "kvm-node", ROOT / "images" / "aws-node"
ENTRYPOINT = (KVM_IMAGE / "entrypoint.sh").read_text()
DOCKERFILE = (KVM_IMAGE / "Dockerfile").read_text()
PACKER = (AWS_IMAGE / "tenantctl-node.pkr.hcl").read_text()
PROVISION = (AWS_IMAGE / "files" / "provision.sh").read_text()
BOOTSTRAP = (AWS_IMAGE / "files" / "bootstrap").read_text()
FETCH = (AWS_IMAGE / "files" / "fetch-certificates").read_text()
VERSION = "1.32.4"


def shell_value(name: str, script: str = ENTRYPOINT) -> str:
    """A top-level ``NAME="value"`` or ``NAME="${NAME:-value}"`` assignment's (default) value."""
    found = re.search(rf'^{name}="(?:\$\{{{name}:-)?([^"}}]*)\}}?"$', script, re.MULTILINE)
    assert found, f"{name} not assigned in the script"
    return found.group(1)


def required_env() -> set[str]:
    found = re.search(r"^for name in ([A-Z_ ]+); do\n  require", ENTRYPOINT, re.MULTILINE)
    assert found, "the entrypoint's list of required variables is missing"
    return set(found.group(1).split())


def container(spec: ClusterSpec, node: str) -> dict[str, Any]:
    deployment = m.node_deployment_manifest(spec, node, VERSION)
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def pod(spec: ClusterSpec, node: str) -> dict[str, Any]:
    return dict(m.node_deployment_manifest(spec, node, VERSION)["spec"]["template"]["spec"])


@pytest.fixture
def spec() -> ClusterSpec:
    return small_kvm()


# --- KVM -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", ["master-0", "worker-0"])
def test_the_entrypoint_needs_exactly_the_variables_the_deployment_sets(spec: ClusterSpec, node: str) -> None:
    env = {item["name"]: item["value"] for item in container(spec, node)["env"]}
    assert set(env) == required_env()
    assert env["CLOUD_CONFIG_PATH"] == f"{m.CLOUD_CONFIG_DIR}/{m.CLOUD_CONFIG_KEY}"
    assert env["SHARED_DIRS"] == m.CERTS_DIR
    assert env["ROLE"] in ("master", "worker") and f"{env['ROLE']})" in ENTRYPOINT
    assert env["KUBERNETES_VERSION"] == VERSION  # compared with the image's own version file


@pytest.mark.parametrize("node", ["master-0", "worker-0"])
def test_ports_probe_and_mounts_match_the_image(spec: ClusterSpec, node: str) -> None:
    spec_container, role = container(spec, node), m.node_role(node)
    ports = {p["containerPort"] for p in spec_container["ports"]}
    assert ports == {int(p) for p in shell_value(f"{role.upper()}_PORTS").split()}
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.MULTILINE) for p in line.split()}
    assert ports <= exposed
    assert spec_container["readinessProbe"]["tcpSocket"]["port"] in ports
    mounts = {mount["mountPath"] for mount in spec_container["volumeMounts"]}
    assert m.CLOUD_CONFIG_DIR in mounts
    key_dirs = mounts - {m.CLOUD_CONFIG_DIR}
    assert key_dirs and all(path.startswith(m.CERTS_DIR + "/") for path in key_dirs)
    volumes = re.search(r"^VOLUME (\[.+\])$", DOCKERFILE, re.MULTILINE)
    assert volumes and set(yaml.safe_load(volumes.group(1))) == {m.CLOUD_CONFIG_DIR, m.CERTS_DIR}
    # the Secrets hold what the entrypoint checks for in every key pair directory
    assert "for file in tls.crt tls.key ca.crt" in ENTRYPOINT
    # /dev/kvm, tap and bridge need a privileged container
    assert spec_container["securityContext"] == {"privileged": True} and "/dev/kvm" in ENTRYPOINT


def test_the_guest_gets_the_cloud_config_and_key_pairs_where_it_looks(spec: ClusterSpec) -> None:
    for role in ROLES:
        document = yaml.safe_load(m.cloud_config(spec, role, VERSION))
        ((tag, target, fstype, options, *_),) = document["mounts"]
        assert (tag, target, fstype) == (shell_value("CERTS_TAG"), m.CERTS_DIR, "9p") and "virtio" in options
        assert 'mount_tag="$CERTS_TAG"' in ENTRYPOINT and "virtio-9p-pci" in ENTRYPOINT
        units = {f["path"]: f["content"] for f in document["write_files"]}
        kubelet = re.search(r"ExecStart=(\S+)", units["/etc/systemd/system/kubelet.service"])
        assert kubelet and kubelet.group(1) == f"/opt/bin/kubelet-v{VERSION}"
        assert "--upload /kubelet:/opt/bin/kubelet-v${KUBERNETES_VERSION}" in DOCKERFILE
        assert ["systemctl", "enable", "--now", "containerd.service", "kubelet.service"] in document["runcmd"]
        assert "--install containerd," in DOCKERFILE and "cloud-init" in DOCKERFILE
    # NoCloud seed: the user-data is the mounted cloud-config, the hostname the node's name
    assert 'cp "$CLOUD_CONFIG_PATH" "$STATE/user-data"' in ENTRYPOINT
    assert "local-hostname: ${NODE_NAME}" in ENTRYPOINT and "cloud-localds" in ENTRYPOINT


def test_graceful_stop_fits_the_pods_grace_period(spec: ClusterSpec) -> None:
    grace = pod(spec, "master-0")["terminationGracePeriodSeconds"]
    assert grace == m.VM_SHUTDOWN_GRACE_SECONDS
    assert int(shell_value("SHUTDOWN_TIMEOUT")) < grace
    assert "trap stop_vm TERM" in ENTRYPOINT and "system_powerdown" in ENTRYPOINT
    assert re.search(r"^STOPSIGNAL SIGTERM$", DOCKERFILE, re.MULTILINE)


def test_image_name_version_file_and_memory(spec: ClusterSpec) -> None:
    image = m.node_image(spec, VERSION)
    assert image == f"{KvmSettings().image_repository}:v{VERSION}"
    assert f"-t {KvmSettings().image_repository}:v{VERSION}" in DOCKERFILE  # the build line builds that tag
    version_file = shell_value("IMAGE_VERSION_FILE")
    assert f'echo "$KUBERNETES_VERSION" > {version_file}' in DOCKERFILE
    assert f"COPY --from=node-os /node-os.qcow2 {shell_value('NODE_OS_IMAGE')}" in DOCKERFILE
    env = {item["name"]: item["value"] for item in container(spec, "worker-0")["env"]}
    limit_mib = int(container(spec, "worker-0")["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024
    assert int(env["MEMORY"]) == limit_mib > int(shell_value("QEMU_OVERHEAD_MIB")) + 512


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_entrypoint_parses_and_refuses_a_pod_without_its_contract(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(KVM_IMAGE / "entrypoint.sh")], check=False).returncode == 0
    result = subprocess.run(
        ["bash", str(KVM_IMAGE / "entrypoint.sh")],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 64 and "CLUSTER_ID is not set (the node Deployment sets it)" in result.stderr


# --- AWS -------------------------------------------------------------------------------------------------
@pytest.fixture
def aws_spec() -> ClusterSpec:
    return example("aws-cluster.yaml")


def test_the_ami_name_is_the_one_the_provider_looks_up(aws_spec: ClusterSpec) -> None:
    assert 'ami_name      = "${var.ami_name_prefix}-${var.kubernetes_version}"' in PACKER
    default = re.search(r'variable "ami_name_prefix" \{[^}]*default\s*=\s*"([^"]+)"', PACKER)
    assert default and default.group(1) == AwsSettings().ami_name_prefix
    assert aws.ami_name(aws_spec, VERSION) == f"{default.group(1)}-{VERSION}"
    # IMDSv2 only, as the launch templates say
    options = aws.metadata_options()
    assert options["HttpTokens"] == "required" and 'http_tokens                 = "required"' in PACKER
    assert f"http_put_response_hop_limit = {options['HttpPutResponseHopLimit']}" in PACKER
    assert "X-aws-ec2-metadata-token" in BOOTSTRAP


@pytest.mark.parametrize("role", ["master", "worker"])
def test_user_data_and_cloud_config_call_what_the_ami_installs(aws_spec: ClusterSpec, role: str) -> None:
    script = aws.user_data(aws_spec, role, VERSION, "bucket-x")
    command = re.search(r"^exec (\S+)((?: --[a-z-]+ \S+)+)$", script, re.MULTILINE)
    assert command, script
    assert command.group(1) == "/opt/tenantctl/bin/bootstrap"
    assert "install -m 0755 /tmp/tenantctl/bootstrap /opt/tenantctl/bin/bootstrap" in PROVISION
    flags = dict(re.findall(r"--([a-z-]+) (\S+)", command.group(2)))
    assert set(flags) == {"region", "cloud-config", "node-name-tag"}
    assert all(f'parser.add_argument("--{flag}"' in BOOTSTRAP for flag in flags)
    assert flags["node-name-tag"] == NODE_LABEL and flags["cloud-config"].startswith("s3://bucket-x/")

    document = yaml.safe_load(aws.cloud_config(aws_spec, role, VERSION, "eu-central-1"))
    units = {f["path"]: f["content"] for f in document["write_files"]}
    fetch = re.search(r"ExecStart=(\S+) (\S+)", units["/etc/systemd/system/tenantctl-certificates.service"])
    assert fetch and fetch.group(1) == "/opt/tenantctl/bin/fetch-certificates"
    assert "install -m 0755 /tmp/tenantctl/fetch-certificates /opt/tenantctl/bin/fetch-certificates" in PROVISION
    manifest = yaml.safe_load(units[fetch.group(2)])
    assert set(manifest) == {"region", "trust_bundle", "certificates"}
    assert all(f'manifest["{key}"]' in FETCH for key in manifest)
    for entry in manifest["certificates"]:
        assert set(entry) == {"secret", "directory"} and entry["directory"].startswith(m.CERTS_DIR + "/")
    assert 'entry["secret"].replace("${NODE_NAME}", node)' in FETCH
    assert any("${NODE_NAME}" in e["secret"] for e in manifest["certificates"])  # the node's own kubelet pair
    # the same node OS as KVM: the kubelet at the path the cloud-config starts
    kubelet = re.search(r"ExecStart=(\S+)", units["/etc/systemd/system/kubelet.service"])
    assert kubelet and kubelet.group(1) == f"/opt/bin/kubelet-v{VERSION}"
    assert 'curl -fsSL -o "/opt/bin/kubelet-v${KUBERNETES_VERSION}"' in PROVISION
    # bootstrap applies exactly the cloud-config parts tenantctl writes
    assert set(document) <= {"write_files", "runcmd"}


def test_the_agents_compile(tmp_path: Path) -> None:
    for script in ("bootstrap", "fetch-certificates"):
        py_compile.compile(str(AWS_IMAGE / "files" / script), cfile=str(tmp_path / f"{script}.pyc"), doraise=True)
