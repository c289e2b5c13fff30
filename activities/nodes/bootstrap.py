"""Provider-neutral node bootstrap: what every node of a tenant cluster runs, wherever it runs.

A node is a KVM VM in a host pod or an EC2 instance; either way it boots the same cloud-config for
its role and Kubernetes version (kubelet, and on masters etcd and the control plane as static
pods), listens on the same ports and finds its key pairs at the same paths. Only how the key pairs
reach those paths differs, and that is the provider's part of the document (``CloudConfig.mounts``
and extra units): KVM mounts the pod's Secrets over virtio-9p, an EC2 instance fetches them from
Secrets Manager at boot. Pure functions of the spec: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from models.errors import InvalidInput
from models.naming import CLUSTER_LABEL, ROLES
from models.pki import CertificateRequest, certificate_requests
from models.spec import ClusterSpec
from models.versions import normalize_version

API_PORT: Final = 443
"""Where clients reach the tenant API (the KVM ingress, the AWS load balancer)."""
APISERVER_PORT: Final = 6443
ETCD_CLIENT_PORT: Final = 2379
ETCD_PEER_PORT: Final = 2380
KUBELET_PORT: Final = 10250

CERTS_DIR: Final = "/etc/kubernetes/ssl"
ETCD_IMAGE: Final = "registry.k8s.io/etcd:3.5.21-0"
NODE_ROLE_LABEL: Final = "node.tenantctl.io/role"
"""Label the kubelet registers its Node with (``--node-labels``)."""


@dataclass
class CloudConfig:
    """A cloud-config document being put together: the shared part, then the provider's."""

    files: list[dict[str, Any]]
    runcmd: list[list[str]]
    mounts: list[list[str]] = field(default_factory=list)

    def render(self, header: str) -> str:
        """The ``#cloud-config`` text, ``header`` as the comment line under it."""
        document: dict[str, Any] = {"write_files": self.files}
        if self.mounts:
            document["mounts"] = self.mounts
        document["runcmd"] = self.runcmd
        return f"#cloud-config\n# {header}\n" + _yaml(document)


def etcd_domain(spec: ClusterSpec) -> str:
    return f"etcd.{spec.cluster_domain}"


def etcd_members(spec: ClusterSpec) -> list[str]:
    """``name=peer-url`` of every master, named as the etcd certificates name them."""
    return [f"master-{i}=https://master-{i}.{etcd_domain(spec)}:{ETCD_PEER_PORT}" for i in range(spec.masters.count)]


def node_certificates(spec: ClusterSpec, node: str) -> list[CertificateRequest]:
    """The certificates a node loads: every request whose consumers name it.

    A node beyond the spec's count (an upgrade's surge worker) is added to the node list, so it
    gets its own kubelet certificate like any other.
    """
    nodes = spec.node_names()
    if node not in nodes:
        nodes.append(node)
    return [request for request in certificate_requests(spec, nodes) if node in request.consumers]


def certificate_dir(request_name: str, node: str) -> str:
    """Mount directory of a certificate, without the node suffix (``etcd-peer-master-0`` ->
    ``etcd-peer``), so one cloud-config per role finds every node's key pairs at the same paths."""
    return request_name.removesuffix(f"-{node}")


def dns_service_ip(spec: ClusterSpec) -> str:
    """The cluster DNS service's address: the tenth of the service network."""
    return str(ipaddress.ip_network(spec.networking.service_cidr).network_address + 10)


# --- cloud-config ----------------------------------------------------------------------------------
YAML_RENDERED_KEPT: Final = 2048
"""Rendered YAML texts kept (each a few kB): every node of a role renders the same static pods,
kubeconfigs and cloud-config, and PyYAML's pure-Python emitter was a large share of a create's CPU."""
_rendered: dict[str, str] = {}


def _yaml(data: Any) -> str:
    # repr tells apart what YAML tells apart (str from int, list from tuple) and keeps the key order
    key = repr(data)
    text = _rendered.get(key)
    if text is None:
        # PyYAML's own emitter on purpose: libyaml's (CSafeDumper) is ~15x faster but folds long
        # strings elsewhere, so every running cluster's cloud-config would change (drift on all of
        # them) and the text would depend on how each worker's PyYAML was built.
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
        if len(_rendered) >= YAML_RENDERED_KEPT:
            _rendered.clear()  # the working set is a few texts per cluster: start over rather than track use
        _rendered[key] = text
    return text


