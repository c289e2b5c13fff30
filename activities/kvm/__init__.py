"""The KVM provider: a tenant cluster as objects in the host Kubernetes cluster (activities ``kvm.*``)."""
