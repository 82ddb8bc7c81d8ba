//! Metadata-endpoint responses and credential expirations → per-workload request counts and
//! latency, IMDSv1 use, credential fetches and remaining lifetime, and the storm flag.
use std::{collections::HashSet, sync::atomic::Ordering, time::Duration};

use agent_common::RequestKind;

use super::{
    detector::{Detector, FlagChange, Rule},
    expiration,
    metrics::{
        CredentialLabels, DurationLabels, FetchLabels, MetadataMetrics, RequestLabels, StormLabels,
    },
    record::{self, Observation, What},
    unanswered::Unanswered,
};
use crate::{
    attribution::labels::Workload,
    observer::{Context, Observer},
    record::RecordError,
};

/// A (workload, role) with no fetch for this long is forgotten and its storm series removed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// The `code` of a metadata request that got no response status line.
pub const NO_RESPONSE: &str = "no_response";

#[derive(Debug)]
pub struct MetadataObserver {
    metrics: MetadataMetrics,
    detector: Detector<StormLabels>,
    unanswered: Unanswered,
}

impl MetadataObserver {
    pub fn new(rule: Rule, unanswered: Unanswered, metrics: MetadataMetrics) -> Self {
        Self { metrics, detector: Detector::new(rule), unanswered }
    }

    fn observe(&mut self, o: Observation, cx: &mut Context) {
        let workload = cx.resolver.workload_or_fallback(o.cgroup_id);
        let now = cx.clock.unix_seconds(o.ktime_ns);
        let metadata_endpoint = o.endpoint.as_str();
        let kind = o.kind.as_str();
        let sdk = o.sdk.as_str();
        log::debug!(
            "{metadata_endpoint} {kind} sdk={sdk} role={:?} {:?} ({workload:?})",
            o.role,
            o.what
        );
        let m = &self.metrics;
        match o.what {
            What::Response { status, latency_ns, imdsv1 } => {
                let code = status.to_string();
                let labels = RequestLabels {
                    workload: workload.clone(),
                    metadata_endpoint,
                    kind,
                    code,
                    sdk,
                };
                self.count_request(&labels, imdsv1, cx);
                let labels = DurationLabels { workload: workload.clone(), metadata_endpoint, kind };
                cx.series.get_or_create(&m.duration, &labels).observe(latency_ns as f64 / 1e9);
                if o.kind == RequestKind::Credentials && status == 200 {
                    let labels = FetchLabels {
                        workload: workload.clone(),
                        metadata_endpoint,
                        role: o.role.clone(),
                        sdk,
                    };
                    cx.series.get_or_create(&m.fetches, &labels).inc();
                    let key = StormLabels { workload, role: o.role, sdk };
                    // A storm series exists (at 0) from a key's first fetch, so "no storm" is
                    // visible.
                    let _ = cx.series.get_or_create(&m.storm, &key);
                    let change = self.detector.on_fetch(&key, now);
                    self.apply(change, cx);
                }
            }
            What::NoResponse { imdsv1 } => {
                // Counted, but not timed: there is no response to time.
                let code = NO_RESPONSE.to_string();
                let labels = RequestLabels { workload, metadata_endpoint, kind, code, sdk };
                self.count_request(&labels, imdsv1, cx);
            }
            What::Expiration { packed } => {
                let Some(expires_at) = expiration::unix_seconds(packed) else {
                    cx.rejects.bad_timestamp.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let expires_at = expires_at as f64;
                let labels = CredentialLabels {
                    workload: workload.clone(),
                    metadata_endpoint,
                    role: o.role.clone(),
                };
                cx.series.get_or_create(&m.lifetime, &labels).observe(expires_at - now);
                let key = StormLabels { workload, role: o.role, sdk };
                let change = self.detector.on_expiration(&key, now, expires_at);
                self.apply(change, cx);
            }
        }
    }

    /// A request, answered or not, and whether it was an IMDSv1 one (no session token).
    fn count_request(&self, labels: &RequestLabels, imdsv1: bool, cx: &mut Context) {
        cx.series.get_or_create(&self.metrics.requests, labels).inc();
        if imdsv1 {
            cx.series.get_or_create(&self.metrics.imdsv1, &labels.workload).inc();
        }
    }

    fn apply(&self, change: Option<FlagChange<StormLabels>>, cx: &mut Context) {
        let Some(FlagChange { key, storm }) = change else { return };
        if storm {
            log::warn!(
                "credential refresh storm: pod={} container={} role={} sdk={} fetches credentials far more often than their lifetime requires",
                key.workload.pod,
                key.workload.container,
                key.role,
                key.sdk
            );
        } else {
            log::info!(
                "credential refresh storm over: pod={} role={} sdk={}",
                key.workload.pod,
                key.role,
                key.sdk
            );
        }
        cx.series.get_or_create(&self.metrics.storm, &key).set(i64::from(storm));
    }
}

impl Observer for MetadataObserver {
    fn on_record(&mut self, bytes: &[u8], cx: &mut Context) -> Result<(), RecordError> {
        self.observe(record::decode(bytes)?, cx);
        Ok(())
    }

    /// Requests left unanswered past the timeout are counted, and storm flags are re-evaluated,
    /// so that they clear when fetching stops.
    fn tick(&mut self, cx: &mut Context) {
        for o in self.unanswered.sweep(cx.clock.monotonic_ns()) {
            self.observe(o, cx);
        }
        let (changes, forgotten) = self.detector.tick(cx.clock.unix_now(), FORGET_AFTER);
        for c in changes {
            self.apply(Some(c), cx);
        }
        for key in forgotten {
            cx.series.remove(&self.metrics.storm, &key);
        }
    }

    fn sweep(&mut self, _cx: &Context, removed: &HashSet<Workload>) {
        self.detector.forget(|k| removed.contains(&k.workload));
    }
}
