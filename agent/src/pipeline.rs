//! From kernel events to metrics: attribution, counting and the storm detector.
use std::{
    os::fd::AsRawFd as _,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use agent_common::RequestKind;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use crate::{
    metadata::{
        detector::{Detector, FlagChange, Rule},
        event::{self, Observation, What},
        expiration::{self, Clock},
    },
    metrics::{CredentialLabels, DurationLabels, Metrics, RequestLabels, StormLabels},
    workload::{Resolver, Workload},
};

/// How often idle storm flags are re-evaluated (so they clear when fetching stops).
const TICK: Duration = Duration::from_secs(5);
/// A (workload, role) with no fetch for this long is forgotten and its storm series removed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

pub struct Pipeline {
    resolver: Resolver,
    detector: Detector<StormLabels>,
    metrics: Metrics,
    clock: Clock,
}

impl Pipeline {
    pub fn new(resolver: Resolver, rule: Rule, metrics: Metrics) -> Self {
        Self {
            resolver,
            detector: Detector::new(rule),
            metrics,
            clock: Clock::now(),
        }
    }

    /// Reads events until `shutdown` changes.
    pub async fn run(
        mut self,
        ring: RingBuf<MapData>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        // SAFETY: the ring buffer owns its fd, which stays open and unchanged until the AsyncFd (and
        // the RingBuf inside it) is dropped.
        let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
        log::debug!(
            "reading events from ring buffer fd {}",
            ring.get_ref().as_raw_fd()
        );
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        match event::decode(&item) {
                            Ok(o) => self.observe(o),
                            Err(e) => {
                                self.metrics.userspace.undecodable_event.fetch_add(1, Ordering::Relaxed);
                                log::warn!("dropping kernel event: {e}");
                            }
                        }
                    }
                    guard.clear_ready();
                }
                _ = tick.tick() => self.tick(),
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    fn workload(&mut self, cgroup_id: u64) -> Workload {
        match self.resolver.resolve(cgroup_id) {
            Some(w) => (*w).clone(),
            // The cgroup vanished before it could be indexed: say so instead of "unknown".
            None => Workload {
                pod: format!("/cgroup-id/{cgroup_id}"),
                ..Default::default()
            },
        }
    }

    pub fn observe(&mut self, o: Observation) {
        let workload = self.workload(o.cgroup_id);
        let now = self.clock.unix_seconds(o.ktime_ns);
        let endpoint = o.endpoint.as_str();
        let kind = o.kind.as_str();
        log::debug!(
            "{} {kind} role={:?} {:?} ({workload:?})",
            endpoint,
            o.role,
            o.what
        );
        match o.what {
            What::Response {
                status,
                latency_ns,
                imdsv1,
            } => {
                let code = status.to_string();
                let labels = RequestLabels {
                    workload: workload.clone(),
                    endpoint,
                    kind,
                    code,
                };
                self.metrics.requests.get_or_create(&labels).inc();
                let labels = DurationLabels {
                    workload: workload.clone(),
                    endpoint,
                    kind,
                };
                self.metrics
                    .duration
                    .get_or_create(&labels)
                    .observe(latency_ns as f64 / 1e9);
                if imdsv1 {
                    self.metrics.imdsv1.get_or_create(&workload).inc();
                }
                if o.kind == RequestKind::Credentials && status == 200 {
                    let labels = CredentialLabels {
                        workload: workload.clone(),
                        endpoint,
                        role: o.role.clone(),
                    };
                    self.metrics.fetches.get_or_create(&labels).inc();
                    let key = StormLabels {
                        workload,
                        role: o.role,
                    };
                    self.storm_key_seen(&key);
                    let change = self.detector.on_fetch(&key, now);
                    self.apply(change);
                }
            }
            What::Expiration { packed } => {
                let Some(expires_at) = expiration::unix_seconds(packed) else {
                    self.metrics
                        .userspace
                        .bad_timestamp
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let expires_at = expires_at as f64;
                let labels = CredentialLabels {
                    workload: workload.clone(),
                    endpoint,
                    role: o.role.clone(),
                };
                self.metrics
                    .lifetime
                    .get_or_create(&labels)
                    .observe(expires_at - now);
                let key = StormLabels {
                    workload,
                    role: o.role,
                };
                let change = self.detector.on_expiration(&key, now, expires_at);
                self.apply(change);
            }
        }
    }

    /// A storm series exists (at 0) from a key's first fetch, so "no storm" is visible.
    fn storm_key_seen(&self, key: &StormLabels) {
        let _ = self.metrics.storm.get_or_create(key);
    }

    fn apply(&self, change: Option<FlagChange<StormLabels>>) {
        if let Some(FlagChange { key, storm }) = change {
            if storm {
                log::warn!(
                    "credential refresh storm: pod={} container={} role={} fetches credentials far more often than their lifetime requires",
                    key.workload.pod,
                    key.workload.container,
                    key.role
                );
            } else {
                log::info!(
                    "credential refresh storm over: pod={} role={}",
                    key.workload.pod,
                    key.role
                );
            }
            self.metrics.storm.get_or_create(&key).set(i64::from(storm));
        }
    }

    fn tick(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let (changes, forgotten) = self.detector.tick(now, FORGET_AFTER);
        for c in changes {
            self.apply(Some(c));
        }
        for key in forgotten {
            self.metrics.storm.remove(&key);
        }
        self.metrics
            .cgroups_known
            .set(self.resolver.known_cgroups() as i64);
    }
}

/// Shared readiness: true once programs are attached and events are being read.
pub type Ready = Arc<std::sync::atomic::AtomicBool>;
