//! Project tasks: `cargo xtask test` (every check and test, as CI runs them), `cargo xtask demo`,
//! `cargo xtask image` (the container image, image.rs).
//! The README's commands (scripts/test.sh, scripts/demo.sh) run scripts/setup.sh first and then
//! these.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use steps::Steps;

mod steps;

/// Import loops between modules (a unit test checks the kernel programs with it).
#[cfg(test)]
mod imports;

mod image;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Everything CI runs: format and lint checks, unit tests and the BPF_PROG_TEST_RUN suite,
    /// every fuzz target briefly, the root scenario tests against real servers, a real SDK and
    /// the real kernel, the quick benchmarks (gating on exactness) and one old kernel in a VM.
    /// Needs root; what cannot run fails the run unless CREDWATCH_ALLOW_SKIPS=1 (local only).
    Test {
        /// Only the checks, unit tests and the BPF_PROG_TEST_RUN suite (which needs root).
        #[arg(long)]
        unit_only: bool,
        /// Seconds each fuzz target runs.
        #[arg(long, default_value_t = TEST_FUZZ_SECONDS)]
        fuzz_seconds: u64,
        /// Extra arguments for pytest (e.g. -k storm); a run with them is a selection: it leaves
        /// out the fuzz targets, the benchmarks and the VM.
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
        /// Another build's `credwatch` binary (e.g. main's), measured by `fastpath` in the same
        /// rounds, alternating with this one's: "credwatch / other build" is the change's cost.
        #[arg(long)]
        compare_binary: Option<PathBuf>,
    },
    /// Run every fuzz target (or the ones named) for a while with libFuzzer and print what each
    /// did (cargo-fuzz, installed by scripts/setup.sh, and the pinned nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Targets to run (default: all of them).
        targets: Vec<String>,
    },
    /// Boot distribution kernels under qemu and check that every program loads, attaches and
    /// sees traffic there (scripts/vm-kernel-test.sh; needs root, downloads each kernel once).
    /// ~2-3 minutes per kernel; `cargo xtask test` runs debian12, `CREDWATCH_VM_TEST=1` all five.
    VmTest {
        /// debian11 (5.10), ubuntu22.04 (5.15), debian12 (6.1), ubuntu24.04 (6.8), debian13
        /// (6.12), SUITE:PACKAGE or a package name (default: the first five).
        kernels: Vec<String>,
    },
    /// Build the container image (localhost/credwatch:dev) with buildah from the Containerfile,
    /// pulling nothing: static release binaries for linux/amd64 and linux/arm64, each checked
    /// (arm64 under qemu-user-static), then the image for this machine's architecture.
    Image(image::ImageArgs),
    /// Build and run the demo, `credwatch-demo` (needs root).
    Demo {
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match Cli::parse().task {
        Task::Test { unit_only, fuzz_seconds, pytest_args } => {
            test(&root, unit_only, fuzz_seconds, &pytest_args)
        }
        Task::Bench { names, quick, rounds, seconds, compare_binary } => {
            bench(&root, &names, quick, rounds, seconds, compare_binary.as_deref())
        }
        Task::Fuzz { seconds, targets } => fuzz(&root, seconds, targets),
        Task::VmTest { kernels } => vm_test(&root, kernels),
        Task::Image(args) => image::image(&root, &args),
        Task::Demo { args } => {
            cargo(&["build", "-p", "credwatch-demo"])?;
            let mut cmd = Command::new(root.join("target/debug/credwatch-demo"));
            cmd.args(args);
            run(&mut cmd)
        }
    }
}

/// Seconds per fuzz target in `cargo xtask test`: 12 targets, two at a time, take about 2
/// minutes after their build (docs/fuzzing.md), within CI's 30-minute budget.
const TEST_FUZZ_SECONDS: u64 = 20;

/// The old kernel `cargo xtask test` boots: Debian 12's 6.1, the line of Amazon Linux 2023 and
/// Bottlerocket (docs/old-kernels.md has its time). `CREDWATCH_VM_TEST=1` boots all five.
const TEST_VM_KERNEL: &str = "debian12";

fn test(
    root: &Path,
    unit_only: bool,
    fuzz_seconds: u64,
    pytest_args: &[String],
) -> anyhow::Result<()> {
    let mut steps = Steps::new(root);
    let result = test_steps(root, &mut steps, unit_only, fuzz_seconds, pytest_args);
    steps.summary(result.is_ok());
    result?;
    steps.skipped()
}

