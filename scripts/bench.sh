#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md: this sidecar against the usual alternative (a Python poller on
# Microsoft's SDK), on one local emulator, for 10, 100, 1,000 and 5,000 secrets. Not a test: it
# prints figures. Arguments go to scripts/bench/run.py (e.g. --counts 10,100 --idle-seconds 0;
# --help lists them).
#
# Installs what it needs: the release build and the serve_load example (cargo), and the Python
# packages into target/bench-venv (PyPI). Everything it starts talks to the emulator on
# 127.0.0.1 only; when it can (root, or unprivileged user namespaces), it runs them in a network
# namespace whose only interface is loopback, so nothing could reach another machine (no IMDS
# at 169.254.169.254, no Entra ID, no Key Vault) even by mistake.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo build --release"
# Apart: building the example with the binary would build the binary with the dev-dependency
# features (tokio's test-util) too.
cargo build --locked --release --bins
cargo build --locked --release -p azure-emulator
cargo build --locked --release --example serve_load

venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
echo "==> Python packages into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/bench/requirements.txt

# The image, when its build script and a Docker engine are both here.
image="n/a"
if [ ! -x scripts/build-image.sh ]; then
  image="n/a (no scripts/build-image.sh in this checkout)"
elif ! docker info >/dev/null 2>&1; then
  image="n/a (no Docker engine reachable)"
else
  echo "==> scripts/build-image.sh azure-secrets-sidecar:bench"
  if scripts/build-image.sh azure-secrets-sidecar:bench >target/bench-image.log 2>&1; then
    bytes=$(docker image inspect azure-secrets-sidecar:bench --format '{{.Size}}')
    image=$(awk -v b="$bytes" 'BEGIN { printf "%.2f MiB (%d bytes)", b / 1048576, b }')
  else
    image="n/a (scripts/build-image.sh failed; see target/bench-image.log)"
  fi
fi

run=("$venv/bin/python" scripts/bench/run.py
  --bin "$PWD/target/release/azure-secrets-sidecar"
  --emulator-bin "$PWD/target/release/azure-emulator"
  --python "$PWD/$venv/bin/python"
  --serve-load "$PWD/target/release/examples/serve_load"
  --image "$image" "$@")

if unshare --net --map-root-user true 2>/dev/null; then
  echo "==> in a network namespace with loopback only"
  exec unshare --net --map-root-user sh -c 'ip link set lo up && exec "$@"' sh "${run[@]}"
else
  echo "==> no network namespace available here: running as is (every endpoint is 127.0.0.1)"
  exec "${run[@]}"
fi
