//! `interleave`: the same workload from several cgroups in turns of a few milliseconds, one
//! process moving itself between them, so that every cgroup's turns see the same machine. On a
//! VM whose speed drifts by 2× within seconds, turns this short are what makes a few percent
//! between "agent attached" and "nothing attached" measurable.
//!
//! Each cgroup gets its own workload, made while the process is in that cgroup (the listener,
//! connection or UDP socket belongs to it); before each turn the process moves into the cgroup
//! (client sockets of tcp-connect are made during the turn, so they belong to it too), runs a few
//! untimed operations, then times operations for `turn`. The order of the cgroups rotates every
//! round and reverses every other round.
use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::workload::Workload;

pub struct Plan {
    pub cgroups: Vec<PathBuf>,
    pub rounds: usize,
    pub turn: Duration,
}

/// Per cgroup, per round: operations that succeeded, that failed, and the seconds timed; and per
/// cgroup the path the kernel said this process was in when its workload was made.
pub struct Turns {
    pub joined: Vec<String>,
    pub ok: Vec<Vec<u64>>,
    pub failed: Vec<Vec<u64>>,
    pub seconds: Vec<Vec<f64>>,
}

/// Untimed operations after each move (the first ones after a move pay for cold caches).
const WARM_OPS: usize = 3;

/// Moves this process (all its threads) into `cgroup`.
pub fn enter(cgroup: &Path) -> io::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), "0")
        .map_err(|e| io::Error::new(e.kind(), format!("entering {}: {e}", cgroup.display())))
}

/// This process's cgroup v2 path (relative to the mount), as /proc/self/cgroup gives it.
fn current_cgroup() -> io::Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| io::Error::other("no cgroup v2 line in /proc/self/cgroup"))
}

/// Makes one workload per cgroup (inside it), then runs the turns.
pub fn run<W: Workload>(
    plan: &Plan,
    mut make: impl FnMut() -> io::Result<W>,
) -> io::Result<(Vec<W>, Turns)> {
    let mut loads = Vec::with_capacity(plan.cgroups.len());
    let mut joined = Vec::with_capacity(plan.cgroups.len());
    for cg in &plan.cgroups {
        enter(cg)?;
        joined.push(current_cgroup()?);
        loads.push(make()?);
    }
    let n = plan.cgroups.len();
    let mut turns = Turns {
        joined,
        ok: vec![Vec::with_capacity(plan.rounds); n],
        failed: vec![Vec::with_capacity(plan.rounds); n],
        seconds: vec![Vec::with_capacity(plan.rounds); n],
    };
    for round in 0..plan.rounds {
        let mut order: Vec<usize> = (0..n).map(|i| (i + round) % n).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            enter(&plan.cgroups[i])?;
            let load = &mut loads[i];
            for _ in 0..WARM_OPS {
                load.once()?;
            }
            let (mut ok, mut failed) = (0u64, 0u64);
            let t0 = Instant::now();
            let elapsed = loop {
                if load.once()? {
                    ok += 1;
                } else {
                    failed += 1;
                }
                let elapsed = t0.elapsed();
                if elapsed >= plan.turn {
                    break elapsed;
                }
            };
            turns.ok[i].push(ok);
            turns.failed[i].push(failed);
            turns.seconds[i].push(elapsed.as_secs_f64());
        }
    }
    Ok((loads, turns))
}

impl Turns {
    /// `"joined":[…],"ok":[[…],[…]],"failed":[…],"seconds":[…]` (one entry per cgroup).
    pub fn json_fields(&self) -> String {
        fn arr<T: std::fmt::Display>(rows: &[Vec<T>]) -> String {
            let rows: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!("[{}]", r.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","))
                })
                .collect();
            format!("[{}]", rows.join(","))
        }
        let secs: Vec<Vec<String>> =
            self.seconds.iter().map(|r| r.iter().map(|s| format!("{s:.6}")).collect()).collect();
        // cgroup paths are plain directory names here (the benchmark's and tests' own)
        let joined: Vec<String> = self.joined.iter().map(|p| format!("{p:?}")).collect();
        format!(
            r#""joined":[{}],"ok":{},"failed":{},"seconds":{}"#,
            joined.join(","),
            arr(&self.ok),
            arr(&self.failed),
            arr(&secs)
        )
    }
}
