//! Project tasks: `cargo xtask test` (every check and test, as CI runs them), `cargo xtask demo`.
//! The README's commands (scripts/test.sh, scripts/demo.sh) run scripts/setup.sh first and then
//! these.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// Import loops between modules (a unit test checks the kernel programs with it).
#[cfg(test)]
mod imports;

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
    /// Run every fuzz target (or the ones named) for a while with libFuzzer and print what each
    /// did. Opt-in: needs cargo-fuzz (`cargo install cargo-fuzz`) and the pinned nightly.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Targets to run (default: all of them).
        targets: Vec<String>,
    },
    /// Boot distribution kernels under qemu and check that every program loads, attaches and
    /// sees traffic there (scripts/vm-kernel-test.sh; needs root, downloads each kernel once).
    /// Opt-in, ~2 minutes per kernel; `CREDWATCH_VM_TEST=1 cargo xtask test` runs it last.
    VmTest {
        /// debian11 (5.10), ubuntu22.04 (5.15), debian12 (6.1), ubuntu24.04 (6.8), debian13
        /// (6.12), SUITE:PACKAGE or a package name (default: the first five).
        kernels: Vec<String>,
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
        Task::Fuzz { seconds, targets } => fuzz(&root, seconds, targets),
        Task::VmTest { kernels } => vm_test(&root, kernels),
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
    // The eBPF crates build for bpfel-unknown-none only: they have their own clippy step below.
    cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--exclude",
        "unshipped-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    step("clippy (kernel programs)");
    cargo(&[
        &ebpf_toolchain(root)?,
        "clippy",
        "-p",
        "agent-ebpf",
        "-p",
        "unshipped-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--",
        "-D",
        "warnings",
    ])?;
    step("fuzz targets compile (docs/fuzzing.md; running them is `cargo xtask fuzz`)");
    cargo(&["check", "--manifest-path", "fuzz/Cargo.toml", "--bins", "--no-default-features"])?;
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
    if std::env::var_os("CREDWATCH_VM_TEST").is_some_and(|v| v == "1") {
        vm_test(root, Vec::new())?;
    }
    Ok(())
}

/// The kernels fleets run (docs/old-kernels.md).
const VM_KERNELS: [&str; 5] = ["debian11", "ubuntu22.04", "debian12", "ubuntu24.04", "debian13"];

/// One VM per kernel, one after the other (each uses both cores); a table at the end.
fn vm_test(root: &Path, kernels: Vec<String>) -> anyhow::Result<()> {
    if !is_root() {
        bail!("vm-test needs root (it boots kernels with the agent inside, and downloads them)");
    }
    let kernels = if kernels.is_empty() {
        VM_KERNELS.iter().map(|k| k.to_string()).collect()
    } else {
        kernels
    };
    step("building the agent and the BPF_PROG_TEST_RUN suite for the VMs");
    cargo(&["build", "-p", "agent"])?;
    cargo(&["test", "-p", "agent", "--test", "prog_test_run", "--no-run"])?;
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for kernel in &kernels {
        step(&format!("VM: {kernel}"));
        let start = std::time::Instant::now();
        let out = Command::new(root.join("scripts/vm-kernel-test.sh"))
            .arg(kernel)
            .output()
            .with_context(|| format!("running scripts/vm-kernel-test.sh {kernel}"))?;
        let secs = start.elapsed().as_secs();
        let console = String::from_utf8_lossy(&out.stdout);
        let log_path = root.join("target/vm").join(format!("{kernel}.log").replace(':', "_"));
        std::fs::write(&log_path, [&out.stdout[..], &out.stderr[..]].concat())?;
        let release = console
            .lines()
            .find_map(|l| l.split_once("vm-check: kernel ").map(|(_, r)| r))
            .unwrap_or("?")
            .trim()
            .to_string();
        // What the console says degraded, and the verifier's counts where the kernel tells them.
        let degraded: Vec<&str> = console
            .lines()
            .filter_map(|l| l.strip_prefix("credwatch_kernel_feature{feature=\""))
            .filter_map(|l| l.strip_suffix("\"} 0"))
            .collect();
        let insns: Vec<&str> = console
            .lines()
            .filter_map(|l| l.split_once(": verifier processed "))
            .map(|(_, n)| n.split(' ').next().unwrap_or("?"))
            .collect();
        let result = if out.status.success() { "PASS" } else { "FAIL" };
        println!("{kernel}: {result} in {secs} s (console: {})", log_path.display());
        if !out.status.success() {
            for line in console.lines().filter(|l| l.contains("FAIL")) {
                eprintln!("    {line}");
            }
            failed.push(kernel.clone());
        }
        report.push(format!(
            "| {kernel} | {release} | {result} | {} | {} | {secs} s |",
            if insns.is_empty() { "?".to_string() } else { insns.join(" / ") },
            if degraded.is_empty() { "-".to_string() } else { degraded.join(", ") },
        ));
    }
    println!(
        "\n| kernel | release | result | verified insns (egress / ingress) | degraded | time |"
    );
    println!("|---|---|---|---|---|---|\n{}", report.join("\n"));
    if !failed.is_empty() {
        bail!("kernels failed: {} (consoles in target/vm/)", failed.join(", "));
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
    // Footprint and CPU figures are only meaningful for the release build; the load generator
    // (loadgen/) is built with the same profile.
    let profile = if quick {
        cargo(&["build", "-p", "agent", "-p", "loadgen"])?;
        root.join("target/debug")
    } else {
        cargo(&["build", "-p", "agent", "-p", "loadgen", "--release"])?;
        root.join("target/release")
    };
    let mut cmd = Command::new(root.join(".venv/bin/python"));
    cmd.arg(root.join("bench/bench.py"))
        .arg("--binary")
        .arg(profile.join("credwatch"))
        .arg("--loadgen")
        .arg(profile.join("credwatch-loadgen"))
        .args(names);
    cmd.args(["--rounds", &rounds.to_string(), "--seconds", &seconds.to_string()]);
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)
}

