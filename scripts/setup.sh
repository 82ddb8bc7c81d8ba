#!/usr/bin/env bash
# Installs everything credwatch needs to build and test on a fresh Debian 12 machine.
# Idempotent: each step checks before it acts, so a second run takes a few seconds.
# Versions are the ones verified together in docs/toolchain (see rust-toolchain.toml).
set -euo pipefail

RUST_USER=1.99.1
RUST_BPF=nightly-2026-07-20
BPF_LINKER=0.13.0
APT_PACKAGES=(llvm-22-dev libpolly-22-dev libllvm22 bpftool iproute2 python3 python3-venv
  prometheus dnsmasq-base)

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
  rustup toolchain install "$RUST_BPF" --profile minimal -c rust-src
fi
if ! rustup component list --toolchain "$RUST_BPF" --installed | grep -q '^rust-src'; then
  rustup component add --toolchain "$RUST_BPF" rust-src
fi

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER"; then
  log "cargo: building bpf-linker $BPF_LINKER against LLVM 22 (about a minute)"
  PATH=/usr/lib/llvm-22/bin:$PATH cargo "+$RUST_USER" install bpf-linker --locked \
    --version "$BPF_LINKER" --no-default-features --features llvm-22
fi
log "ok: toolchains $RUST_USER + $RUST_BPF, bpf-linker $BPF_LINKER"
