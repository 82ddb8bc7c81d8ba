//! DNS observations → per-workload metrics: requests by qtype and rcode, latency and truncation
//! (from the kernel's counts), timeouts, search-list expansion (count and time), and the opt-in
//! capped per-pod name counts.
use std::{
    collections::{HashMap, HashSet},
    path::Path,
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
    attribution::{labels::Workload, resolver::Resolver},
    observer::{Context, Observer},
    record::RecordError,
    series::SeriesRegistry,
};

/// How often a pod's resolv.conf is read again.
const RESOLV_CONF_TTL: Duration = Duration::from_secs(60);
/// Label for names past a pod's cap.
pub const OTHER_NAMES: &str = "~other";

#[derive(Debug, Default)]
struct PodDns {
    conf: Option<ResolvConf>,
    read_at: Option<Instant>,
    expansion: Expansion,
    names: HashSet<String>,
}

#[derive(Debug)]
pub struct DnsObserver {
    metrics: DnsMetrics,
    stats: DnsStatsTables,
    pending: PendingTable,
    timeout_ns: u64,
    pods: HashMap<u64, PodDns>,
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
        let expansion =
            Self::is_expansion(&mut self.pods, a.cgroup_id, &a.name, resolver, now_unix);
        if a.rcode == RCODE_NXDOMAIN && expansion {
            series.get_or_create(&m.expansion_queries, &workload).inc();
            series.get_or_create(&m.expansion_seconds, &workload).inc_by(a.latency_ns as f64 / 1e9);
        }
    }

    fn is_expansion(
        pods: &mut HashMap<u64, PodDns>,
        cgroup_id: u64,
        name: &str,
        resolver: &mut Resolver,
        now: f64,
    ) -> bool {
        let pod = pods.entry(cgroup_id).or_default();
        if pod.read_at.is_none_or(|t| t.elapsed() >= RESOLV_CONF_TTL) {
            pod.read_at = Some(Instant::now());
            if let Some(conf) = resolver.cgroup_dir(cgroup_id).and_then(|d| read_resolv_conf(&d)) {
                pod.conf = Some(conf);
            }
        }
        let Some(conf) = &pod.conf else { return false };
        pod.expansion.is_expansion(conf, name, now)
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
