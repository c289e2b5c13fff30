#!/bin/sh
# One-time setup of the worker's Vault identity (run with an admin token; VAULT_ADDR and
# VAULT_TOKEN set; BAO_ADDR/BAO_TOKEN for OpenBao's bao).
# Kubernetes auth (the worker's ServiceAccount in the management cluster) and/or AppRole.
set -eu
here=$(dirname "$0")
vault() { "${VAULT_CLI:-vault}" "$@"; }  # VAULT_CLI=bao for OpenBao
vault policy write tenantctl_worker "$here/tenantctl-worker.hcl"

# Kubernetes auth: Vault verifies the pod's service account token with the cluster's TokenReview API.
vault auth enable kubernetes 2>/dev/null || true
# Vault outside the management cluster: also KUBERNETES_CA_CERT (file) and TOKEN_REVIEWER_JWT (a
# token allowed to create TokenReviews: deploy/vault/token-reviewer.yaml says how to get both).
set -- kubernetes_host="${KUBERNETES_HOST:?https://<api-server>:6443}"
if [ -n "${KUBERNETES_CA_CERT:-}" ]; then set -- "$@" kubernetes_ca_cert=@"$KUBERNETES_CA_CERT" disable_local_ca_jwt=true; fi
if [ -n "${TOKEN_REVIEWER_JWT:-}" ]; then set -- "$@" token_reviewer_jwt="$TOKEN_REVIEWER_JWT"; fi
vault write auth/kubernetes/config "$@"
# Only the worker's ServiceAccount, only with its projected token of audience "vault"
# (deploy/base/worker-deployment.yaml), which the Kubernetes API itself does not accept.
vault write auth/kubernetes/role/tenantctl-worker \
  bound_service_account_names=tenantctl-worker \
  bound_service_account_namespaces="${WORKER_NAMESPACE:-tenantctl}" \
  audience=vault \
  token_policies=tenantctl_worker token_no_default_policy=true \
  token_ttl="${WORKER_TOKEN_TTL:-1h}" token_max_ttl="${WORKER_TOKEN_MAX_TTL:-24h}"

# AppRole (a worker outside the cluster, or no Kubernetes auth): the secret id goes into the
# tenantctl-vault Secret (keys role-id, secret-id).
vault auth enable approle 2>/dev/null || true
vault write auth/approle/role/tenantctl-worker \
  token_policies=tenantctl_worker token_no_default_policy=true \
  token_ttl=1h token_max_ttl=24h secret_id_ttl=0
echo "role-id:   $(vault read -field=role_id auth/approle/role/tenantctl-worker/role-id)"
echo "secret-id: run 'vault write -f -field=secret_id auth/approle/role/tenantctl-worker/secret-id'"

# Per-cluster child tokens (TENANTCTL_VAULT_CLUSTER_TOKEN_ROLE=tenantctl-cluster): a cluster's
# certificates are issued with a short-lived token of that cluster's tenantctl-<id> policy only.
vault write auth/token/roles/tenantctl-cluster \
  allowed_policies_glob='tenantctl-*' disallowed_policies=tenantctl_worker,root \
  token_no_default_policy=true orphan=false renewable=false token_explicit_max_ttl=15m

# Audit: every request and response, secrets HMAC'd (a file device; a socket or syslog in production).
# OpenBao only takes audit devices from its configuration file: deploy/vault/openbao-audit.hcl.
if ! vault audit list 2>/dev/null | grep -q '^tenantctl-audit/'; then
  vault audit enable -path=tenantctl-audit file file_path="${VAULT_AUDIT_FILE:-/vault/audit/audit.log}" mode=0600 \
    || echo "audit device not enabled by API: on OpenBao declare deploy/vault/openbao-audit.hcl in the server config" >&2
fi
