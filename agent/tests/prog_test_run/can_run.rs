//! Whether this suite can run here, and what happens when it cannot.
//!
//! CI runs as root on a kernel that has everything the suite uses: a suite that cannot run there
//! is a failure, not a pass. So without root, or on a kernel that should have a feature and does
//! not, every test fails with the reason, unless the developer opted out for a local run with
//! `CREDWATCH_ALLOW_SKIPS=1` (which `.ci/run` never sets): then the tests print what they skipped,
//! and `cargo xtask test` lists it at the end. On a kernel that predates a feature (the VMs of
//! `cargo xtask vm-test`), the tests print what they could not check there and pass.
use std::{io::Write as _, sync::Once};

/// The local opt-out: skip, and say so, instead of failing.
pub const ALLOW_SKIPS: &str = "CREDWATCH_ALLOW_SKIPS";

/// The first kernel whose `BPF_PROG_TEST_RUN` gives `cgroup_skb` programs the packet
/// ("bpf: fix cgroup_skb prog test run direct packet access", merged for 6.14). Before it,
/// `data_end` is 0 in a test run (seen on Debian's 5.10, 6.1 and 6.12, Ubuntu's 5.15 and 6.8).
pub const PACKET_DATA_SINCE: (u32, u32) = (6, 14);

/// The first kernel that reports how many instructions the verifier processed
/// (`bpf_prog_info.verified_insns`).
pub const VERIFIED_INSNS_SINCE: (u32, u32) = (5, 16);

/// This kernel's release string, e.g. `6.18.44-fc-v1272`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| panic!("reading /proc/sys/kernel/osrelease: {e}"))
}

/// `(major, minor)` of a release string.
pub fn version_of(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok());
    match (next(), next()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => panic!("kernel release {release:?} does not start with MAJOR.MINOR"),
    }
}

pub fn kernel_at_least(version: (u32, u32)) -> bool {
    version_of(&kernel_release()) >= version
}

/// The suite cannot run here although it should: fails the calling test with `reason`, or,
/// with the local opt-out, says once that it skipped and returns.
pub fn cannot_run(reason: &str) {
    if std::env::var(ALLOW_SKIPS).as_deref() != Ok("1") {
        panic!("prog_test_run cannot run: {reason} (a local run may skip it with {ALLOW_SKIPS}=1)");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let line = format!("SKIPPED prog_test_run ({ALLOW_SKIPS}=1): {reason}");
        // Past libtest's capture, so that the reason shows in a normal `cargo test`.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
        record_skip(&line);
    });
}

/// This kernel predates a feature the tests need: said once, and the tests pass without it.
pub fn predates(reason: &str) {
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED prog_test_run: {reason}");
    });
}

/// Appends to the list `cargo xtask test` prints at the end (`CREDWATCH_SKIP_LOG`).
fn record_skip(line: &str) {
    let Some(path) = std::env::var_os("CREDWATCH_SKIP_LOG") else { return };
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{line}");
    }
}

#[test]
fn kernel_releases_parse() {
    assert_eq!(version_of("6.18.44-fc-v1272"), (6, 18));
    assert_eq!(version_of("5.10.0-46-amd64"), (5, 10));
    assert_eq!(version_of("6.1.192"), (6, 1));
    assert_eq!(version_of("6.12.118+deb13-amd64"), (6, 12));
    assert!(version_of("6.13.0") < PACKET_DATA_SINCE && version_of("6.14.1") >= PACKET_DATA_SINCE);
    assert!(version_of("5.15.0-25-generic") < VERIFIED_INSNS_SINCE);
}
