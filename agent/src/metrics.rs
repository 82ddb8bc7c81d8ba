//! The agent's own metrics: what is attached, which kernel features it found, its build, the
//! events lost and the traffic refused (the kernel's counters, read at scrape time by
//! [`KernelCounters`], with the userspace ones), and its heap. Names and labels are a contract
//! for dashboards and alerts (docs/metrics.md); each feature's own families are in its folder.
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use agent_common::counter;
use aya::maps::{MapData, PerCpuArray};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    pub feature: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// Rejects found in userspace, exported with the kernel's under the same metric.
#[derive(Debug, Default)]
pub struct UserspaceCounters {
    /// An `"Expiration"` whose digits do not form a real date.
    pub bad_timestamp: AtomicU64,
    /// A ring buffer record that could not be decoded.
    pub undecodable_event: AtomicU64,
}

#[derive(Clone, Debug)]
pub struct AgentMetrics {
    pub attached: Family<ProgramLabels, Gauge>,
    pub kernel_features: Family<FeatureLabels, Gauge>,
    pub cgroups_known: Gauge,
    pub userspace: Arc<UserspaceCounters>,
}

impl AgentMetrics {
    /// Registers the agent's metrics (after the features': the order of /metrics), and
    /// `kernel`'s counters when given.
    pub fn register(r: &mut Registry, kernel: Option<KernelCounters>) -> Self {
        let m = Self {
            attached: Family::default(),
            kernel_features: Family::default(),
            cgroups_known: Gauge::default(),
            userspace: Arc::default(),
        };
        r.register(
            "credwatch_program_attached",
            "1 for each kernel program attached",
            m.attached.clone(),
        );
        r.register(
            "credwatch_kernel_feature",
            "1 when this kernel offers an optional feature the agent uses, 0 when it works without",
            m.kernel_features.clone(),
        );
        r.register(
            "credwatch_cgroups_known",
            "cgroups in the attached subtree that the agent has indexed",
            m.cgroups_known.clone(),
        );
        let build_info: Family<VersionLabels, Gauge> = Family::default();
        build_info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        r.register("credwatch_build_info", "credwatch version; always 1", build_info);
        r.register_collector(Box::new(LossAndRejects { kernel, userspace: m.userspace.clone() }));
        r.register_collector(Box::new(crate::memory::HeapInUse));
        m
    }
}

/// The kernel's per-CPU counters, summed over CPUs at scrape time.
#[derive(Clone)]
pub struct KernelCounters(Arc<Mutex<PerCpuArray<MapData, u64>>>);

impl std::fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelCounters")
    }
}

impl KernelCounters {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self(Arc::new(Mutex::new(map)))
    }

    /// Whether the map can be read at all (one lookup).
    pub fn readable(&self) -> bool {
        self.0.lock().is_ok_and(|map| map.get(&0, 0).is_ok())
    }

    /// Sums per CPU; a counter that cannot be read reads as 0 and is logged.
    pub fn read(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        let Ok(map) = self.0.lock() else { return out };
        for (i, slot) in out.iter_mut().enumerate() {
            match map.get(&(i as u32), 0) {
                Ok(per_cpu) => *slot = per_cpu.iter().sum(),
                Err(e) => log::warn!("reading kernel counter {i}: {e}"),
            }
        }
        out
    }
}

