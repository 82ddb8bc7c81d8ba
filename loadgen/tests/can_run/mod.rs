//! What a test does when it cannot run here. CI is root with cgroup v2, so that is a failure,
//! unless a local run allows skips with CREDWATCH_ALLOW_SKIPS=1 (`.ci/run` unsets it); then the
//! test says so and passes, and `cargo xtask test` lists it at the end.
use std::{fs, io::Write as _};

pub fn cannot_run(test: &str, reason: &str) {
    if std::env::var("CREDWATCH_ALLOW_SKIPS").as_deref() != Ok("1") {
        panic!(
            "{test} cannot run: {reason} (a local run may skip it with CREDWATCH_ALLOW_SKIPS=1)"
        );
    }
    let line = format!("SKIPPED {test} (CREDWATCH_ALLOW_SKIPS=1): {reason}");
    // Past libtest's capture, so that the reason shows in a passing run too.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(log) = std::env::var_os("CREDWATCH_SKIP_LOG")
        && let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(log)
    {
        let _ = writeln!(file, "{line}");
    }
}
