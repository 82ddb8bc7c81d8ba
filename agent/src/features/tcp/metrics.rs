//! TCP metric families and their label types. Counts and latency come from the kernel's
//! per-(cgroup, destination class) statistics.
use agent_common::tcp;
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
pub struct TcpConnectLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub destination: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpDestinationLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub destination: &'static str,
}

workload_labels!(TcpConnectLabels, TcpDestinationLabels);

/// `credwatch_tcp_connect_duration_seconds`'s bounds, the kernel's latency slots: loopback
/// connects take tens of microseconds, cross-zone ones milliseconds, SYN retries seconds. The
/// `le` values are those of the prometheus-client `Histogram` this family had before the kernel
/// counted (a unit test checks).
#[derive(Debug)]
pub struct TcpLatency;
impl KernelBounds for TcpLatency {
    const NS: &'static [u64] = &tcp::LATENCY_BOUNDS_NS;
}

#[derive(Clone, Debug)]
pub struct TcpMetrics {
    pub connects: Tracked<TcpConnectLabels, Counter>,
    pub duration: Tracked<TcpDestinationLabels, KernelHistogram<TcpLatency>>,
    pub accepts: Tracked<Workload, Counter>,
}

impl TcpMetrics {
    pub fn register(r: &mut Registry) -> Self {
        Self {
            connects: Tracked::register(
                r,
                "credwatch_tcp_connects",
                "Outbound TCP connection attempts by destination class (as the application asked, before DNAT) and result",
                Family::default(),
            ),
            duration: Tracked::register(
                r,
                "credwatch_tcp_connect_duration_seconds",
                "connect() to established, for connections that were established",
                Family::default(),
            ),
            accepts: Tracked::register(
                r,
                "credwatch_tcp_accepts",
                "Inbound TCP connections accepted",
                Family::default(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        encoding::EncodeMetric,
        metrics::{TypedMetric, histogram::Histogram},
    };

    use super::*;

    /// The TCP connect histogram is filled from the kernel's slots; the text it exports must be
    /// what the `Histogram` it replaced exported for the same connects, byte for byte (bar the
    /// sum's last digits: the kernel sums nanoseconds, the Histogram seconds).
    #[test]
    fn the_kernel_tcp_histogram_exports_what_the_observed_one_did() {
        fn text(
            h: impl EncodeMetric + TypedMetric + Send + Sync + std::fmt::Debug + 'static,
        ) -> String {
            let mut r = Registry::default();
            r.register("credwatch_tcp_connect_duration_seconds", "help", h);
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
            text
        }
        let latencies_ns: [u64; 9] = [
            40_000,
            100_000,
            100_001,
            999_999,
            2_500_000,
            250_000_000,
            3_000_000_000,
            9_999_999_999,
            12_000_000_000,
        ];
        // The buckets of the Histogram this family used to be.
        const TCP_DURATION_BUCKETS: [f64; 14] = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 3.0,
            10.0,
        ];
        let observed = Histogram::new(TCP_DURATION_BUCKETS);
        let kernel = KernelHistogram::<TcpLatency>::default();
        let mut slots = [0u64; tcp::LATENCY_SLOTS];
        for ns in latencies_ns {
            observed.observe(ns as f64 / 1e9);
            slots[tcp::latency_slot(ns)] += 1;
        }
        // Sums that are exact in both: whole milliseconds.
        let sum_ns = 25_000_000_000;
        kernel.add(&slots, sum_ns);
        let (observed, kernel) = (text(observed), text(kernel));
        let without_sum =
            |t: &str| t.lines().filter(|l| !l.contains("_sum")).collect::<Vec<_>>().join("\n");
        assert_eq!(without_sum(&kernel), without_sum(&observed));
        assert!(kernel.contains("credwatch_tcp_connect_duration_seconds_sum 25.0"), "{kernel}");
        assert!(
            kernel.contains("le=\"0.0001\"} 2") && kernel.contains("le=\"0.00025\"} 3"),
            "{kernel}"
        );
    }
}
