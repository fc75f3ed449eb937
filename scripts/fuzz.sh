#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 300), seeded from the example configs
# and the official Azure payloads. Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly
# compiler, or the stable one with RUSTC_BOOTSTRAP=1 (what this script uses). Not part of CI.
#
#   scripts/fuzz.sh            # every target, 300 s each
#   scripts/fuzz.sh 60 config  # one target, 60 s
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-300}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(config keyvault_bundle keyvault_page token_response appconfig_page error_body)

# Seeds: the JSON bodies inside the official examples and recordings, and the example configs.
python3 - <<'PY'
import json, os, glob, hashlib
root = "fuzz/corpus"
def put(target, data):
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb").write(data)
bodies = []
for f in glob.glob("tests/fixtures/azure-examples/**/*.json", recursive=True):
    doc = json.load(open(f))
    for r in (doc.get("responses") or {}).values():
        if isinstance(r, dict) and "body" in r: bodies.append(r["body"])
    for e in doc.get("Entries") or []:
        if e.get("ResponseBody") is not None: bodies.append(e["ResponseBody"])
for b in bodies:
    text = json.dumps(b)
    for t in ("keyvault_bundle", "keyvault_page", "error_body"): put(t, text)
    put("appconfig_page", '</kv?after=x>; rel="next"\n' + text)
put("token_response", b"\x00" + b'{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}')
put("token_response", b"\x01" + b'{"access_token":"eyJ0","expires_in":"3599","expires_on":"1506484173","resource":"https://vault.azure.net","token_type":"Bearer"}')
put("error_body", '{"error":"invalid_scope","error_description":"AADSTS70011: x","error_codes":[70011],"trace_id":"t"}')
put("appconfig_page", 'zAyMjQz=MDoxNyMyMzg1;sn=238\n{"items":[{"key":"a:b","label":null,"value":"v","content_type":null},{"key":"r","value":"{\\"uri\\":\\"https://v.vault.azure.net/secrets/s\\"}","content_type":"application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8"}],"@nextLink":"/kv?after=a"}')
for f, sel in (("config/keyvault.yaml", 0), ("config/keyvault-all.toml", 1), ("config/keyvault-pinned.json", 2)):
    put("config", bytes([sel]) + open(f, "rb").read())
    put("config", bytes([sel | 0x80]) + open(f, "rb").read())
PY

for t in "${TARGETS[@]}"; do
  echo "== $t: ${SECONDS_EACH}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+.*DONE|stat::|INFO: Running|==[0-9]+==|thread|SUMMARY|Done )" || true
  test ! -e "fuzz/artifacts/$t" || test -z "$(ls -A "fuzz/artifacts/$t")" || { echo "$t: crash artifacts in fuzz/artifacts/$t"; exit 1; }
done
