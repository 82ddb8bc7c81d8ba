//! Metadata and credential metric families and their label types.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    attribution::labels::Workload,
    series::{Tracked, TrackedHistogram, workload_labels},
};

pub const DURATION_BUCKETS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// 1 minute to 12 hours: KIAM's 15 minutes, kube2iam's 30, IMDS's 6 hours all fall on an edge.
pub const LIFETIME_BUCKETS: [f64; 11] =
    [60.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0, 43200.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub metadata_endpoint: &'static str,
    pub kind: &'static str,
    pub code: String,
    /// The client's SDK family (`agent_common::sdk::Sdk`), from its `User-Agent`.
    pub sdk: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub metadata_endpoint: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub metadata_endpoint: &'static str,
    pub role: String,
}

/// `credwatch_credential_fetches_total`: [`CredentialLabels`] and the SDK that fetched.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub metadata_endpoint: &'static str,
    pub role: String,
    pub sdk: &'static str,
}

/// The storm detector's key and the flag's labels: the SDK is part of the key, so two clients of
/// one workload fetching the same role (each with its own credential cache) are judged apart,
/// and a flag names the one that storms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct StormLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub role: String,
    pub sdk: &'static str,
}

workload_labels!(RequestLabels, DurationLabels, CredentialLabels, FetchLabels, StormLabels);

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}
fn lifetime_histogram() -> Histogram {
    Histogram::new(LIFETIME_BUCKETS)
}
#[derive(Clone, Debug)]
pub struct MetadataMetrics {
    pub requests: Tracked<RequestLabels, Counter>,
    pub duration: TrackedHistogram<DurationLabels>,
    pub imdsv1: Tracked<Workload, Counter>,
    pub fetches: Tracked<FetchLabels, Counter>,
    pub lifetime: TrackedHistogram<CredentialLabels>,
    pub storm: Tracked<StormLabels, Gauge>,
}

impl MetadataMetrics {
    pub fn register(r: &mut Registry) -> Self {
        Self {
            requests: Tracked::register(
                r,
                "credwatch_metadata_requests",
                "Requests to metadata/credential endpoints, by HTTP status of the response (code=\"no_response\": none came)",
                Family::default(),
            ),
            duration: Tracked::register(
                r,
                "credwatch_metadata_request_duration_seconds",
                "Time from a metadata request to the first byte of its response",
                Family::new_with_constructor(duration_histogram),
            ),
            imdsv1: Tracked::register(
                r,
                "credwatch_metadata_imdsv1_requests",
                "IMDS GET requests made without an IMDSv2 session token",
                Family::default(),
            ),
            fetches: Tracked::register(
                r,
                "credwatch_credential_fetches",
                "Credential documents delivered (HTTP 200) to the workload",
                Family::default(),
            ),
            lifetime: Tracked::register(
                r,
                "credwatch_credential_remaining_lifetime_seconds",
                "Time the delivered credentials had left (Expiration minus delivery time)",
                Family::new_with_constructor(lifetime_histogram),
            ),
            storm: Tracked::register(
                r,
                "credwatch_credential_refresh_storm",
                "1 while the workload fetches credentials far more often than their lifetime requires",
                Family::default(),
            ),
        }
    }
}