def _static_pod(name: str, image: str, command: list[str], env: list[dict[str, Any]] | None = None) -> str:
    container: dict[str, Any] = {"name": name, "image": image, "command": command}
    if env:
        container["env"] = env
    container["volumeMounts"] = [
        {"name": "ssl", "mountPath": CERTS_DIR, "readOnly": True},
        {"name": "kubeconfig", "mountPath": "/etc/kubernetes/kubeconfig", "readOnly": True},
    ]
    volumes = [
        {"name": "ssl", "hostPath": {"path": CERTS_DIR}},
        {"name": "kubeconfig", "hostPath": {"path": "/etc/kubernetes/kubeconfig"}},
    ]
    if name == "etcd":
        container["volumeMounts"].append({"name": "data", "mountPath": "/var/lib/etcd"})
        volumes.append({"name": "data", "hostPath": {"path": "/var/lib/etcd", "type": "DirectoryOrCreate"}})
    return _yaml(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"tier": "control-plane"}},
            "spec": {
                "hostNetwork": True,
                "priorityClassName": "system-node-critical",
                "containers": [container],
                "volumes": volumes,
            },
        }
    )


def _kubeconfig(server: str, user: str, cert_dir: str) -> str:
    return _yaml(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tenant",
                    "cluster": {"server": server, "certificate-authority": f"{CERTS_DIR}/{cert_dir}/ca.crt"},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": f"{CERTS_DIR}/{cert_dir}/tls.crt",
                        "client-key": f"{CERTS_DIR}/{cert_dir}/tls.key",
                    },
                }
            ],
            "contexts": [{"name": "default", "context": {"cluster": "tenant", "user": user}}],
            "current-context": "default",
        }
    )


