//! Builds an eBPF crate of this workspace (agent-ebpf, unshipped-ebpf) for the kernel from a
//! build script (agent/build.rs, loadgen/build.rs), and copies the object to `OUT_DIR/<name>`
//! for the crate's `include_bytes!`.
//!
//! What aya-build's `build_ebpf` did (same `cargo build` command, flags and toolchain), with one
//! difference: the nested cargo uses one target directory, `target/ebpf/<bpf_target_arch>`,
//! shared by every configuration of the outer build (debug, test, release, the image's static
//! build, clippy, the fuzz targets' workspace), instead of one under each `OUT_DIR`. Cargo's own
//! fingerprints then make every build after the first a no-op instead of a cold build of `core`
//! and the programs (about 20 s each, 8 to 10 times in `cargo xtask test`). Two outer builds
//! that get here at once are serialised by cargo's lock on that directory. It must not be the
//! outer build's own target directory (cargo issue 6412: cargo would wait on its own lock),
//! hence the subdirectory.
use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Overrides the shared target directory (`<workspace>/target/ebpf` by default); the programs
/// are built in its `<bpf_target_arch>` subdirectory.
pub const TARGET_DIR_ENV: &str = "CREDWATCH_EBPF_TARGET_DIR";

/// Builds the workspace package `package` (in `<workspace>/<package>/`, whose one binary is named
/// after it) for `bpfel-unknown-none` (or `bpfeb-` on a big-endian target) with the nightly pinned
/// in `<workspace>/agent-ebpf/rust-toolchain.toml`, and copies the object to `OUT_DIR/<package>`.
/// Reruns the build script when the package, `extra_sources` or the toolchain pin change.
pub fn build(workspace: &Path, package: &str, extra_sources: &[&Path]) -> anyhow::Result<()> {
    let package_dir = workspace.join(package);
    let toolchain_file = workspace.join("agent-ebpf/rust-toolchain.toml");
    for path in [package_dir.as_path(), toolchain_file.as_path()].iter().chain(extra_sources) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    println!("cargo::rerun-if-env-changed={TARGET_DIR_ENV}");
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let target = match env("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endian {other}"),
    };
    let bpf_target_arch = match env("CARGO_CFG_TARGET_ARCH")? {
        arch if arch.starts_with("riscv64") => "riscv64".to_string(),
        arch => arch,
    };
    let target_dir = match std::env::var_os(TARGET_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => workspace.join("target/ebpf"),
    }
    .join(&bpf_target_arch);

    let toolchain = toolchain(&toolchain_file)?;
    let mut cmd = match which("rustup") {
        Some(rustup) => {
            let mut cmd = Command::new(rustup);
            cmd.args(["run", &toolchain, "cargo"]);
            cmd
        }
        None => {
            println!("cargo::warning=rustup not found; building with the cargo on PATH");
            Command::new("cargo")
        }
    };
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(package_dir.join("Cargo.toml"))
        .args(["--package", package, "--bins", "--release", "--target", target])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        // Overrides RUSTFLAGS and the like of the outer build (the fuzz targets' sanitizer
        // flags, the image's crt-static), so every outer configuration asks for the same build.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                &format!("--cfg=bpf_target_arch=\"{bpf_target_arch}\""),
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        // The outer build's compiler (and clippy's wrapper) are not the pinned nightly.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    // Cargo's messages and the compiler's diagnostics, as warnings of the outer build (which
    // otherwise only shows a build script's output when it fails).
    let stderr = child.stderr.take().expect("piped");
    for line in BufReader::new(stderr).lines() {
        println!("cargo::warning={}", line.context("reading the eBPF build's output")?);
    }
    let status = child.wait().with_context(|| format!("waiting for {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }

    let from = target_dir.join(target).join("release").join(package);
    let to = out_dir.join(package);
    std::fs::copy(&from, &to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The `channel = "…"` of a rust-toolchain.toml.
pub fn toolchain(file: &Path) -> anyhow::Result<String> {
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

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} not set"))
}

fn which(name: &str) -> Option<PathBuf> {
    let path: OsString = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}
