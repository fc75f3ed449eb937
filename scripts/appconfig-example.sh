#!/usr/bin/env bash
# Runs config/appconfig.yaml (the seeds' case) against the local emulator, no Azure account:
# starts `azure-emulator` with a store and a vault, seeds them through the
# emulator's control API, runs the sidecar once with the variables the workload-identity webhook
# would inject, and shows what it published. Everything stays on 127.0.0.1.
# Usage: scripts/appconfig-example.sh [OUTPUT_DIR]   (default: ./appconfig-example)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${SIDECAR_BIN:-target/debug/azure-secrets-sidecar}"
emulator_bin="${EMULATOR_BIN:-target/debug/azure-emulator}"
{ [ -x "$bin" ] && [ -x "$emulator_bin" ]; } || cargo build --quiet --workspace --bins
out="$(realpath -m "${1:-appconfig-example}")"
work="$(mktemp -d)"
"$emulator_bin" --state-dir "$work/emulator" --store myappconfig --vault myvault >"$work/info.json" 2>"$work/emulator.log" &
emulator=$!
trap 'kill "$emulator" 2>/dev/null; wait "$emulator" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/info.json" ] && break; sleep 0.1; done
[ -s "$work/info.json" ] || { cat "$work/emulator.log" >&2; exit 1; }
info() { python3 -c "import json,sys; print(eval('json.load(open(sys.argv[1]))' + sys.argv[2]))" "$work/info.json" "$1"; }
control="$(info '["control_url"]')"
store="$(info '["appconfig_stores"]["myappconfig"]')"
vault="$(info '["vaults"]["myvault"]')"

put() { curl -fsS -X PUT -H 'content-type: application/json' --data "$2" "$control$1" >/dev/null; }
kv() { put /stores/myappconfig/kv "$1"; }
put /vaults/myvault/secrets/db-password '{"value": "s3cret-from-key-vault"}'
kv '{"key": "myapp:db:host", "label": "prd", "value": "db.prd.internal"}'
kv '{"key": "myapp:db:host", "label": "dev", "value": "db.dev.internal"}'
kv '{"key": "myapp:db:host", "value": "localhost"}'
kv '{"key": "myapp:log:level", "label": "prd", "value": "warn"}'
kv '{"key": "other:key", "label": "prd", "value": "not selected"}'
kv "{\"key\": \"myapp:db:password\", \"label\": \"prd\", \"value\": \"{\\\"uri\\\":\\\"$vault/secrets/db-password\\\"}\",
     \"content_type\": \"application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8\"}"
kv '{"key": ".appconfig.featureflag/Beta", "label": "prd", "content_type": "application/vnd.microsoft.appconfig.ff+json;charset=utf-8",
     "value": "{\"id\":\"Beta\",\"enabled\":true,\"conditions\":{\"client_filters\":[]}}"}'

# The example as it is, with the store's endpoint pointed at the emulator.
sed "s|https://myappconfig.azconfig.io|$store|" config/appconfig.yaml >"$work/config.yaml"
env -i PATH="$PATH" \
  AZURE_CLIENT_ID="$(info '["client_id"]')" AZURE_TENANT_ID="$(info '["tenant_id"]')" \
  AZURE_FEDERATED_TOKEN_FILE="$(info '["federated_token_file"]')" AZURE_AUTHORITY_HOST="$(info '["authority_url"]')" \
  SSL_CERT_FILE="$(info '["ca_file"]')" SIDECAR_OUTPUT__DIR="$out" SIDECAR_LOG__FORMAT=text \
  SIDECAR_SERVE__LISTEN=127.0.0.1:0 SIDECAR_HEALTH__LISTEN=127.0.0.1:0 \
  "$bin" run --config "$work/config.yaml" --once

echo "==> $out"
ls -la "$out"
echo "==> $out/appsettings.json"
cat "$out/appsettings.json"
