#!/usr/bin/env bash
# Builds the static (musl) binary and the FROM-scratch image (Dockerfile.scratch) tagged TAG.
#
#   bash scripts/build-image.sh TAG          # e.g. azure-secrets-sidecar:0.1.0
#
# Needs only the Rust toolchain (rustup) and a Docker engine; pulls no image (every stage is
# FROM scratch), so it works on a machine with no access to any registry. What it lacks it
# installs once: the rustup target x86_64-unknown-linux-musl, and Debian's musl-tools (ring
# compiles its C with musl-gcc). Re-runs are incremental: cargo rebuilds only what changed and
# Docker reuses its layers when the binary is the same.
#
# Checks before it succeeds: the binary is static (no ELF interpreter, no shared libraries),
# carries the public roots Azure chains to (no OS bundle in the image), runs; the Dockerfile
# has no stage but scratch; the image is at most 4 MiB. Prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-}
if [ -z "$tag" ] || [ $# -ne 1 ]; then
  echo "usage: scripts/build-image.sh TAG   (e.g. azure-secrets-sidecar:0.1.0)" >&2
  exit 2
fi
TARGET=x86_64-unknown-linux-musl
MAX_BYTES=$((4 * 1024 * 1024))
context=target/image-context
start=$SECONDS

fail() { echo "build-image: $*" >&2; exit 1; }

# --- what the build needs -----------------------------------------------------------------
if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "==> rustup target add $TARGET"
  rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null; then
  echo "==> installing Debian's musl-tools (musl-gcc, for ring's C code)"
  [ "$(id -u)" -eq 0 ] || fail "musl-gcc is missing; install Debian's musl-tools (as root: apt-get install musl-tools)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
fi
command -v readelf >/dev/null || fail "readelf (binutils) is missing; it checks that the binary is static"
command -v docker >/dev/null || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (docker info failed)"
if grep -iE '^[[:space:]]*FROM[[:space:]]' Dockerfile.scratch | grep -viqE '^[[:space:]]*FROM[[:space:]]+scratch([[:space:]]|$)'; then
  fail "Dockerfile.scratch has a stage that is not FROM scratch; the build must pull nothing"
fi

# --- the static binary ------------------------------------------------------------------
echo "==> cargo build --release --target $TARGET"
t=$SECONDS
# Without the `demo` feature (so without the emulator crate), and not position-independent:
# a plain static executable like Go's, 150 KB smaller than musl's default static-pie, which keeps
# the image under its 4 MiB budget. Heap, stack and mmap addresses stay randomised.
RUSTFLAGS="-C relocation-model=static" \
  cargo build --locked --release -p azure-secrets-sidecar --no-default-features --target "$TARGET" --bin azure-secrets-sidecar
echo "    ($((SECONDS - t)) s)"
bin=target/$TARGET/release/azure-secrets-sidecar

# Static: no program interpreter and no NEEDED shared library (readelf comes with binutils,
# which the Rust toolchain's linker needs anyway).
if readelf -lW "$bin" | grep -q 'INTERP'; then fail "$bin asks for an ELF interpreter: not static"; fi
if readelf -dW "$bin" | grep -q '(NEEDED)'; then fail "$bin needs shared libraries: not static"; fi
command -v file >/dev/null && echo "    file: $(file -b "$bin")"
echo "    ldd:  $(ldd "$bin" 2>&1 | tr -s '[:space:]' ' ' | sed 's/^ //')"
# The public roots Azure's endpoints chain to, compiled in (webpki-roots), so the image needs
# no /etc/ssl bundle.
for root in "DigiCert Global Root G2" "Microsoft RSA Root Certificate Authority 2017"; do
  grep -aq "$root" "$bin" || fail "$bin does not carry the public root '$root'"
done
echo "    $("$bin" version); public roots built in"

# --- the image ----------------------------------------------------------------------------
rm -rf "$context"
mkdir -p "$context/secrets"
cp "$bin" "$context/azure-secrets-sidecar"
echo "==> docker build -f Dockerfile.scratch -t $tag"
t=$SECONDS
# Quiet: the legacy builder's deprecation notice is noise here; errors still surface.
if ! out=$(docker build -q -f Dockerfile.scratch -t "$tag" "$context" 2>&1); then
  echo "$out" >&2
  fail "docker build failed"
fi
echo "    ($((SECONDS - t)) s)"

size=$(docker image inspect -f '{{.Size}}' "$tag")
binsize=$(stat -c %s "$bin")
user=$(docker image inspect -f '{{.Config.User}}' "$tag")
awk -v t="$tag" -v s="$size" -v b="$binsize" -v u="$user" 'BEGIN {
  printf "    image %s: %d bytes (%.2f MiB; limit 4 MiB), binary %d bytes, user %s\n", t, s, s / 1048576, b, u }'
[ "$size" -le "$MAX_BYTES" ] || fail "image $tag is $size bytes, over the 4 MiB ($MAX_BYTES bytes) budget"
echo "OK: image $tag built in $((SECONDS - start)) s"
