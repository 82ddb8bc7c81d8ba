//! Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with the pinned nightly, so that
//! the agent binary embeds them. The nightly is pinned because bpf-linker is built against LLVM 22
//! and later nightlies ship LLVM 23 (see scripts/setup.sh).
use std::path::Path;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

const EBPF_TOOLCHAIN: &str = "nightly-2026-07-20";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../agent-ebpf");
    let common_dir = Path::new(&manifest_dir).join("../agent-common");
    for dir in [&ebpf_dir, &common_dir] {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package { name: "agent-ebpf", root_dir, ..Default::default() }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
