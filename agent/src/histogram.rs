//! A histogram filled with bucket counts the kernel measured (`agent_common::dns::DnsStats`,
//! `agent_common::tcp::TcpStats`): prometheus-client's `Histogram` can only observe one value at a
//! time. Each feature says which bounds its kernel slots have ([`KernelBounds`]).
use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// The bounds (inclusive, nanoseconds) of a kernel histogram's slots; the slot after the last
/// bound is +Inf.
pub trait KernelBounds {
    const NS: &'static [u64];
}

pub struct KernelHistogram<B>(Arc<Mutex<KernelHistogramState>>, PhantomData<B>);

#[derive(Debug, Default)]
struct KernelHistogramState {
    sum_seconds: f64,
    /// Not cumulative; slot `B::NS.len()` is +Inf.
    buckets: [u64; 16],
}

impl<B> Clone for KernelHistogram<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}

impl<B> Default for KernelHistogram<B> {
    fn default() -> Self {
        Self(Arc::default(), PhantomData)
    }
}

impl<B> std::fmt::Debug for KernelHistogram<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KernelHistogram").field(&self.0).finish()
    }
}

impl<B: KernelBounds> KernelHistogram<B> {
    const SLOTS: usize = {
        assert!(B::NS.len() < 16);
        B::NS.len() + 1
    };

    /// Adds the kernel's per-slot counts (slot i: latencies in (bound[i-1], bound[i]]).
    pub fn add(&self, slots: &[u64], sum_ns: u64) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.sum_seconds += sum_ns as f64 / 1e9;
        for (bucket, add) in state.buckets[..Self::SLOTS].iter_mut().zip(slots) {
            *bucket += add;
        }
    }

    /// Per-bucket counts (not cumulative), +Inf last.
    fn buckets(state: &KernelHistogramState) -> Vec<(f64, u64)> {
        state.buckets[..Self::SLOTS]
            .iter()
            .enumerate()
            .map(|(i, &n)| (B::NS.get(i).map_or(f64::INFINITY, |&ns| ns as f64 / 1e9), n))
            .collect()
    }
}

impl<B> TypedMetric for KernelHistogram<B> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl<B: KernelBounds> EncodeMetric for KernelHistogram<B> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Per-bucket counts: the encoder accumulates them.
        let buckets = Self::buckets(&state);
        let count = state.buckets.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(state.sum_seconds, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
