//! The steps of `cargo xtask test`: each timed, and what a local run skipped.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The steps of `cargo xtask test`, timed, and what was skipped (only with the local opt-out).
pub struct Steps {
    times: Vec<(String, Duration)>,
    skip_log: PathBuf,
    allow_skips: bool,
    started: Instant,
}

/// The one way to let a local run skip what cannot run here; `.ci/run` never sets it.
pub const ALLOW_SKIPS: &str = "CREDWATCH_ALLOW_SKIPS";

impl Steps {
    pub fn new(root: &Path) -> Self {
        // Every suite that skips something (with the opt-out) appends a line here; see `skipped`.
        let skip_log = root.join("target/skipped.log");
        // Not fatal: a run that cannot write here fails later, for the reason that matters.
        let _ = std::fs::create_dir_all(root.join("target"));
        let _ = std::fs::write(&skip_log, "");
        // SAFETY: single-threaded at this point; the children inherit it.
        unsafe { std::env::set_var("CREDWATCH_SKIP_LOG", &skip_log) };
        let allow_skips = std::env::var(ALLOW_SKIPS).as_deref() == Ok("1");
        if allow_skips {
            println!("{ALLOW_SKIPS}=1: what cannot run here is skipped and listed at the end");
        }
        Self { times: Vec::new(), skip_log, allow_skips, started: Instant::now() }
    }

    pub fn run(
        &mut self,
        name: &str,
        what: &str,
        f: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        crate::step(what);
        let start = Instant::now();
        let result = f();
        let elapsed = start.elapsed();
        match self.times.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += elapsed,
            None => self.times.push((name.to_string(), elapsed)),
        }
        result.with_context(|| format!("step {name} failed"))
    }

    /// `possible`, or else a failure, or with the opt-out a recorded skip (false).
    pub fn can_run(&mut self, possible: bool, what: &str) -> anyhow::Result<bool> {
        if possible {
            return Ok(true);
        }
        if !self.allow_skips {
            bail!(
                "cannot run {what}; CI fails here (a local run may skip it with {ALLOW_SKIPS}=1)"
            );
        }
        println!("SKIPPED {what}");
        let mut log = std::fs::read_to_string(&self.skip_log).unwrap_or_default();
        log.push_str(&format!("SKIPPED {what}\n"));
        std::fs::write(&self.skip_log, log)?;
        Ok(false)
    }

    pub fn summary(&self, ok: bool) {
        println!("\n| step | time |\n|---|---|");
        for (name, time) in &self.times {
            println!("| {name} | {} s |", time.as_secs());
        }
        let result = if ok { "passed" } else { "FAILED" };
        println!("| total ({result}) | {} s |", self.started.elapsed().as_secs());
    }

    /// What was skipped: listed when allowed; an error when not (each suite fails by itself
    /// first; this catches one that only said so).
    pub fn skipped(&self) -> anyhow::Result<()> {
        let log = std::fs::read_to_string(&self.skip_log).unwrap_or_default();
        if log.trim().is_empty() {
            return Ok(());
        }
        println!("\nSkipped in this run ({ALLOW_SKIPS}=1; CI fails on each of these):\n{log}");
        if !self.allow_skips {
            bail!("suites were skipped without {ALLOW_SKIPS}=1");
        }
        Ok(())
    }
}
