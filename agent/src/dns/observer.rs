//! DNS observations → per-workload metrics: requests by qtype and rcode, latency, timeouts,
//! search-list expansion (count and time), truncation, and the opt-in capped per-pod name counts.
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{
    event::{self, DnsObservation, RCODE_NXDOMAIN},
    expansion::Expansion,
    resolvconf::{self, ResolvConf},
    tracker::{Admitted, PendingQuery, Tracker},
};
use crate::{
    metrics::{DnsLabels, DnsNameLabels, DnsQtypeLabels, Metrics},
    series::SeriesRegistry,
    workload::{Resolver, Workload},
};

/// How often a pod's resolv.conf is read again.
const RESOLV_CONF_TTL: Duration = Duration::from_secs(60);
/// Bound on the pending-query table (memory: about 100 bytes an entry).
const PENDING_MAX: usize = 65_536;
// Family names for the series registry (crate::series).
const DNS_REQUESTS: &str = "dns_requests";
const DNS_DURATION: &str = "dns_request_duration";
const DNS_TRUNCATED: &str = "dns_truncated_responses";
const DNS_EXPANSION: &str = "dns_search_expansion_queries";
const DNS_EXPANSION_SECONDS: &str = "dns_search_expansion_seconds";
const DNS_NAMES: &str = "dns_name_queries";

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
    tracker: Tracker,
    pods: HashMap<u64, PodDns>,
    top_names: usize,
}

impl DnsObserver {
    pub fn new(timeout: Duration, top_names: usize) -> Self {
        Self {
            tracker: Tracker::new(timeout.as_nanos() as u64, PENDING_MAX),
            pods: HashMap::new(),
            top_names,
        }
    }

    pub fn observe(
        &mut self,
        o: DnsObservation,
        resolver: &mut Resolver,
        m: &Metrics,
        series: &mut SeriesRegistry,
        now_unix: f64,
    ) {
        match o {
            DnsObservation::Query { key, cgroup_id, qtype, name, ktime_ns } => {
                if self.top_names > 0 {
                    let workload = resolver.workload_or_fallback(cgroup_id);
                    let pod = self.pods.entry(cgroup_id).or_default();
                    let shown = if pod.names.contains(&name) || pod.names.len() < self.top_names {
                        pod.names.insert(name.clone());
                        name.clone()
                    } else {
                        OTHER_NAMES.to_string()
                    };
                    series
                        .get_or_create(
                            DNS_NAMES,
                            &m.dns.names,
                            &DnsNameLabels { workload, name: shown },
                        )
                        .inc();
                }
                let q = PendingQuery { cgroup_id, qtype, name, ktime_ns };
                if let Admitted::EvictedOldest(_) = self.tracker.on_query(key, q) {
                    m.userspace.dns_pending_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            DnsObservation::Response {
                key,
                cgroup_id,
                qtype,
                rcode,
                truncated,
                latency_ns,
                ..
            } => {
                let workload = resolver.workload_or_fallback(cgroup_id);
                let qtype = event::qtype_label(qtype);
                let labels = DnsLabels {
                    workload: workload.clone(),
                    qtype,
                    rcode: event::rcode_label(rcode),
                };
                series.get_or_create(DNS_REQUESTS, &m.dns.requests, &labels).inc();
                let seconds = latency_ns as f64 / 1e9;
                series
                    .get_or_create(
                        DNS_DURATION,
                        &m.dns.duration,
                        &DnsQtypeLabels { workload: workload.clone(), qtype },
                    )
                    .observe(seconds);
                if truncated {
                    series.get_or_create(DNS_TRUNCATED, &m.dns.truncated, &workload).inc();
                }
                let Some(query) = self.tracker.on_response(key) else {
                    // Its query event was lost or came before the agent: counted, but no name.
                    m.userspace.dns_response_without_query.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if rcode == RCODE_NXDOMAIN
                    && self.is_expansion(cgroup_id, &query.name, resolver, now_unix)
                {
                    series.get_or_create(DNS_EXPANSION, &m.dns.expansion_queries, &workload).inc();
                    series
                        .get_or_create(DNS_EXPANSION_SECONDS, &m.dns.expansion_seconds, &workload)
                        .inc_by(seconds);
                } else if rcode != RCODE_NXDOMAIN {
                    // Record the base of successful expansions too, so the absolute query after
                    // them is recognised; the result itself is not an extra query.
                    let _ = self.is_expansion(cgroup_id, &query.name, resolver, now_unix);
                }
            }
        }
    }

    fn is_expansion(
        &mut self,
        cgroup_id: u64,
        name: &str,
        resolver: &mut Resolver,
        now: f64,
    ) -> bool {
        let pod = self.pods.entry(cgroup_id).or_default();
        if pod.read_at.is_none_or(|t| t.elapsed() >= RESOLV_CONF_TTL) {
            pod.read_at = Some(Instant::now());
            if let Some(conf) = resolver.cgroup_dir(cgroup_id).and_then(|d| read_resolv_conf(&d)) {
                pod.conf = Some(conf);
            }
        }
        let Some(conf) = &pod.conf else { return false };
        pod.expansion.is_expansion(conf, name, now)
    }

    /// Reports queries that got no answer in time as `rcode="timeout"`.
    pub fn tick(
        &mut self,
        now_ktime_ns: u64,
        resolver: &mut Resolver,
        m: &Metrics,
        series: &mut SeriesRegistry,
    ) {
        for q in self.tracker.expire(now_ktime_ns) {
            let workload: Workload = resolver.workload_or_fallback(q.cgroup_id);
            let labels =
                DnsLabels { workload, qtype: event::qtype_label(q.qtype), rcode: "timeout" };
            series.get_or_create(DNS_REQUESTS, &m.dns.requests, &labels).inc();
        }
    }
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

/// Monotonic now, the clock the kernel stamps events with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
