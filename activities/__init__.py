"""Temporal activities of tenantctl: one class per backend, clients injected in ``__init__``.

Packages: ``providers`` (the contract every infrastructure provider fulfils), ``kvm`` and ``aws``
(the two providers, which never import each other), ``nodes`` (the node bootstrap both share),
``pki`` (Vault and the rotation schedules), ``tenant`` (a tenant cluster's own API) and ``common``
(error translation, the one wait budget, Kubernetes responses).

Conventions (every module here follows them):
- hvac, kubernetes and boto3 block, so activities are sync ``def`` methods run on the worker's
  thread pool; only ``worker/`` builds clients from settings; nothing does I/O at import time.
- Each mutating activity is an ``ensure_*``: read current, compute desired, apply the difference;
  names derive from the cluster id; "already exists" and "not found" are success.
- Backend exceptions become ``models.errors`` types through ``activities.common.errors``.
- Private keys never leave an activity: they go straight to their destination; results carry
  serials and expiry only.
"""
