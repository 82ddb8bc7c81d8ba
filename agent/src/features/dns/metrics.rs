//! DNS metric families and their label types. Counts and latency come from the kernel's
//! per-cgroup statistics; names and search-list expansion from its events.
use std::sync::atomic::AtomicU64;

use agent_common::dns;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    attribution::labels::Workload,
    histogram::{KernelBounds, KernelHistogram},
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

/// `credwatch_dns_request_duration_seconds`'s bounds: the kernel's latency slots.
#[derive(Debug)]
pub struct DnsLatency;
impl KernelBounds for DnsLatency {
    const NS: &'static [u64] = &dns::LATENCY_BOUNDS_NS;
}

#[derive(Clone, Debug)]
pub struct DnsMetrics {
    pub requests: Tracked<DnsLabels, Counter>,
    pub duration: Tracked<DnsQtypeLabels, KernelHistogram<DnsLatency>>,
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
