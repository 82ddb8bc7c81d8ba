//! DNS observations → per-workload metrics: requests by qtype and rcode, latency and truncation
//! (from the kernel's counts), timeouts, search-list expansion (count and time), and the opt-in
//! capped per-pod name counts.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use agent_common::dns::{DnsStats, DnsStatsKey};

use super::{
    expansion::Expansion,
    metrics::{DnsLabels, DnsMetrics, DnsNameLabels, DnsQtypeLabels},
    pending::PendingTable,
    record::{self, DnsAnswer, RCODE_NXDOMAIN},
    resolvconf::{self, ResolvConf},
    tables::DnsStatsTables,
};
use crate::{
    attribution::{identify::pod_cgroup, labels::Workload, resolver::Resolver},
    observer::{Context, Observer},
    record::RecordError,
    series::SeriesRegistry,
};

/// How often a pod's resolv.conf is read again.
const RESOLV_CONF_TTL: Duration = Duration::from_secs(60);
/// How soon a pod whose resolv.conf could not be read (no process of it left, or none yet) is
/// tried again.
const RESOLV_CONF_RETRY: Duration = Duration::from_secs(2);
/// At most this many cgroups of a pod are looked into for a process whose resolv.conf to read.
const POD_CGROUPS_SEARCHED: usize = 64;
/// Label for names past a pod's cap.
pub const OTHER_NAMES: &str = "~other";

#[derive(Debug, Default)]
struct PodDns {
    expansion: Expansion,
    names: HashSet<String>,
}

/// A resolv.conf as last read for a pod (or, outside Kubernetes, a cgroup).
#[derive(Debug)]
struct Learnt {
    conf: Option<ResolvConf>,
    read_at: Instant,
}

#[derive(Debug)]
pub struct DnsObserver {
    metrics: DnsMetrics,
    stats: DnsStatsTables,
    pending: PendingTable,
    timeout_ns: u64,
    pods: HashMap<u64, PodDns>,
    /// resolv.conf per pod cgroup directory: every container of a pod has the same one
    /// (kubelet writes it per pod), so a container whose processes have exited is analysed
    /// with what any other process of the pod (its sandbox, a sidecar) shows, or with what was
    /// read for the pod before.
    confs: HashMap<PathBuf, Learnt>,
    top_names: usize,
}

impl DnsObserver {
    pub fn new(
        timeout: Duration,
        top_names: usize,
        stats: DnsStatsTables,
        pending: PendingTable,
        metrics: DnsMetrics,
    ) -> Self {
        Self {
            metrics,
            stats,
            pending,
            timeout_ns: timeout.as_nanos() as u64,
            pods: HashMap::new(),
            confs: HashMap::new(),
            top_names,
        }
    }

    /// An answer the kernel sent by name: NXDOMAIN (search-list analysis), or any answer when
    /// names are counted. Counts, latency and truncation come from [`Self::tick`].
    fn observe(&mut self, a: DnsAnswer, cx: &mut Context) {
        let now_unix = cx.clock.unix_seconds(a.ktime_ns);
        let Context { resolver, series, .. } = cx;
        let m = &self.metrics;
        let workload = resolver.workload_or_fallback(a.cgroup_id);
        if self.top_names > 0 {
            let pod = self.pods.entry(a.cgroup_id).or_default();
            let shown = if pod.names.contains(&a.name) || pod.names.len() < self.top_names {
                pod.names.insert(a.name.clone());
                a.name.clone()
            } else {
                OTHER_NAMES.to_string()
            };
            let labels = DnsNameLabels { workload: workload.clone(), name: shown };
            series.get_or_create(&m.names, &labels).inc();
        }
        // Answers other than NXDOMAIN (seen with --dns-top-names) still record their base, so
        // that the absolute query after a successful expansion is recognised.
        let expansion = self.is_expansion(a.cgroup_id, &a.name, resolver, now_unix);
        let m = &self.metrics;
        if a.rcode == RCODE_NXDOMAIN && expansion {
            series.get_or_create(&m.expansion_queries, &workload).inc();
            series.get_or_create(&m.expansion_seconds, &workload).inc_by(a.latency_ns as f64 / 1e9);
        }
    }

    fn is_expansion(
        &mut self,
        cgroup_id: u64,
        name: &str,
        resolver: &mut Resolver,
        now: f64,
    ) -> bool {
        let Some(conf) = resolver.cgroup_dir(cgroup_id).and_then(|dir| self.conf_for(&dir)) else {
            return false;
        };
        let pod = self.pods.entry(cgroup_id).or_default();
        pod.expansion.is_expansion(&conf, name, now)
    }

