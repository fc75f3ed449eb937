#!/usr/bin/env bash
# Builds the static (musl) binaries and the FROM-scratch images (Dockerfile.scratch): TAG for
# linux/amd64 (x86_64-unknown-linux-musl) and TAG-arm64 for linux/arm64 (aarch64-unknown-linux-musl,
# AKS arm64 node pools; e.g. azure-secrets-sidecar:0.1.0-arm64).
#
#   bash scripts/build-image.sh TAG          # e.g. azure-secrets-sidecar:0.1.0
#   IMAGE_ARCHS=x86_64 bash scripts/build-image.sh TAG    # one architecture only
#
# Needs only the Rust toolchain (rustup) and a Docker engine; pulls no image (every stage is
# FROM scratch), so it works with no container registry (std's own crates, compiled with the
# binary, come from crates.io like every other dependency). What it lacks it installs once:
# rustup's rust-src and targets, Debian's musl-tools (ring compiles its C with musl-gcc) and,
# for arm64, Debian's gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (ring's C, and the
# linker) and qemu-user-static (to run the arm64 binary here). Re-runs are incremental, except
# that RUSTC_BOOTSTRAP=1 (below) makes the build scripts of proc-macro2 and thiserror differ from
# the other builds' in the shared target/release, so a build without it (the test app image,
# bench.sh) rebuilds those and the derive crates once. RUSTC_BOOTSTRAP also turns on
# thiserror's nightly-only Error::provide support, unused here. Docker reuses its layers when
# the binary is the same.
#
# Checks before it succeeds: each binary is static (no ELF interpreter, no shared libraries)
# and for its architecture, carries the public roots Azure chains to (no OS bundle in the
# image), runs (arm64 under qemu-aarch64-static); the Dockerfile has no stage but scratch; each
# image is at most 4 MiB. Prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-}
if [ -z "$tag" ] || [ $# -ne 1 ]; then
  echo "usage: scripts/build-image.sh TAG   (e.g. azure-secrets-sidecar:0.1.0)" >&2
  exit 2
fi
MAX_BYTES=$((4 * 1024 * 1024))
ARCHS=${IMAGE_ARCHS:-x86_64 aarch64}
start=$SECONDS

fail() { echo "build-image: $*" >&2; exit 1; }

apt_install() {  # PACKAGE... (Debian), as root only
  [ "$(id -u)" -eq 0 ] || fail "missing: install Debian's $* (as root: apt-get install $*)"
  echo "==> installing Debian's $*"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- what the build needs -----------------------------------------------------------------
command -v readelf >/dev/null || fail "readelf (binutils) is missing; it checks that the binary is static"
command -v docker >/dev/null || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (docker info failed)"
if grep -iE '^[[:space:]]*FROM[[:space:]]' Dockerfile.scratch | grep -viqE '^[[:space:]]*FROM[[:space:]]+scratch([[:space:]]|$)'; then
  fail "Dockerfile.scratch has a stage that is not FROM scratch; the build must pull nothing"
fi

# The arm64 image's tag: TAG with -arm64 appended to its tag part (:latest when it has none).
arm64_tag() {
  case ${1##*/} in
    *:*) echo "$1-arm64" ;;
    *) echo "$1:latest-arm64" ;;
  esac
}

# build_arch ARCH TAG: the static binary for ARCH, checked, in the scratch image TAG.
build_arch() {
  local arch=$1 tag=$2 target platform machine runner=()
  case $arch in
    x86_64) target=x86_64-unknown-linux-musl platform=linux/amd64 machine="X86-64" ;;
    aarch64) target=aarch64-unknown-linux-musl platform=linux/arm64 machine="AArch64" ;;
    *) fail "unknown architecture $arch (IMAGE_ARCHS: x86_64 aarch64)" ;;
  esac
  if ! rustup component list --installed | grep -q '^rust-src'; then
    echo "==> rustup component add rust-src (std compiled for size with the binary)"
    rustup component add rust-src
  fi
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "==> rustup target add $target"
    rustup target add "$target"
  fi
  local cross_env=()
  if [ "$arch" = x86_64 ]; then
    command -v musl-gcc >/dev/null || apt_install musl-tools
  else
    # ring's C and assembly, and the final link against Rust's self-contained musl: Debian's
    # aarch64 cross gcc (its glibc headers are not used by ring's freestanding C).
    command -v aarch64-linux-gnu-gcc >/dev/null || apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    command -v qemu-aarch64-static >/dev/null || apt_install qemu-user-static
    cross_env=(CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
      AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc)
    runner=(qemu-aarch64-static)
  fi

  # --- the static binary ----------------------------------------------------------------
  echo "==> cargo build --release --target $target"
  local t=$SECONDS
  # Without the `demo` feature (so without the emulator crate), and not position-independent:
  # a plain static executable like Go's, 150 KB smaller than musl's default static-pie.
  # Heap, stack and mmap addresses stay randomised.
  # The standard library is compiled with the binary, for size (cargo's build-std with std's
  # optimize_for_size; rustup's rust-src): the prebuilt std is optimised for speed and carries
  # unwind tables that a panic = "abort" binary never uses. That takes 0.7 MiB off and keeps
  # the image under its 4 MiB budget. build-std is a nightly cargo flag; RUSTC_BOOTSTRAP=1
  # lets the stable toolchain take it, as scripts/fuzz.sh does for cargo fuzz.
  env "${cross_env[@]}" RUSTC_BOOTSTRAP=1 RUSTFLAGS="-C relocation-model=static -C force-unwind-tables=no" \
    cargo build --locked --release -p azure-secrets-sidecar --no-default-features --target "$target" \
    --bin azure-secrets-sidecar -Z build-std=std,panic_abort -Z build-std-features=optimize_for_size
  echo "    ($((SECONDS - t)) s)"
  local bin=target/$target/release/azure-secrets-sidecar

  # Static: no program interpreter and no NEEDED shared library (readelf comes with binutils,
  # which the Rust toolchain's linker needs anyway); and for the architecture asked for.
  if readelf -lW "$bin" | grep -q 'INTERP'; then fail "$bin asks for an ELF interpreter: not static"; fi
  if readelf -dW "$bin" | grep -q '(NEEDED)'; then fail "$bin needs shared libraries: not static"; fi
  readelf -hW "$bin" | grep -q "Machine:.*$machine" || fail "$bin is not an $machine executable"
  command -v file >/dev/null && echo "    file: $(file -b "$bin")"
  # The public roots Azure's endpoints chain to, compiled in (webpki-roots), so the image needs
  # no /etc/ssl bundle.
  for root in "DigiCert Global Root G2" "Microsoft RSA Root Certificate Authority 2017"; do
    grep -aq "$root" "$bin" || fail "$bin does not carry the public root '$root'"
  done
  echo "    $("${runner[@]}" "$bin" version)${runner:+ (under ${runner[*]})}; public roots built in"

  # --- the image --------------------------------------------------------------------------
  local context=target/image-context/$arch
  rm -rf "$context"
  mkdir -p "$context/secrets"
  cp "$bin" "$context/azure-secrets-sidecar"
  echo "==> docker build --platform $platform -f Dockerfile.scratch -t $tag"
  t=$SECONDS
  # Quiet: the legacy builder's deprecation notice is noise here; errors still surface.
  local out
  if ! out=$(docker build -q --platform "$platform" -f Dockerfile.scratch -t "$tag" "$context" 2>&1); then
    echo "$out" >&2
    fail "docker build failed"
  fi
  echo "    ($((SECONDS - t)) s)"

  local size binsize user os_arch
  size=$(docker image inspect -f '{{.Size}}' "$tag")
  binsize=$(stat -c %s "$bin")
  user=$(docker image inspect -f '{{.Config.User}}' "$tag")
  os_arch=$(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$tag")
  [ "$os_arch" = "$platform" ] || fail "image $tag is $os_arch, not $platform"
  awk -v t="$tag" -v s="$size" -v b="$binsize" -v u="$user" -v p="$platform" 'BEGIN {
    printf "    image %s (%s): %d bytes (%.2f MiB; limit 4 MiB), binary %d bytes, user %s\n", t, p, s, s / 1048576, b, u }'
  [ "$size" -le "$MAX_BYTES" ] || fail "image $tag is $size bytes, over the 4 MiB ($MAX_BYTES bytes) budget"
}

for arch in $ARCHS; do
  case $arch in
    x86_64) build_arch x86_64 "$tag" ;;
    aarch64) build_arch aarch64 "$(arm64_tag "$tag")" ;;
    *) fail "unknown architecture $arch (IMAGE_ARCHS: x86_64 aarch64)" ;;
  esac
done
echo "OK: images built in $((SECONDS - start)) s ($ARCHS)"
