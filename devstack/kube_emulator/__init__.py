"""An HTTP Kubernetes API emulator that the official `kubernetes` client and `kubectl` accept.

Start it in-process::

    from devstack.kube_emulator import Emulator
    with Emulator(port=0, ready_delay=0.2) as emu:
        emu.write_kubeconfig("kubeconfig")            # host cluster
        emu.write_tenant_kubeconfig("acme", "acme.kc")  # tenant virtual cluster

or as a process: ``python -m devstack.kube_emulator --port 6443 --kubeconfig PATH [--state-file PATH]
[--ready-delay 0.5]``.

Addressing: the root path is the host cluster; ``/tenants/<name>/...`` is an independent virtual
cluster (own objects, own discovery), created on first use. One resourceVersion counter serves all.

Deployment annotations understood by the controller (host or tenant cluster):

- ``emulator.tenantctl.io/never-ready: "true"``: never becomes available (Available=False,
  MinimumReplicasUnavailable; Progressing=False/ProgressDeadlineExceeded after
  ``spec.progressDeadlineSeconds``). Removing it starts a normal rollout.
- ``emulator.tenantctl.io/ready-delay-seconds: "N"``: per-object override of the ready delay.

Host-cluster Deployments only (a Deployment *is* a VM whose kubelet joins a tenant cluster):

- ``emulator.tenantctl.io/tenant-node: "<tenant>/<node>"``: once available, Node ``<node>`` is
  created/updated in tenant ``<tenant>`` with Ready=True; never-ready turns an existing Node
  Ready=False; deleting the Deployment removes the Node and the pods bound to it.
- ``emulator.tenantctl.io/kubelet-version: "v1.31.2"``: ``status.nodeInfo.kubeletVersion``.
- ``emulator.tenantctl.io/tenant-pods: "3"``: at first registration, that many pods
  ``<node>-workload-<i>`` (label ``app=workload``, ``spec.nodeName=<node>``, Running/Ready) in the
  tenant's ``default`` namespace, so drains have something to evict.

Node labels: ``kubernetes.io/hostname=<node>``, ``kubernetes.io/os=linux``,
``kubernetes.io/arch=amd64``, plus every Deployment label whose key starts with
``node-role.kubernetes.io/``, ``node.kubernetes.io/``, ``topology.kubernetes.io/`` or
``node.tenantctl.io/``. Labels and ``spec`` set on the Node by clients (cordon) are kept.

Fault injection (never applied to ``/_emulator/*``, ``/healthz``, ``/livez``, ``/readyz``):
``GET|PUT|DELETE /_emulator/faults`` with ``{"latency_ms": 0, "error_rate": 0.0,
"error_codes": [500, 503, 429], "outage_until": null | epoch, "outage_seconds": N}``; PUT replaces the
whole setting, DELETE clears it. 429 carries ``Retry-After: 1`` (so urllib3, and with it the
official client, retries idempotent requests on it by default; set ``Configuration.retries = False``
to see every 429).

Service account tokens (tokens.py): the TokenRequest API (``POST .../serviceaccounts/NAME/token``,
``kubectl create token``) signs RS256 JWTs with the claims a real apiserver writes; the TokenReview API
(``POST /apis/authentication.k8s.io/v1/tokenreviews``) checks signature, issuer, expiry, audiences and
that the ServiceAccount still exists, so OpenBao's ``kubernetes`` auth method logs in against it.

Modelled like kube-apiserver: server-side apply and managedFields (apply.py, fieldsets.py), garbage
collection (garbage.py), decoding against the real 1.32 OpenAPI schemas with fieldValidation (schema.py),
422 validation (validation.py), server-side printing (printers.py), /openapi/v2 and /openapi/v3
(openapi.py). Deliberately not modelled: protobuf and CBOR bodies (415, whose message gives the JSON
workaround `kubectl create ... --dry-run=client -o yaml | kubectl apply -f -`; the one exception is
the TokenRequest of `kubectl create token`), real pods behind Deployments, RBAC (every request is
allowed; only TokenReview asks who calls) and admission webhooks, watch bookmarks, pod graceful
termination (pods go at once), aggregated discovery. See the README's "The host API emulator".
"""

from .controllers import KUBELET_VERSION, NEVER_READY, READY_DELAY, TENANT_NODE, TENANT_PODS
from .emulator import Emulator
from .resources import RESOURCES, ApiError, ResourceType

__all__ = [
    "KUBELET_VERSION",
    "NEVER_READY",
    "READY_DELAY",
    "RESOURCES",
    "TENANT_NODE",
    "TENANT_PODS",
    "ApiError",
    "Emulator",
    "ResourceType",
]