/// Label value for each kernel counter index, and which metric it belongs to.
const LOST: &[(u32, &str)] = &[
    (counter::LOST_RINGBUF_FULL, "ringbuf_full"),
    (counter::LOST_FLOW_TABLE, "flow_table_full"),
    (counter::LOST_DNS_RINGBUF_FULL, "dns_ringbuf_full"),
    (counter::LOST_DNS_PENDING_TABLE, "dns_pending_table_full"),
    (counter::LOST_DNS_STATS_TABLE, "dns_stats_table_full"),
    (counter::LOST_TCP_RINGBUF_FULL, "tcp_ringbuf_full"),
    (counter::LOST_TCP_TABLE, "tcp_table_full"),
    (counter::LOST_TCP_STATS_TABLE, "tcp_stats_table_full"),
    (counter::LOST_LINKLOCAL_TABLE, "linklocal_table_full"),
];
const DNS_MALFORMED: &[(u32, &str)] = &[
    (counter::DNS_MALFORMED_HEADER, "header"),
    (counter::DNS_MALFORMED_QDCOUNT, "qdcount"),
    (counter::DNS_MALFORMED_LABEL, "label_too_long"),
    (counter::DNS_MALFORMED_NAME, "name"),
    (counter::DNS_MALFORMED_POINTER, "compression_pointer"),
];
const REJECTS: &[(u32, &str)] = &[
    (counter::REJECT_NOT_HTTP, "not_http"),
    (counter::REJECT_REQUEST_LINE, "request_line_too_long"),
    (counter::REJECT_BAD_ROLE, "bad_role"),
    (counter::REJECT_NO_REQUEST, "response_without_request"),
    (counter::REJECT_BAD_STATUS, "bad_status_line"),
    (counter::REJECT_NO_EXPIRATION, "no_expiration"),
    (counter::REJECT_BAD_TIMESTAMP, "bad_timestamp"),
    (counter::REJECT_OUT_OF_ORDER, "out_of_order"),
    (counter::REJECT_SCAN_LIMIT, "scan_limit"),
    (counter::REJECT_PIPELINED, "pipelined"),
    (counter::REJECT_LATE_RESPONSE, "late_response"),
];

#[derive(Debug)]
struct LossAndRejects {
    kernel: Option<KernelCounters>,
    userspace: Arc<UserspaceCounters>,
}

impl Collector for LossAndRejects {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let k = self.kernel.as_ref().map(KernelCounters::read).unwrap_or_default();
        let user_ts = self.userspace.bad_timestamp.load(Ordering::Relaxed);
        let user = &self.userspace;
        let lost = LOST
            .iter()
            .map(|&(i, r)| (r, k[i as usize]))
            .chain([("undecodable_event", user.undecodable_event.load(Ordering::Relaxed))]);
        counter_family(
            &mut enc,
            "credwatch_events_lost",
            "Events lost, by reason (pre-set to 0)",
            lost,
        )?;

        let rejects = REJECTS.iter().map(|&(i, r)| {
            let extra = if i == counter::REJECT_BAD_TIMESTAMP { user_ts } else { 0 };
            (r, k[i as usize] + extra)
        });
        counter_family(
            &mut enc,
            "credwatch_parse_rejects",
            "Metadata traffic the parsers refused, by reason; the packets themselves pass unchanged",
            rejects,
        )?;
        let malformed = DNS_MALFORMED.iter().map(|&(i, r)| (r, k[i as usize]));
        counter_family(
            &mut enc,
            "credwatch_dns_malformed",
            "DNS messages the parser refused, by reason",
            malformed,
        )?;
        counter_family(
            &mut enc,
            "credwatch_dns_unmatched_responses",
            "DNS responses with no pending query: sent before start, refused by a full table, already timed out, or duplicates",
            [("unmatched", k[counter::DNS_UNMATCHED_RESPONSE as usize])],
        )?;
        counter_family(
            &mut enc,
            "credwatch_metadata_retransmits",
            "Retransmitted metadata segments seen (ignored by the parsers)",
            [("retransmit", k[counter::RETRANSMIT as usize])],
        )
    }
}

fn counter_family<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (reason, v) in values {
        let labels = [("reason", reason)];
        ConstCounter::new(v).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_reject_series_exist_before_anything_happens() {
        let mut r = Registry::default();
        let _ = AgentMetrics::register(&mut r, None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for line in [
            "credwatch_events_lost_total{reason=\"ringbuf_full\"} 0",
            "credwatch_events_lost_total{reason=\"flow_table_full\"} 0",
            "credwatch_parse_rejects_total{reason=\"no_expiration\"} 0",
            "credwatch_build_info{version=\"",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
