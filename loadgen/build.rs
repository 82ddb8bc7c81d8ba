//! Builds the programs that are not shipped (unshipped-ebpf) for bpfel-unknown-none with the
//! nightly pinned in agent-ebpf/rust-toolchain.toml, so that `credwatch-loadgen baseline` embeds
//! them and the `credwatch` binary never does.
use std::path::Path;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../unshipped-ebpf");
    let toolchain_file = Path::new(&manifest_dir).join("../agent-ebpf/rust-toolchain.toml");
    for path in [&ebpf_dir, &toolchain_file] {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    let toolchain = ebpf_toolchain(&toolchain_file)?;
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package { name: "unshipped-ebpf", root_dir, ..Default::default() }],
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
