# syntax=docker/dockerfile:1
# The credwatch agent image: builds with the same pinned toolchains as scripts/setup.sh (checked by
# tests/scenarios/test_deploy.py) and ships the binary alone on distroless/cc (glibc + libgcc,
# which is all the binary links against; no shell, no package manager).
#
#   docker build -t ghcr.io/credwatch/credwatch:0.1.0 .
#
# Not built by CI: the development and CI machines have no container engine (docs/deploy.md).

FROM debian:bookworm AS build
ARG RUST_USER=1.99.1
ARG RUST_BPF=nightly-2026-07-20
ARG BPF_LINKER=0.13.0
# LLVM 22 comes from bookworm-security, as on the development machines; bpf-linker links it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev \
      llvm-22-dev libpolly-22-dev libllvm22 zlib1g-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
# The userspace toolchain (rust-toolchain.toml) and the nightly agent/build.rs compiles the eBPF
# programs with (bpfel-unknown-none needs rust-src for build-std).
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
      | sh -s -- -y --no-modify-path --profile minimal --default-toolchain "$RUST_USER" \
 && rustup toolchain install "$RUST_BPF" --profile minimal -c rust-src
RUN PATH=/usr/lib/llvm-22/bin:$PATH cargo "+$RUST_USER" install bpf-linker --locked \
      --version "$BPF_LINKER" --no-default-features --features llvm-22

WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p agent \
 && install -D -m 0755 target/release/credwatch /out/credwatch

FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/credwatch /usr/bin/credwatch
EXPOSE 9500
# Runs as root (uid 0): loading eBPF programs needs root's capabilities, bounded by the pod's
# securityContext (privileged, or the least-privilege overlay's capability list).
ENTRYPOINT ["/usr/bin/credwatch"]
CMD ["run"]