def cloud_config_document(spec: ClusterSpec, role: str, version: str) -> CloudConfig:
    """The guest's cloud-config for every node of ``role`` at ``version``, on any provider.

    Shared by all nodes of the role, so nothing node-specific is written in: the node's name is its
    hostname, and its key pairs are at fixed paths under /etc/kubernetes/ssl, each directory
    holding ``tls.crt``, ``tls.key`` and ``ca.crt``. How the key pairs get there is the provider's
    part (``with_key_pairs_from``): KVM mounts them, an EC2 instance fetches them at boot.
    """
    if role not in ROLES:
        raise InvalidInput(f"role '{role}' is neither master nor worker")
    version = normalize_version(version)
    tag = f"v{version}"
    ssl = CERTS_DIR
    api_server = f"https://127.0.0.1:{APISERVER_PORT}" if role == "master" else f"https://{spec.api_domain}:{API_PORT}"
    dns_ip = dns_service_ip(spec)
    kubelet_config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "0.0.0.0",
        "port": KUBELET_PORT,
        "clusterDomain": "cluster.local",
        "clusterDNS": [dns_ip],
        "tlsCertFile": f"{ssl}/node/tls.crt",
        "tlsPrivateKeyFile": f"{ssl}/node/tls.key",
        "authentication": {"x509": {"clientCAFile": f"{ssl}/node/ca.crt"}, "anonymous": {"enabled": False}},
        "authorization": {"mode": "Webhook"},
        "staticPodPath": "/etc/kubernetes/manifests",
        "rotateCertificates": False,  # tenantctl rotates the key pairs and restarts the VM
        "cgroupDriver": "systemd",
    }
    node_labels_flag = f"{NODE_ROLE_LABEL}={role},{CLUSTER_LABEL}={spec.id}"
    kubelet_flags = [
        "--config=/etc/kubernetes/config/kubelet.yaml",
        "--kubeconfig=/etc/kubernetes/kubeconfig/kubelet.yaml",
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--hostname-override=%H",
        f"--node-labels={node_labels_flag}",
    ]
    if role == "master":
        kubelet_flags.append("--register-with-taints=node-role.kubernetes.io/control-plane=:NoSchedule")
    files: list[dict[str, Any]] = [
        {"path": "/etc/kubernetes/config/kubelet.yaml", "permissions": "0644", "content": _yaml(kubelet_config)},
        {
            "path": "/etc/kubernetes/kubeconfig/kubelet.yaml",
            "permissions": "0600",
            "content": _kubeconfig(api_server, "kubelet", "node"),
        },
        {
            "path": "/etc/systemd/system/kubelet.service",
            "permissions": "0644",
            "content": "\n".join(
                [
                    "[Unit]",
                    f"Description=Kubernetes kubelet {tag}",
                    "After=containerd.service",
                    "Requires=containerd.service",
                    "[Service]",
                    f"ExecStart=/opt/bin/kubelet-{tag} " + " ".join(kubelet_flags),
                    "Restart=always",
                    "RestartSec=5",
                    "[Install]",
                    "WantedBy=multi-user.target",
                    "",
                ]
            ),
        },
    ]
    if role == "master":
        node_name_env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
        files += [
            {
                "path": "/etc/kubernetes/manifests/etcd.yaml",
                "permissions": "0644",
                "content": _static_pod(
                    "etcd",
                    ETCD_IMAGE,
                    [
                        "etcd",
                        "--name=$(NODE_NAME)",
                        "--data-dir=/var/lib/etcd",
                        f"--listen-client-urls=https://0.0.0.0:{ETCD_CLIENT_PORT}",
                        f"--advertise-client-urls=https://$(NODE_NAME).{etcd_domain(spec)}:{ETCD_CLIENT_PORT}",
                        f"--listen-peer-urls=https://0.0.0.0:{ETCD_PEER_PORT}",
                        f"--initial-advertise-peer-urls=https://$(NODE_NAME).{etcd_domain(spec)}:{ETCD_PEER_PORT}",
                        "--initial-cluster=" + ",".join(etcd_members(spec)),
                        f"--initial-cluster-token={spec.id}",
                        "--initial-cluster-state=new",
                        f"--cert-file={ssl}/etcd-server/tls.crt",
                        f"--key-file={ssl}/etcd-server/tls.key",
                        f"--trusted-ca-file={ssl}/etcd-server/ca.crt",
                        "--client-cert-auth=true",
                        f"--peer-cert-file={ssl}/etcd-peer/tls.crt",
                        f"--peer-key-file={ssl}/etcd-peer/tls.key",
                        f"--peer-trusted-ca-file={ssl}/etcd-peer/ca.crt",
                        "--peer-client-cert-auth=true",
                    ],
                    node_name_env,
                ),
            },
            {
                "path": "/etc/kubernetes/manifests/kube-apiserver.yaml",
                "permissions": "0644",
                "content": _static_pod(
                    "kube-apiserver",
                    f"registry.k8s.io/kube-apiserver:{tag}",
                    [
                        "kube-apiserver",
                        f"--secure-port={APISERVER_PORT}",
                        f"--etcd-servers=https://127.0.0.1:{ETCD_CLIENT_PORT}",
                        f"--etcd-cafile={ssl}/etcd-server/ca.crt",
                        f"--etcd-certfile={ssl}/etcd-server/tls.crt",
                        f"--etcd-keyfile={ssl}/etcd-server/tls.key",
                        f"--tls-cert-file={ssl}/apiserver/tls.crt",
                        f"--tls-private-key-file={ssl}/apiserver/tls.key",
                        f"--client-ca-file={ssl}/apiserver/ca.crt",
                        f"--kubelet-client-certificate={ssl}/apiserver/tls.crt",
                        f"--kubelet-client-key={ssl}/apiserver/tls.key",
                        f"--service-account-key-file={ssl}/service-account/tls.crt",
                        f"--service-account-signing-key-file={ssl}/service-account/tls.key",
                        f"--service-account-issuer=https://{spec.api_domain}",
                        f"--service-cluster-ip-range={spec.networking.service_cidr}",
                        f"--advertise-address={spec.networking.api_service_ip}",
                        "--authorization-mode=Node,RBAC",
                        "--enable-admission-plugins=NodeRestriction",
                        "--anonymous-auth=false",
                    ],
                ),
            },
            {
                "path": "/etc/kubernetes/manifests/kube-controller-manager.yaml",
                "permissions": "0644",
                "content": _static_pod(
                    "kube-controller-manager",
                    f"registry.k8s.io/kube-controller-manager:{tag}",
                    [
                        "kube-controller-manager",
                        "--kubeconfig=/etc/kubernetes/kubeconfig/controller-manager.yaml",
                        f"--cluster-cidr={spec.networking.pod_cidr}",
                        f"--service-cluster-ip-range={spec.networking.service_cidr}",
                        f"--service-account-private-key-file={ssl}/service-account/tls.key",
                        f"--root-ca-file={ssl}/apiserver/ca.crt",
                        "--use-service-account-credentials=true",
                        "--leader-elect=true",
                    ],
                ),
            },
            {
                "path": "/etc/kubernetes/manifests/kube-scheduler.yaml",
                "permissions": "0644",
                "content": _static_pod(
                    "kube-scheduler",
                    f"registry.k8s.io/kube-scheduler:{tag}",
                    ["kube-scheduler", "--kubeconfig=/etc/kubernetes/kubeconfig/scheduler.yaml", "--leader-elect=true"],
                ),
            },
            {
                "path": "/etc/kubernetes/kubeconfig/controller-manager.yaml",
                "permissions": "0600",
                "content": _kubeconfig(api_server, "system:kube-controller-manager", "controller-manager"),
            },
            {
                "path": "/etc/kubernetes/kubeconfig/scheduler.yaml",
                "permissions": "0600",
                "content": _kubeconfig(api_server, "system:kube-scheduler", "scheduler"),
            },
        ]
    return CloudConfig(
        files=files,
        runcmd=[
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "containerd.service", "kubelet.service"],
        ],
    )