/// Runs each target from a working corpus under target/ (kept between runs) seeded with the
/// committed fuzz/seeds/<target>, with debug assertions and overflow checks on.
fn fuzz(root: &Path, seconds: u64, targets: Vec<String>) -> anyhow::Result<()> {
    let toolchain = ebpf_toolchain(root)?;
    let fuzz_cargo = |args: &[&str]| {
        let mut cmd = Command::new("cargo");
        cmd.arg(&toolchain).arg("fuzz").args(args).env_remove("RUSTUP_TOOLCHAIN");
        cmd
    };
    let targets = if targets.is_empty() {
        let out =
            fuzz_cargo(&["list"]).output().context("cargo fuzz list (is cargo-fuzz installed?)")?;
        if !out.status.success() {
            bail!("cargo fuzz list failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8(out.stdout)?.lines().map(str::to_string).collect()
    } else {
        targets
    };
    step("building the fuzz targets");
    run(&mut fuzz_cargo(&["build", "-O", "--debug-assertions"]))?;
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for target in &targets {
        step(&format!("fuzzing {target} for {seconds} s"));
        let corpus = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = root.join("fuzz/seeds").join(target);
        let out = fuzz_cargo(&["run", "-O", "--debug-assertions", target])
            .arg(&corpus)
            .arg(&seeds)
            .args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"])
            .args(["-timeout=10", "-rss_limit_mb=2048"])
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let log_path = root.join("target/fuzz-logs").join(format!("{target}.log"));
        std::fs::create_dir_all(log_path.parent().expect("has a parent"))?;
        std::fs::write(&log_path, log.as_bytes())?;
        let stat = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .map_or("?".to_string(), |v| v.trim().to_string())
        };
        let units = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
        let result = if out.status.success() { "ok" } else { "FAILED" };
        if !out.status.success() {
            // The panic (or sanitizer report) and the input that caused it; the rest is in the log.
            let keep = |l: &&str| {
                l.contains("panicked at")
                    || l.starts_with("attempt to")
                    || l.contains("ERROR: ")
                    || l.contains("Test unit written")
            };
            for line in log.lines().filter(keep) {
                eprintln!("    {line}");
            }
            eprintln!("    full log: {}", log_path.display());
            failed.push(target.clone());
        }
        report.push(format!(
            "| {target} | {} | {} | {units} | {result} |",
            stat("number_of_executed_units"),
            stat("average_exec_per_sec"),
        ));
    }
    println!("\n| target | executions | per second | corpus | result |\n|---|---|---|---|---|");
    println!("{}", report.join("\n"));
    if !failed.is_empty() {
        bail!("fuzz targets failed (inputs in fuzz/artifacts/): {}", failed.join(", "));
    }
    Ok(())
}

/// `+` and the kernel programs' nightly, pinned in agent-ebpf/rust-toolchain.toml (the fuzz
/// targets use it too, for the sanitizers).
fn ebpf_toolchain(root: &Path) -> anyhow::Result<String> {
    let file = root.join("agent-ebpf/rust-toolchain.toml");
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let channel = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("channel")?
            .trim()
            .strip_prefix('=')?
            .trim()
            .strip_prefix('"')?
            .strip_suffix('"')
    });
    channel
        .map(|c| format!("+{c}"))
        .with_context(|| format!("no channel = \"…\" in {}", file.display()))
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
