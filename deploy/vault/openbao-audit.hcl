# OpenBao (2.x) refuses to enable audit devices through the API; declare the device in the server
# configuration instead (merge this into it, or pass it as a further -config file). Vault:
# deploy/vault/setup.sh enables the same device with `vault audit enable`.
# Every request and response is logged, one JSON record per line, secrets HMAC'd.
audit "file" "tenantctl-audit" {
  description = "tenantctl: every request and response (secrets HMAC'd)"
  options {
    file_path = "/openbao/audit/audit.log"
    mode      = "0600"
  }
}
