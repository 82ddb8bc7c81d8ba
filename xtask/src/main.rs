//! Project tasks: `cargo xtask test` (every check and test, as CI runs them), `cargo xtask demo`.
//! The README's commands (scripts/test.sh, scripts/demo.sh) run scripts/setup.sh first and then
//! these.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// The eBPF crate's toolchain; kept equal to agent/build.rs and scripts/setup.sh.
const EBPF_TOOLCHAIN: &str = "+nightly-2026-07-20";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Format and lint checks, unit tests, then the root scenario tests against real servers,
    /// a real SDK and the real kernel.
    Test {
        /// Only the checks and unit tests that need no root.
        #[arg(long)]
        unit_only: bool,
        /// Extra arguments for pytest (e.g. -k storm).
        #[arg(last = true)]
        pytest_args: Vec<String>,
    },
    /// Measure overhead and footprint (needs root) and rewrite docs/benchmarks.md; benchmarks:
    /// fastpath, slowpath, e2e, dns, tcp, exactness, footprint, flag (default: all).
    Bench {
        names: Vec<String>,
        /// Every benchmark briefly, with the debug build, docs untouched: checks the harness.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// Build and run `credwatch demo` (needs root).
    Demo {
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match Cli::parse().task {
        Task::Test { unit_only, pytest_args } => test(&root, unit_only, &pytest_args),
        Task::Bench { names, quick, rounds, seconds } => {
            bench(&root, &names, quick, rounds, seconds)
        }
        Task::Demo { args } => {
            cargo(&["build", "-p", "agent"])?;
            let mut cmd = Command::new(root.join("target/debug/credwatch"));
            cmd.arg("demo").args(args);
            run(&mut cmd)
        }
    }
}

fn test(root: &Path, unit_only: bool, pytest_args: &[String]) -> anyhow::Result<()> {
    step("cargo fmt --check");
    cargo(&["fmt", "--all", "--", "--check"])?;
    step("clippy (userspace)");
    // agent-ebpf is a workspace member, but only builds for bpfel-unknown-none (next step):
    // checked for the host with the rest, feature unification gives its agent-common the
    // userspace features (aya, std) and its #[panic_handler] then clashes with std's.
    cargo(&[
        "clippy",
        "--workspace",
        // Linted for its own target below; for the host, feature unification gives it std
        // (through agent-common's `user` feature) and a duplicate panic handler.
        "--exclude",
        "agent-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    step("clippy (kernel programs)");
    cargo(&[
        EBPF_TOOLCHAIN,
        "clippy",
        "-p",
        "agent-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--",
        "-D",
        "warnings",
    ])?;
    step("unit tests");
    cargo(&["test"])?;
    if unit_only {
        return Ok(());
    }
    step("scenario tests (root, real kernel)");
    cargo(&["build", "-p", "agent"])?;
    if !is_root() {
        println!(
            "SKIPPED scenario tests: they load eBPF programs and create cgroups, which needs root"
        );
        return Ok(());
    }
    let pytest = root.join(".venv/bin/pytest");
    if !pytest.exists() {
        bail!("{} is missing: run scripts/setup.sh", pytest.display());
    }
    let mut cmd = Command::new(pytest);
    // -rsx: say why anything was skipped or is an expected failure (a known, reported gap).
    cmd.args(["tests/scenarios", "-q", "-rsx"])
        .args(pytest_args)
        .env("CREDWATCH_BIN", root.join("target/debug/credwatch"));
    run(&mut cmd)?;
    if pytest_args.is_empty() {
        step("benchmarks, quick mode (checks the harness, asserts nothing about speed)");
        bench(root, &[], true, 1, 1)?;
    }
    Ok(())
}

fn bench(
    root: &Path,
    names: &[String],
    quick: bool,
    rounds: u32,
    seconds: u32,
) -> anyhow::Result<()> {
    // Footprint and CPU figures are only meaningful for the release build.
    let binary = if quick {
        cargo(&["build", "-p", "agent"])?;
        root.join("target/debug/credwatch")
    } else {
        cargo(&["build", "-p", "agent", "--release"])?;
        root.join("target/release/credwatch")
    };
    let mut cmd = Command::new(root.join(".venv/bin/python"));
    cmd.arg(root.join("bench/bench.py")).arg("--binary").arg(binary).args(names);
    cmd.args(["--rounds", &rounds.to_string(), "--seconds", &seconds.to_string()]);
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)
}

fn step(name: &str) {
    println!("\n==> {name}");
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // `+toolchain` only works through the rustup proxy, not the resolved cargo binary.
    let mut cmd = if args.first().is_some_and(|a| a.starts_with('+')) {
        Command::new("cargo")
    } else {
        Command::new(cargo)
    };
    if args.first().is_some_and(|a| a.starts_with('+')) {
        // The proxy must not inherit the pinned userspace toolchain chosen for this process.
        cmd.env_remove("RUSTUP_TOOLCHAIN");
    }
    cmd.args(args);
    run(&mut cmd)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
