#!/bin/sh
# Runs inside the Packer build instance (as root): the node OS of tenantctl-node-<version>.
set -eu
: "${KUBERNETES_VERSION:?set by the Packer template}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends containerd socat conntrack ebtables ethtool cloud-init python3 python3-boto3 python3-yaml
mkdir -p /etc/containerd /opt/bin /opt/tenantctl/bin
containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml
curl -fsSL -o "/opt/bin/kubelet-v${KUBERNETES_VERSION}" "https://dl.k8s.io/release/v${KUBERNETES_VERSION}/bin/linux/amd64/kubelet"
chmod 0755 "/opt/bin/kubelet-v${KUBERNETES_VERSION}"
install -m 0755 /tmp/tenantctl/bootstrap /opt/tenantctl/bin/bootstrap
install -m 0755 /tmp/tenantctl/fetch-certificates /opt/tenantctl/bin/fetch-certificates
echo "${KUBERNETES_VERSION}" > /opt/tenantctl/kubernetes-version
printf 'net.ipv4.ip_forward=1\n' > /etc/sysctl.d/90-kubernetes.conf
# Leave no identity behind: every instance gets its own.
cloud-init clean --logs
truncate -s 0 /etc/machine-id
rm -rf /tmp/tenantctl /home/ubuntu/.ssh/authorized_keys
