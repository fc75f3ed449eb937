#!/usr/bin/env bash
# Builds the container tests' "app" image (tests/container/app.Dockerfile), tagged TAG: Debian's
# static busybox in a FROM-scratch image, with a static build of `azure-emulator` (the tests'
# stand-in for Azure, a crate of its own that the production image does not contain).
# Installs busybox-static if its static binary is missing (the musl toolchain comes from
# scripts/build-image.sh, which runs first); pulls no image.
#
#   bash scripts/build-test-app-image.sh TAG
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-}
if [ -z "$tag" ] || [ $# -ne 1 ]; then
  echo "usage: scripts/build-test-app-image.sh TAG" >&2
  exit 2
fi
fail() { echo "build-test-app-image: $*" >&2; exit 1; }

command -v readelf >/dev/null || fail "readelf (binutils) is missing"
busybox=/bin/busybox
is_static() { [ -x "$1" ] && ! readelf -lW "$1" 2>/dev/null | grep -q INTERP; }
if ! is_static "$busybox"; then
  echo "==> installing Debian's busybox-static"
  [ "$(id -u)" -eq 0 ] || fail "a static $busybox is missing; install Debian's busybox-static (as root)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
  is_static "$busybox" || fail "$busybox is still not a static binary"
fi

# The target directory of scripts/build-image.sh. Its std is the prebuilt one (the emulator has
# no size budget), so the crates the two binaries share are built once for each.
target=x86_64-unknown-linux-musl
RUSTFLAGS="-C relocation-model=static" \
  cargo build --locked --release --target "$target" -p azure-emulator --bin azure-emulator

context=target/test-app-context
rm -rf "$context"
mkdir -p "$context/emulator-state"
cp "$busybox" "$context/busybox"
cp "target/$target/release/azure-emulator" "$context/azure-emulator"
if ! out=$(docker build -q -f tests/container/app.Dockerfile -t "$tag" "$context" 2>&1); then
  echo "$out" >&2
  fail "docker build failed"
fi
echo "OK: test app image $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
