#!/usr/bin/env bash
# The test command of the README: unit and integration tests (the real binary against the
# local emulator), then the emulator's contract tests with Microsoft's Python SDK.
# Then the Kubernetes manifests, validated against the Kubernetes schemas.
# Installs what it needs (Python packages into target/*-venv) and touches nothing else, except
# that the Azure Arc tests use /var/opt/azcmagent/tokens (the only directory the sidecar and
# the SDKs take an Arc key from; needs root) and remove what they created there.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo build"
cargo build --locked --bins
echo "==> cargo test"
cargo test --locked -- --test-threads="${TEST_THREADS:-4}"

echo "==> Kubernetes manifests: rendered and validated against the Kubernetes schemas"
bash scripts/validate-k8s.sh

echo "==> contract tests: the emulator driven by Microsoft's Python SDK"
venv=target/contract-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/contract/requirements.txt
SIDECAR_BIN="$PWD/target/debug/azure-secrets-sidecar" "$venv/bin/python" -m pytest tests/contract -q
