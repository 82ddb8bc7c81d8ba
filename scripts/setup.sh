#!/usr/bin/env bash
# Installs everything credwatch needs to build and test on a fresh Debian 12 machine.
# Idempotent: each step checks before it acts, so a second run takes a few seconds.
# Versions are the ones verified together (docs/development.md). The two Rust toolchains are
# pinned in rust-toolchain.toml (userspace) and agent-ebpf/rust-toolchain.toml (kernel programs),
# and read from there.
set -euo pipefail
cd "$(dirname "$0")/.."

channel() { sed -n 's/^channel *= *"\(.*\)"/\1/p' "$1"; }
RUST_USER=$(channel rust-toolchain.toml)
RUST_BPF=$(channel agent-ebpf/rust-toolchain.toml)
[ -n "$RUST_USER" ] && [ -n "$RUST_BPF" ] || { echo "setup: no channel in a rust-toolchain.toml" >&2; exit 1; }
BPF_LINKER=0.13.0
# libFuzzer driver for `cargo xtask test`'s fuzz step (runs under the pinned nightly).
CARGO_FUZZ=0.13.2
# qemu-system-x86, busybox-static, debian-archive-keyring: `cargo xtask vm-test` (run by
# `cargo xtask test`), which boots a Debian kernel fetched from this machine's Debian mirror.
APT_PACKAGES=(llvm-22-dev libpolly-22-dev libllvm22 bpftool iproute2 python3 python3-venv
  prometheus dnsmasq-base iperf3 tcpdump bpftrace nftables libcap2-bin ethtool
  qemu-system-x86 busybox-static debian-archive-keyring
  # The container image (`cargo xtask image`: buildah, the aarch64 cross toolchain and glibc for
  # the static arm64 binary, qemu-user-static to run it) and the runtime suite (podman with runc;
  # busybox-static is also the workload containers' shell).
  podman buildah runc qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
# The static arm64 agent binary in the image (docs/deploy.md, multi-architecture images).
RUST_CROSS_TARGETS=(aarch64-unknown-linux-gnu)
# kubectl (for `kubectl kustomize` in the deploy tests) is Debian's kubernetes-client, installed
# by its own step below: some machine images already have /usr/bin/kubectl from another package.
KUBECTL_DEB=kubernetes-client
KUBECTL_LOCAL=.tools/$KUBECTL_DEB

log() { printf 'setup: %s\n' "$*" >&2; }
need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    log "installing system packages needs root (run with sudo)"; exit 1
  fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's kubectl where dpkg can put it; where /usr/bin/kubectl already belongs to another
# package (google-cloud-cli's `kubectl` on some images), dpkg refuses to overwrite it, so the same
# Debian package is unpacked into .tools/ instead (tests/scenarios/test_deploy.py looks there).
kubectl_owner=$(dpkg-query -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)
if [ "$kubectl_owner" != "$KUBECTL_DEB" ] && [ ! -x "$KUBECTL_LOCAL/usr/bin/kubectl" ]; then
  need_root
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ! -e /usr/bin/kubectl ]; then
    log "apt: installing $KUBECTL_DEB"
    apt-get install -y -qq --no-install-recommends "$KUBECTL_DEB" >/dev/null
  else
    log "apt: /usr/bin/kubectl belongs to ${kubectl_owner:-no package}; unpacking $KUBECTL_DEB into $KUBECTL_LOCAL"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq "$KUBECTL_DEB" 2>/dev/null)
    mkdir -p "$KUBECTL_LOCAL"
    dpkg-deb -x "$tmp"/"$KUBECTL_DEB"_*.deb "$KUBECTL_LOCAL"
    rm -rf "$tmp"
  fi
fi

if ! command -v rustup >/dev/null 2>&1; then
  log "rustup not found: install it from your distribution or rustup.rs first"; exit 1
fi
have_toolchain() { rustup toolchain list | grep -q "^$1"; }
if ! have_toolchain "$RUST_USER"; then
  log "rustup: installing $RUST_USER"
  rustup toolchain install "$RUST_USER" --profile minimal -c rustfmt -c clippy
fi
if ! have_toolchain "$RUST_BPF"; then
  log "rustup: installing $RUST_BPF with rust-src"
  rustup toolchain install "$RUST_BPF" --profile minimal -c rust-src -c clippy
fi
for target in "${RUST_CROSS_TARGETS[@]}"; do
  if ! rustup target list --toolchain "$RUST_USER" --installed | grep -qx "$target"; then
    log "rustup: adding target $target to $RUST_USER"
    rustup target add --toolchain "$RUST_USER" "$target"
  fi
done
for component in rust-src clippy; do
  if ! rustup component list --toolchain "$RUST_BPF" --installed | grep -q "^$component"; then
    rustup component add --toolchain "$RUST_BPF" "$component"
  fi
done

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER"; then
  log "cargo: building bpf-linker $BPF_LINKER against LLVM 22 (about a minute)"
  PATH=/usr/lib/llvm-22/bin:$PATH cargo "+$RUST_USER" install bpf-linker --locked \
    --version "$BPF_LINKER" --no-default-features --features llvm-22
fi

if ! cargo "+$RUST_BPF" fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ"; then
  log "cargo: building cargo-fuzz $CARGO_FUZZ (about a minute)"
  cargo "+$RUST_USER" install cargo-fuzz --locked --version "$CARGO_FUZZ"
fi

# Python environment for the scenario tests (a real AWS SDK, pytest), rebuilt when
# tests/requirements.txt changes.
VENV=.venv
REQS=tests/requirements.txt
if [ -f "$REQS" ]; then
  stamp="$VENV/.requirements.sha256"
  want=$(sha256sum "$REQS" | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/pytest" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "python: creating $VENV from $REQS"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
    echo "$want" > "$stamp"
  fi
fi
# The other real AWS SDKs the scenario tests drive (tests/clients): the JavaScript v3 SDK from npm,
# run by Debian's node, at the versions in its package-lock.json; and a small client on the Rust
# SDK's aws-config (its own workspace and lock file, no HTTPS client, unoptimised: about a minute
# of CPU on two cores once, seconds when up to date).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  need_root
  log "apt: installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
JS_SDK=tests/clients/js_sdk
stamp="$JS_SDK/node_modules/.package-lock.sha256"
want=$(sha256sum "$JS_SDK/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "npm: installing the JavaScript v3 SDK into $JS_SDK"
  (cd "$JS_SDK" && npm ci --no-audit --no-fund --silent)
  echo "$want" > "$stamp"
fi
cargo "+$RUST_USER" build --locked --quiet \
  --manifest-path tests/clients/rust_sdk/Cargo.toml --target-dir target/rust-sdk-client
log "ok: toolchains $RUST_USER (+ ${RUST_CROSS_TARGETS[*]}) + $RUST_BPF, bpf-linker $BPF_LINKER, cargo-fuzz $CARGO_FUZZ, python test environment, JavaScript and Rust SDK clients ($SECONDS s)"
