#!/usr/bin/env bash
# The test command of the README. In order:
#   1. cargo fmt --check and cargo clippy -D warnings over the whole workspace;
#   2. the product's unit and integration tests in the production configuration (no `demo`
#      feature: what the image runs), then the whole workspace with default features (the
#      product with `demo`, sidecar-core, the emulator's own tests);
#   3. the Kubernetes manifests, validated against the Kubernetes schemas, and the alert rules
#      of k8s/monitoring through promtool (their unit tests);
#   4. the emulator's contract tests with Microsoft's Python SDK;
#   5. the interop tests: the sidecar's output read by python-dotenv, PyYAML, java.util.Properties
#      (java; Debian's default-jre-headless is installed when missing, as root) and JSON.
# Where a Docker engine answers, it first builds the scratch images (amd64 and arm64) and the
# test app image (scripts/build-image.sh, scripts/build-test-app-image.sh) for the container
# tests (tests/it/container.rs) and the arm64 tests under qemu (tests/it/arm64.rs), which
# otherwise print SKIPPED.
# Installs what it needs (rustfmt and clippy through rustup; Python packages into
# target/*-venv; promtool from Debian's prometheus package, strace and a JRE, as root; for the images:
# rustup's rust-src and musl targets, Debian's musl-tools, gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross, qemu-user-static and busybox-static)
# and touches nothing else.
# The Azure Arc tests use /var/opt/azcmagent/tokens (the only directory the sidecar and
# the SDKs take an Arc key from; needs root) and remove what they created there.
set -euo pipefail
cd "$(dirname "$0")/.."

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    echo "==> rustup component add $component"
    rustup component add "$component"
  fi
done

# `need TOOL PACKAGE WHY`: install Debian's PACKAGE when TOOL is missing (as root); otherwise the
# tests that need it print SKIPPED (outside CI).
need() {
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" -eq 0 ]; then
    echo "==> installing Debian's $2 package ($1: $3)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  else
    echo "==> no $1 and not root: $3 will print SKIPPED (apt-get install $2)"
  fi
}
# promtool: the alert rules' unit tests, and `promtool check metrics` on a running sidecar's
# /metrics (tests/it/monitoring.rs).
need promtool prometheus "the monitoring tests"
# strace: the shutdown tests (tests/it/shutdown.rs) slow one syscall of the running sidecar.
need strace strace "the shutdown tests"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (workspace, all targets, default features and the production build)"
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked -p azure-secrets-sidecar --no-default-features --all-targets -- -D warnings

echo "==> cargo build"
cargo build --locked --workspace --bins
# The container tests read the image tags from CONTAINER_TEST_*; given to cargo test only
# (a SIDECAR_* variable would be read as sidecar config by every binary started later).
container_env=()
if docker info >/dev/null 2>&1; then
  echo "==> container images (FROM scratch) for the container tests"
  t=$SECONDS
  sidecar_image=${CONTAINER_TEST_SIDECAR_IMAGE:-azure-secrets-sidecar:test}
  app_image=${CONTAINER_TEST_APP_IMAGE:-azure-secrets-sidecar-test-app:test}
  bash scripts/build-image.sh "$sidecar_image"
  bash scripts/build-test-app-image.sh "$app_image"
  echo "    the images took $((SECONDS - t)) s"
  container_env=(CONTAINER_TEST_SIDECAR_IMAGE="$sidecar_image" CONTAINER_TEST_APP_IMAGE="$app_image")
  # build-image.sh builds the arm64 binary and image too; tests/it/arm64.rs runs it under qemu.
  container_env+=(ARM64_TEST_BIN="$PWD/target/aarch64-unknown-linux-musl/release/azure-secrets-sidecar")
else
  echo "==> no Docker engine answers: the container tests will print SKIPPED"
fi
threads="${TEST_THREADS:-4}"
echo "==> cargo test: the product as the image builds it (--no-default-features)"
env "${container_env[@]}" cargo test --locked -p azure-secrets-sidecar --no-default-features -- --test-threads="$threads"
echo "==> cargo test: the workspace with default features (the product with demo, core, emulator)"
# The product's tests again with `demo` compiled in: only what that feature adds or changes
# (the demo command, the command line), not the whole suite a second time.
cargo test --locked -p azure-secrets-sidecar --lib --test it -- --test-threads="$threads" demo cli::
cargo test --locked -p sidecar-core -p azure-emulator -- --test-threads="$threads"

echo "==> Kubernetes manifests: rendered and validated against the Kubernetes schemas"
bash scripts/validate-k8s.sh

echo "==> alert rules (k8s/monitoring): promtool check rules and promtool test rules"
if command -v promtool >/dev/null; then
  promtool check rules k8s/monitoring/alerts.yaml
  (cd k8s/monitoring && promtool test rules alerts.test.yaml)
elif [ -n "${CI:-}" ]; then
  echo "promtool is missing (Debian's prometheus package)" >&2
  exit 1
else
  echo "SKIPPED: no promtool (apt-get install prometheus)"
fi

echo "==> contract tests: the emulator driven by Microsoft's Python SDK"
venv=target/contract-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/contract/requirements.txt
EMULATOR_BIN="$PWD/target/debug/azure-emulator" SIDECAR_BIN="$PWD/target/debug/azure-secrets-sidecar" \
  "$venv/bin/python" -m pytest tests/contract -q

echo "==> interop tests: the sidecar's output read by the parsers its users run"
# java.util.Properties itself reads the properties format: Debian's JRE when java is missing.
need java default-jre-headless "the properties round trip"
venv=target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
EMULATOR_BIN="$PWD/target/debug/azure-emulator" SIDECAR_BIN="$PWD/target/debug/azure-secrets-sidecar" \
  "$venv/bin/python" -m pytest tests/interop -q
