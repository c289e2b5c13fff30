# The tenantctl worker's Vault/OpenBao policy (install it as "tenantctl_worker"): exactly what its PKI activities use
# (activities/vault_pki.py), for cluster PKI mounts under the default prefix "pki"
# (TENANTCTL_VAULT_PKI_MOUNT_PREFIX; with another prefix, replace every "pki/" below).
# tests/deploy/test_vault_policy.py runs a whole cluster lifecycle with a token of this policy
# and checks what it refuses. "+" matches one path segment: one cluster id.

# --- sys/: the cluster mounts and the per-cluster policies, nothing else ----------------------------
# The mount listing: the worker reads one mount at its own path (below) and falls back to the list
# only when that read is refused or answers a 400 it does not recognise (it sees mount names and
# types, no secret).
path "sys/mounts" {
  capabilities = ["read"]
}

# Read, enable and disable one cluster's PKI secrets engine, pki/<id>, and tune its TTLs.
path "sys/mounts/pki/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/mounts/pki/+/tune" {
  capabilities = ["read", "update"]
}

# The per-cluster issuing policies tenantctl-<id>. This policy itself is named tenantctl_worker
# (underscore), outside that glob: the worker cannot rewrite its own policy.
path "sys/policies/acl/tenantctl-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# --- one cluster's PKI mount ---------------------------------------------------------------------------
# Listings are "<path>/" (LIST requests carry the trailing slash): granted exactly, no glob.
# Root CAs are generated "internal": the private key never leaves Vault. The "exported" variants
# (which return the key) are not granted, and nothing here reads key material.
path "pki/+/root/generate/internal" {
  capabilities = ["create", "update"]
}
path "pki/+/issuers/" {
  capabilities = ["list"]
}
path "pki/+/issuer/+" {
  capabilities = ["read"]
}
path "pki/+/config/issuers" {
  capabilities = ["read", "create", "update"]
}
# Tidy: auto-tidy removes expired and revoked leaves.
path "pki/+/config/auto-tidy" {
  capabilities = ["read", "create", "update"]
}
path "pki/+/roles/" {
  capabilities = ["list"]
}
path "pki/+/roles/*" {
  capabilities = ["read", "create", "update", "delete"]
}
# Issue a component's key pair from the cluster's current CA.
path "pki/+/issuer/+/issue/*" {
  capabilities = ["create", "update"]
}
# Sign a user's CSR (tenantctl kubeconfig): the user's key never reaches Vault.
path "pki/+/issuer/+/sign-verbatim" {
  capabilities = ["create", "update"]
}
path "pki/+/certs/" {
  capabilities = ["list"]
}
# The drift check skips revoked leaves by this listing (pki.observe: certificates no key pair holds).
path "pki/+/certs/revoked/" {
  capabilities = ["list"]
}
path "pki/+/cert/*" {
  capabilities = ["read"]
}
path "pki/+/revoke" {
  capabilities = ["create", "update"]
}
# Teardown: a mount about to be deleted rebuilds its CRL lazily (else every revocation rebuilds it).
path "pki/+/config/crl" {
  capabilities = ["create", "update"]
}

# Child tokens of one cluster's policy (the token role's allowed_policies_glob is tenantctl-*):
# each certificate is issued with one, bound to that cluster's mount (TENANTCTL_VAULT_CLUSTER_TOKEN_ROLE).
path "auth/token/create/tenantctl-cluster" {
  capabilities = ["update"]
}

# --- the worker's own token ------------------------------------------------------------------------
# (Also in Vault's "default" policy; here so that roles may set token_no_default_policy.)
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
