#!/bin/sh
# One-time setup of the worker's Vault identity (run with an admin token; VAULT_ADDR set).
# Kubernetes auth (the worker's ServiceAccount in the management cluster) and/or AppRole.
set -eu
here=$(dirname "$0")
vault policy write tenantctl_worker "$here/tenantctl-worker.hcl"

# Kubernetes auth: Vault verifies the pod's service account token with the cluster's TokenReview API.
vault auth enable kubernetes 2>/dev/null || true
vault write auth/kubernetes/config kubernetes_host="${KUBERNETES_HOST:?https://<api-server>:6443}"
vault write auth/kubernetes/role/tenantctl-worker \
  bound_service_account_names=tenantctl-worker \
  bound_service_account_namespaces=tenantctl \
  token_policies=tenantctl_worker token_no_default_policy=true \
  token_ttl=1h token_max_ttl=24h

# AppRole (a worker outside the cluster, or no Kubernetes auth): the secret id goes into the
# tenantctl-vault Secret (keys role-id, secret-id).
vault auth enable approle 2>/dev/null || true
vault write auth/approle/role/tenantctl-worker \
  token_policies=tenantctl_worker token_no_default_policy=true \
  token_ttl=1h token_max_ttl=24h secret_id_ttl=0
echo "role-id:   $(vault read -field=role_id auth/approle/role/tenantctl-worker/role-id)"
echo "secret-id: run 'vault write -f -field=secret_id auth/approle/role/tenantctl-worker/secret-id'"

# Audit: every request and response, secrets HMAC'd (a file device; a socket or syslog in production).
vault audit enable file file_path="${VAULT_AUDIT_FILE:-/vault/audit/audit.log}" 2>/dev/null || true
