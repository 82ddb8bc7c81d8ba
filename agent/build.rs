//! Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with the nightly pinned in
//! agent-ebpf/rust-toolchain.toml, so that the agent binary embeds them.
use std::path::Path;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../agent-ebpf");
    let common_dir = Path::new(&manifest_dir).join("../agent-common");
    for dir in [&ebpf_dir, &common_dir] {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    let toolchain = ebpf_toolchain(&ebpf_dir.join("rust-toolchain.toml"))?;
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package { name: "agent-ebpf", root_dir, ..Default::default() }],
        Toolchain::Custom(&toolchain),
    )
}

/// The `channel = "…"` of a rust-toolchain.toml.
fn ebpf_toolchain(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("channel")?
                .trim()
                .strip_prefix('=')?
                .trim()
                .strip_prefix('"')?
                .strip_suffix('"')
        })
        .map(str::to_string)
        .with_context(|| format!("no channel = \"…\" in {}", file.display()))
}
