//! TCP metric families and their label types.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::{
    attribution::labels::Workload,
    series::{Tracked, TrackedHistogram, workload_labels},
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

/// Loopback connects take tens of microseconds; cross-zone ones milliseconds; SYN retries seconds.
pub const TCP_DURATION_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 3.0, 10.0];

fn tcp_histogram() -> Histogram {
    Histogram::new(TCP_DURATION_BUCKETS)
}

#[derive(Clone, Debug)]
pub struct TcpMetrics {
    pub connects: Tracked<TcpConnectLabels, Counter>,
    pub duration: TrackedHistogram<TcpDestinationLabels>,
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
                Family::new_with_constructor(tcp_histogram),
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