    /// The resolv.conf of the pod the cgroup `dir` belongs to (of the cgroup itself outside a
    /// pod): re-read every RESOLV_CONF_TTL, retried every RESOLV_CONF_RETRY while unknown; a
    /// failed re-read keeps what was read before.
    fn conf_for(&mut self, dir: &Path) -> Option<ResolvConf> {
        let scope = pod_cgroup(dir).unwrap_or_else(|| dir.to_path_buf());
        let now = Instant::now();
        let due = match self.confs.get(&scope) {
            Some(Learnt { conf: Some(_), read_at }) => now - *read_at >= RESOLV_CONF_TTL,
            Some(Learnt { conf: None, read_at }) => now - *read_at >= RESOLV_CONF_RETRY,
            None => true,
        };
        if due {
            // The cgroup's own processes first, then any other of its pod.
            let read = read_resolv_conf(dir).or_else(|| read_pod_resolv_conf(&scope, dir));
            let learnt =
                self.confs.entry(scope.clone()).or_insert(Learnt { conf: None, read_at: now });
            learnt.read_at = now;
            if read.is_some() {
                learnt.conf = read;
            }
        }
        self.confs.get(&scope).and_then(|l| l.conf.clone())
    }
}

impl Observer for DnsObserver {
    fn on_record(&mut self, bytes: &[u8], cx: &mut Context) -> Result<(), RecordError> {
        self.observe(record::decode(bytes)?, cx);
        Ok(())
    }

    /// The kernel's counts since the last tick, and queries that got no answer in time, reported
    /// as `rcode="timeout"`.
    fn tick(&mut self, cx: &mut Context) {
        let m = &self.metrics;
        for (key, inc) in self.stats.read_increments() {
            record_answers(&key, &inc, &mut cx.resolver, m, &mut cx.series);
        }
        for q in self.pending.take_timed_out(cx.clock.monotonic_ns(), self.timeout_ns) {
            let workload: Workload = cx.resolver.workload_or_fallback(q.cgroup_id);
            let labels =
                DnsLabels { workload, qtype: record::qtype_label(q.qtype), rcode: "timeout" };
            cx.series.get_or_create(&m.requests, &labels).inc();
        }
    }

    /// What is kept per cgroup (resolv.conf, recent expansions, names seen) goes with the
    /// cgroup; a cgroup that speaks again starts afresh. So do the kernel's statistics entries
    /// of cgroups gone, once their counts were read.
    fn sweep(&mut self, cx: &Context, _removed: &HashSet<Workload>) {
        self.pods.retain(|&cgroup_id, _| cx.resolver.holds(cgroup_id));
        let removed = self.stats.prune(|cgroup_id| !cx.resolver.holds(cgroup_id));
        if removed > 0 {
            log::debug!("removed {removed} DNS statistics entries of vanished cgroups");
        }
        // A pod's resolv.conf goes with the pod's cgroup.
        self.confs.retain(|scope, _| scope.exists());
        if self.pods.capacity() > 4 * self.pods.len().max(64) {
            self.pods.shrink_to_fit();
        }
    }
}

/// Adds one statistics entry's increments to its workload's series.
fn record_answers(
    key: &DnsStatsKey,
    inc: &DnsStats,
    resolver: &mut Resolver,
    m: &DnsMetrics,
    series: &mut SeriesRegistry,
) {
    let workload = resolver.workload_or_fallback(key.cgroup_id);
    let qtype = record::qtype_label(key.qtype);
    for (slot, &n) in inc.responses.iter().enumerate() {
        if n > 0 {
            let rcode = record::rcode_label(slot as u8);
            let labels = DnsLabels { workload: workload.clone(), qtype, rcode };
            series.get_or_create(&m.requests, &labels).inc_by(n);
        }
    }
    if inc.truncated > 0 {
        series.get_or_create(&m.truncated, &workload).inc_by(inc.truncated);
    }
    let labels = DnsQtypeLabels { workload, qtype };
    series.get_or_create(&m.duration, &labels).add(&inc.latency, inc.latency_sum_ns);
}

/// The resolv.conf of a process in any cgroup below `pod` other than `skip` (read already),
/// breadth first, at most POD_CGROUPS_SEARCHED cgroups.
fn read_pod_resolv_conf(pod: &Path, skip: &Path) -> Option<ResolvConf> {
    let mut queue = std::collections::VecDeque::from([pod.to_path_buf()]);
    let mut searched = 0;
    while let Some(dir) = queue.pop_front() {
        searched += 1;
        if searched > POD_CGROUPS_SEARCHED {
            return None;
        }
        if dir != skip
            && let Some(conf) = read_resolv_conf(&dir)
        {
            return Some(conf);
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        queue.extend(
            entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()),
        );
    }
    None
}

/// The resolv.conf a process in the cgroup sees, through `/proc/<pid>/root` (its own mount
/// namespace and root, so a container's file, not the node's).
fn read_resolv_conf(cgroup_dir: &Path) -> Option<ResolvConf> {
    let procs = std::fs::read_to_string(cgroup_dir.join("cgroup.procs")).ok()?;
    procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()).find_map(|pid| {
        let text = std::fs::read(format!("/proc/{pid}/root/etc/resolv.conf")).ok()?;
        // resolv.conf is small; a huge or binary file is not one.
        (text.len() <= 64 * 1024).then(|| resolvconf::parse(&String::from_utf8_lossy(&text)))
    })
}
