#!/bin/bash
# The tenantctl KVM node: boots one tenant node VM (QEMU/KVM) inside its host pod.
#
# Contract with the node Deployment that activities/kvm_manifests.py writes (checked statically by
# tests/deploy/test_node_images.py):
#   env      CLUSTER_ID NODE_NAME ROLE KUBERNETES_VERSION CORES MEMORY (MiB) CLOUD_CONFIG_PATH SHARED_DIRS
#   mounts   CLOUD_CONFIG_PATH: the role's cloud-config (ConfigMap cloud-config-<role>-<version>, key user-data)
#            SHARED_DIRS (/etc/kubernetes/ssl): one directory per key pair (Secrets cert-*: tls.crt, tls.key, ca.crt)
#   ports    master: 6443 (apiserver) 2379/2380 (etcd) 10250 (kubelet); worker: 10250
#   device   /dev/kvm (the container is privileged); tap and bridge devices for the VM's network
#   stop     SIGTERM -> ACPI power button; the guest stops kubelet/etcd cleanly within
#            SHUTDOWN_TIMEOUT, below the pod's terminationGracePeriodSeconds (120)
# Guest side: the cloud-config is the NoCloud user-data; the VM's hostname is NODE_NAME; SHARED_DIRS
# is shared read-only over virtio-9p with mount tag "certs", which the cloud-config mounts at
# /etc/kubernetes/ssl. Network: the pod's IP moves to the VM (bridge + tap, DHCP from dnsmasq), so
# the ports above, the readiness probe and etcd's peer traffic reach the guest itself.
set -euo pipefail

MASTER_PORTS="6443 2379 2380 10250"
WORKER_PORTS="10250"
CERTS_TAG="certs"
SHUTDOWN_TIMEOUT="${SHUTDOWN_TIMEOUT:-100}"
QEMU_OVERHEAD_MIB="${QEMU_OVERHEAD_MIB:-256}"
NODE_OS_IMAGE="/var/lib/tenantctl/node-os.qcow2"
IMAGE_VERSION_FILE="/var/lib/tenantctl/kubernetes-version"
STATE="/run/tenantctl-vm"

fail() { echo "k8s-kvm: $*" >&2; exit 64; }
require() { [ -n "${!1:-}" ] || fail "$1 is not set (the node Deployment sets it)"; }

for name in CLUSTER_ID NODE_NAME ROLE KUBERNETES_VERSION CORES MEMORY CLOUD_CONFIG_PATH SHARED_DIRS; do
  require "$name"
done
case "$ROLE" in
  master) ports="$MASTER_PORTS" ;;
  worker) ports="$WORKER_PORTS" ;;
  *) fail "ROLE=$ROLE is neither master nor worker" ;;
esac
[ -c /dev/kvm ] || fail "/dev/kvm missing: the pod must be privileged on a host with KVM"
[ -s "$CLOUD_CONFIG_PATH" ] || fail "no cloud-config at $CLOUD_CONFIG_PATH (ConfigMap not mounted?)"
[ -d "$SHARED_DIRS" ] || fail "no key pairs at $SHARED_DIRS (Secrets not mounted?)"
for dir in "$SHARED_DIRS"/*/; do
  for file in tls.crt tls.key ca.crt; do
    [ -s "$dir$file" ] || fail "key pair directory $dir lacks $file"
  done
done
image_version="$(cat "$IMAGE_VERSION_FILE")"
[ "$image_version" = "$KUBERNETES_VERSION" ] || fail "image holds Kubernetes $image_version, not $KUBERNETES_VERSION"
vm_memory=$((MEMORY - QEMU_OVERHEAD_MIB))
[ "$vm_memory" -ge 512 ] || fail "MEMORY=$MEMORY MiB leaves less than 512 MiB for the VM"

mkdir -p "$STATE"

# --- disk and seed: a fresh overlay per pod start; the node OS image stays read-only -------------
qemu-img create -q -f qcow2 -F qcow2 -b "$NODE_OS_IMAGE" "$STATE/disk.qcow2"
cat > "$STATE/meta-data" <<META
instance-id: ${CLUSTER_ID}-${NODE_NAME}-$(date +%s)
local-hostname: ${NODE_NAME}
META
cp "$CLOUD_CONFIG_PATH" "$STATE/user-data"
cloud-localds "$STATE/seed.iso" "$STATE/user-data" "$STATE/meta-data"

# --- network: hand the pod's address to the VM ------------------------------------------------------
pod_cidr="$(ip -o -4 addr show dev eth0 | awk '{print $4}' | head -n1)"
pod_ip="${pod_cidr%/*}"
gateway="$(ip -4 route show default | awk '{print $3}' | head -n1)"
dns="$(awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)"
search="$(awk '/^search/ {$1=""; print substr($0, 2); exit}' /etc/resolv.conf)"
mac="52:54:00:$(echo -n "$CLUSTER_ID/$NODE_NAME" | md5sum | sed 's/^\(..\)\(..\)\(..\).*/\1:\2:\3/')"
ip link add br0 type bridge
ip tuntap add dev tap0 mode tap
ip link set tap0 master br0
ip addr flush dev eth0
ip link set eth0 master br0
ip link set br0 up && ip link set tap0 up && ip link set eth0 up
ip addr add 169.254.254.1/32 dev br0  # dnsmasq's own address; the pod keeps none
dnsmasq --interface=br0 --bind-interfaces --except-interface=lo --port=0 \
  --dhcp-range="$pod_ip,static" --dhcp-host="$mac,$pod_ip,$NODE_NAME,infinite" \
  --dhcp-option=option:router,"$gateway" --dhcp-option=option:dns-server,"$dns" \
  --dhcp-option=option:domain-search,"${search// /,}" --dhcp-option=option:netmask,"$(ipcalc -m "$pod_cidr" | cut -d= -f2)" \
  --dhcp-authoritative --log-facility=-
echo "k8s-kvm: $ROLE $NODE_NAME of $CLUSTER_ID, Kubernetes $KUBERNETES_VERSION, $CORES CPUs, $vm_memory MiB, ports $ports at $pod_ip"

# --- the VM ---------------------------------------------------------------------------------------------
qemu-system-x86_64 \
  -name "$NODE_NAME" -machine q35,accel=kvm -cpu host -smp "$CORES" -m "$vm_memory" \
  -nographic -serial mon:stdio -no-reboot \
  -drive file="$STATE/disk.qcow2",if=virtio,cache=none,discard=unmap \
  -drive file="$STATE/seed.iso",if=virtio,format=raw,readonly=on \
  -netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net0,mac="$mac" \
  -fsdev local,id=certs,path="$SHARED_DIRS",security_model=none,readonly=on \
  -device virtio-9p-pci,fsdev=certs,mount_tag="$CERTS_TAG" \
  -qmp unix:"$STATE/qmp.sock",server=on,wait=off &
qemu=$!

stop_vm() {
  echo "k8s-kvm: SIGTERM, powering the guest down (up to ${SHUTDOWN_TIMEOUT}s)"
  printf '{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n' | socat - UNIX-CONNECT:"$STATE/qmp.sock" || true
  for _ in $(seq "$SHUTDOWN_TIMEOUT"); do
    kill -0 "$qemu" 2>/dev/null || exit 0
    sleep 1
  done
  echo "k8s-kvm: guest did not power down in ${SHUTDOWN_TIMEOUT}s; stopping QEMU" >&2
  kill -TERM "$qemu" 2>/dev/null || true
  exit 1
}
trap stop_vm TERM INT
wait "$qemu"
