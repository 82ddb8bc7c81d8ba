//! DNS metric families and their label types. Counts and latency come from the kernel's
//! per-cgroup statistics; names and search-list expansion from its events.
use std::sync::{Arc, Mutex, atomic::AtomicU64};

use agent_common::dns;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric, counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    attribution::labels::Workload,
    series::{Tracked, workload_labels},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub qtype: &'static str,
    pub rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsQtypeLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub qtype: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsNameLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub name: String,
}

workload_labels!(DnsLabels, DnsQtypeLabels, DnsNameLabels);

/// A histogram filled with bucket counts the kernel measured (`agent_common::dns::DnsStats`):
/// prometheus-client's `Histogram` can only observe one value at a time. Bounds are
/// `agent_common::dns::LATENCY_BOUNDS_NS`.
#[derive(Clone, Debug, Default)]
pub struct KernelHistogram(Arc<Mutex<KernelHistogramState>>);

#[derive(Debug, Default)]
struct KernelHistogramState {
    sum_seconds: f64,
    /// Not cumulative; the last slot is +Inf.
    buckets: [u64; dns::LATENCY_BOUNDS_NS.len() + 1],
}

impl KernelHistogram {
    /// Adds the kernel's per-slot counts (slot i: latencies in (bound[i-1], bound[i]]).
    pub fn add(&self, slots: &[u64; dns::LATENCY_SLOTS], sum_ns: u64) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.sum_seconds += sum_ns as f64 / 1e9;
        for (bucket, add) in state.buckets.iter_mut().zip(slots) {
            *bucket += add;
        }
    }
}

impl TypedMetric for KernelHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for KernelHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Per-bucket counts: the encoder accumulates them.
        let buckets: Vec<(f64, u64)> = state
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let le = dns::LATENCY_BOUNDS_NS.get(i).map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
                (le, n)
            })
            .collect();
        let count = state.buckets.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(state.sum_seconds, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug)]
pub struct DnsMetrics {
    pub requests: Tracked<DnsLabels, Counter>,
    pub duration: Tracked<DnsQtypeLabels, KernelHistogram>,
    pub expansion_queries: Tracked<Workload, Counter>,
    pub expansion_seconds: Tracked<Workload, Counter<f64, AtomicU64>>,
    pub truncated: Tracked<Workload, Counter>,
    pub names: Tracked<DnsNameLabels, Counter>,
}

impl DnsMetrics {
    pub fn register(r: &mut Registry) -> Self {
        Self {
            requests: Tracked::register(
                r,
                "credwatch_dns_requests",
                "DNS queries by type and response code (rcode=\"timeout\": no answer in time)",
                Family::default(),
            ),
            duration: Tracked::register(
                r,
                "credwatch_dns_request_duration_seconds",
                "Time from a DNS query to its response, measured in the kernel",
                Family::default(),
            ),
            expansion_queries: Tracked::register(
                r,
                "credwatch_dns_search_expansion_queries",
                "Queries sent only because of the search list (suffix tried, NXDOMAIN)",
                Family::default(),
            ),
            expansion_seconds: Tracked::register(
                r,
                "credwatch_dns_search_expansion_seconds",
                "Time spent waiting on search-list expansion queries",
                Family::default(),
            ),
            truncated: Tracked::register(
                r,
                "credwatch_dns_truncated_responses",
                "UDP responses with the TC bit (the resolver retries over TCP)",
                Family::default(),
            ),
            names: Tracked::register(
                r,
                "credwatch_dns_name_queries",
                "Queries per name, opt-in (--dns-top-names N): the first N names per pod, the rest as ~other",
                Family::default(),
            ),
        }
    }
}