fn test_steps(
    root: &Path,
    steps: &mut Steps,
    unit_only: bool,
    fuzz_seconds: u64,
    pytest_args: &[String],
) -> anyhow::Result<()> {
    let selection = !pytest_args.is_empty();
    // Checked first, so that a run that cannot pass says so before building anything.
    let root_suites = !unit_only
        && steps
            .can_run(is_root(), "root scenario tests, quick benchmarks and the VM: not root")?;
    steps.run("fmt/clippy", "cargo fmt --check, clippy (userspace and kernel programs)", || {
        cargo(&["fmt", "--all", "--", "--check"])?;
        // The eBPF crates build for bpfel-unknown-none only: they have their own clippy run below.
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
        ])
    })?;
    steps.run("unit", "unit tests, BPF_PROG_TEST_RUN suite, bench.py's own tests", || {
        cargo(&["test"])?;
        let mut cmd = Command::new(venv_tool(root, "pytest")?);
        cmd.args(["bench/test_bench.py", "-q", "-p", "no:cacheprovider"]);
        run(&mut cmd)
    })?;
    if unit_only || selection {
        // The fuzz targets must still compile: a parser change cannot leave them broken.
        steps.run(
            "fuzz",
            "fuzz targets compile (not run: --unit-only or a pytest selection)",
            || {
                cargo(&[
                    "check",
                    "--manifest-path",
                    "fuzz/Cargo.toml",
                    "--bins",
                    "--no-default-features",
                ])
            },
        )?;
    } else if steps.can_run(
        fuzz_cargo(&ebpf_toolchain(root)?, &["--version"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "fuzz targets: cargo-fuzz is not installed (scripts/setup.sh installs it)",
    )? {
        steps.run(
            "fuzz",
            &format!("every fuzz target for {fuzz_seconds} s (docs/fuzzing.md)"),
            || fuzz(root, fuzz_seconds, Vec::new()),
        )?;
    }
    if unit_only || !root_suites {
        return Ok(());
    }
    // The runtime suite (tests/scenarios/test_runtime.py) runs this image under podman. Only
    // this machine's platform by default: the arm64 cross build of the whole tree (and its check
    // under qemu-user-static) takes about as long as the amd64 one again, which would push the
    // run past 30 minutes; CREDWATCH_IMAGE_PLATFORMS=linux/amd64,linux/arm64 adds it
    // (`cargo xtask image` builds both by default).
    let platforms = std::env::var("CREDWATCH_IMAGE_PLATFORMS").ok().filter(|p| !p.is_empty());
    let mut image_args = image::ImageArgs::default();
    match platforms {
        Some(list) => image_args.platforms = list.split(',').map(str::to_string).collect(),
        None => image_args.platforms = vec![image::host_platform()?],
    }
    let what = format!("container image (cargo xtask image: {})", image_args.platforms.join(", "));
    steps.run("image", &what, || image::image(root, &image_args))?;
    steps.run("scenarios", "scenario tests (root, real kernel)", || {
        // credwatch-loadgen too: tests/scenarios/test_pod_traffic.py attaches its test program.
        cargo(&["build", "-p", "agent", "-p", "loadgen"])?;
        let mut cmd = Command::new(venv_tool(root, "pytest")?);
        // -rsx: say why anything was skipped (which fails the run unless skips are allowed).
        cmd.args(["tests/scenarios", "-q", "-rsx"])
            .args(pytest_args)
            .env("CREDWATCH_BIN", root.join("target/debug/credwatch"))
            .env("CREDWATCH_LOADGEN", root.join("target/debug/credwatch-loadgen"));
        run(&mut cmd)
    })?;
    if selection {
        return Ok(());
    }
    steps.run(
        "bench quick",
        "benchmarks, quick mode (gates on exactness rows, not on speed)",
        || bench(root, &[], true, 1, 1, None),
    )?;
    let kernels = if std::env::var_os("CREDWATCH_VM_TEST").is_some_and(|v| v == "1") {
        Vec::new()
    } else {
        vec![TEST_VM_KERNEL.to_string()]
    };
    steps.run("vm-test", "old kernels in a VM (docs/old-kernels.md)", || vm_test(root, kernels))
}

fn venv_tool(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = root.join(".venv/bin").join(name);
    if !path.exists() {
        bail!("{} is missing: run scripts/setup.sh", path.display());
    }
    Ok(path)
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
    // The VM runs the demo's clients too (scripts/vm-kernel-test.sh).
    cargo(&["build", "-p", "agent", "-p", "credwatch-demo"])?;
    cargo(&["test", "-p", "agent", "--test", "prog_test_run", "--no-run"])?;
    std::fs::create_dir_all(root.join("target/vm"))?;
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
    compare_binary: Option<&Path>,
) -> anyhow::Result<()> {
    // Footprint and CPU figures are only meaningful for the release build; the load generator
    // (loadgen/) and the demo's storm client (credwatch-demo demo-client) with the same profile.
    let profile = if quick {
        cargo(&["build", "-p", "agent", "-p", "loadgen", "-p", "credwatch-demo"])?;
        root.join("target/debug")
    } else {
        cargo(&["build", "-p", "agent", "-p", "loadgen", "-p", "credwatch-demo", "--release"])?;
        root.join("target/release")
    };
    let mut cmd = Command::new(root.join(".venv/bin/python"));
    cmd.arg(root.join("bench/bench.py"))
        .arg("--binary")
        .arg(profile.join("credwatch"))
        .arg("--loadgen")
        .arg(profile.join("credwatch-loadgen"))
        .arg("--demo")
        .arg(profile.join("credwatch-demo"))
        .args(names);
    cmd.args(["--rounds", &rounds.to_string(), "--seconds", &seconds.to_string()]);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(other) = compare_binary {
        cmd.arg("--compare-binary").arg(other);
    }
    run(&mut cmd)
}

/// Runs each target from a working corpus under target/ (kept between runs) seeded with the
/// committed fuzz/seeds/<target>, with debug assertions and overflow checks on.
fn fuzz(root: &Path, seconds: u64, targets: Vec<String>) -> anyhow::Result<()> {
    let toolchain = ebpf_toolchain(root)?;
    let fuzz_cargo = |args: &[&str]| fuzz_cargo(&toolchain, args);
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
    // Every target starts from committed inputs (docs/fuzzing.md): a target without them would
    // spend a short run finding the input format.
    let unseeded: Vec<&str> = targets
        .iter()
        .filter(|t| {
            std::fs::read_dir(root.join("fuzz/seeds").join(t)).map_or(0, |d| d.count()) == 0
        })
        .map(String::as_str)
        .collect();
    if !unseeded.is_empty() {
        bail!("fuzz targets without seeds in fuzz/seeds/<target>/: {}", unseeded.join(", "));
    }
    step("building the fuzz targets");
    run(&mut fuzz_cargo(&["build", "-O", "--debug-assertions"]))?;
    // FUZZ_JOBS targets at a time, each on one core for `seconds`; then what each did, in the
    // order of `targets`.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..FUZZ_JOBS.min(targets.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(target) = targets.get(i) else { break };
                    step(&format!("fuzzing {target} for {seconds} s"));
                    let outcome = fuzz_target(root, &toolchain, target, seconds);
                    outcomes.lock().expect("not poisoned").push((i, outcome));
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("not poisoned");
    outcomes.sort_by_key(|(i, _)| *i);
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for (i, outcome) in outcomes {
        let target = &targets[i];
        let FuzzOutcome { row, failure } = outcome?;
        if let Some(lines) = failure {
            eprintln!("{target} FAILED:");
            for line in lines {
                eprintln!("    {line}");
            }
            failed.push(target.clone());
        }
        report.push(row);
    }
    println!("\n| target | executions | per second | corpus | result |\n|---|---|---|---|---|");
    println!("{}", report.join("\n"));
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed (inputs saved in fuzz/artifacts/TARGET/): {}",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Fuzz targets run at once by `cargo xtask fuzz` (and test): libFuzzer uses one core per
/// target, and the machine CI runs on has two.
const FUZZ_JOBS: usize = 2;

/// What one fuzz target did: its row of the table, and on failure what to print about it.
struct FuzzOutcome {
    row: String,
    failure: Option<Vec<String>>,
}

/// Runs `target` for `seconds` from its working corpus and seeds, and writes its log.
fn fuzz_target(
    root: &Path,
    toolchain: &str,
    target: &str,
    seconds: u64,
) -> anyhow::Result<FuzzOutcome> {
    let corpus = root.join("target/fuzz-corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let seeds = root.join("fuzz/seeds").join(target);
    // Where libFuzzer saves an input that crashed, timed out or ran out of memory.
    let artifacts = root.join("fuzz/artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let out = fuzz_cargo(toolchain, &["run", "-O", "--debug-assertions", target])
        .arg(&corpus)
        .arg(&seeds)
        .args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"])
        .args(["-timeout=10", "-rss_limit_mb=2048"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
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
    let failure = (!out.status.success()).then(|| {
        // The panic (or sanitizer report) and the input that caused it; the rest is in the log.
        let keep = |l: &&str| {
            l.contains("panicked at")
                || l.starts_with("attempt to")
                || l.contains("ERROR: ")
                || l.contains("Test unit written")
        };
        let mut lines: Vec<String> = log.lines().filter(keep).map(str::to_string).collect();
        for input in log.lines().filter_map(|l| l.split_once("Test unit written to ")) {
            lines.push(format!("input saved: {}", input.1.trim()));
            lines.push(format!(
                "reproduce: cargo {toolchain} fuzz run -O --debug-assertions {target} {}",
                input.1.trim()
            ));
        }
        lines.push(format!("full log: {}", log_path.display()));
        lines
    });
    let row = format!(
        "| {target} | {} | {} | {units} | {result} |",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
    );
    Ok(FuzzOutcome { row, failure })
}

/// `cargo +nightly fuzz ARGS` (cargo-fuzz needs the nightly for its sanitizer flags).
fn fuzz_cargo(toolchain: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(toolchain).arg("fuzz").args(args).env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// `+` and the kernel programs' nightly, pinned in agent-ebpf/rust-toolchain.toml (the fuzz
/// targets use it too, for the sanitizers).
fn ebpf_toolchain(root: &Path) -> anyhow::Result<String> {
    let channel = ebpf_build::toolchain(&root.join("agent-ebpf/rust-toolchain.toml"))?;
    Ok(format!("+{channel}"))
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
