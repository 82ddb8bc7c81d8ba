//! From kernel events to metrics: attribution, counting, the storm detector and DNS.
use std::{sync::atomic::Ordering, time::Duration};

use agent_common::RequestKind;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use crate::{
    dns::{
        self,
        observer::{DnsObserver, monotonic_ns},
    },
    metadata::{
        detector::{Detector, FlagChange, Rule},
        event::{self, Observation, What},
        expiration::{self, Clock},
    },
    metrics::{
        CredentialLabels, DurationLabels, Metrics, RequestLabels, StormLabels, TcpConnectLabels,
        TcpDestinationLabels,
    },
    tcp::{self, classify::Classifier, event::TcpObservation},
    workload::Resolver,
};

/// How often storm flags are re-evaluated (so they clear when fetching stops) and DNS timeouts
/// are reported.
const TICK: Duration = Duration::from_secs(1);
/// A (workload, role) with no fetch for this long is forgotten and its storm series removed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

pub struct Pipeline {
    resolver: Resolver,
    detector: Detector<StormLabels>,
    dns: DnsObserver,
    classifier: Classifier,
    metrics: Metrics,
    clock: Clock,
}

impl Pipeline {
    pub fn new(
        resolver: Resolver,
        rule: Rule,
        dns: DnsObserver,
        classifier: Classifier,
        metrics: Metrics,
    ) -> Self {
        Self {
            resolver,
            detector: Detector::new(rule),
            dns,
            classifier,
            metrics,
            clock: Clock::now(),
        }
    }

    /// Reads the metadata, DNS and TCP rings until `shutdown` changes.
    pub async fn run(
        mut self,
        [ring, dns_ring, tcp_ring]: [RingBuf<MapData>; 3],
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let mut ring = register(ring)?;
        let mut dns_ring = register(dns_ring)?;
        let mut tcp_ring = register(tcp_ring)?;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        match event::decode(&item) {
                            Ok(o) => self.observe(o),
                            Err(e) => self.undecodable(&e),
                        }
                    }
                    guard.clear_ready();
                }
                guard = dns_ring.readable_mut() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        match dns::event::decode(&item) {
                            Ok(o) => {
                                let now = self.clock.unix_seconds(o.ktime_ns());
                                self.dns.observe(o, &mut self.resolver, &self.metrics, now);
                            }
                            Err(e) => self.undecodable(&e),
                        }
                    }
                    guard.clear_ready();
                }
                guard = tcp_ring.readable_mut() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        match tcp::event::decode(&item) {
                            Ok(o) => self.observe_tcp(o),
                            Err(e) => self.undecodable(&e),
                        }
                    }
                    guard.clear_ready();
                }
                _ = tick.tick() => self.tick(),
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    fn undecodable(&self, e: &dyn std::fmt::Display) {
        self.metrics.userspace.undecodable_event.fetch_add(1, Ordering::Relaxed);
        log::warn!("dropping kernel event: {e}");
    }

    pub fn observe(&mut self, o: Observation) {
        let workload = self.resolver.workload_or_fallback(o.cgroup_id);
        let now = self.clock.unix_seconds(o.ktime_ns);
        let endpoint = o.endpoint.as_str();
        let kind = o.kind.as_str();
        log::debug!("{endpoint} {kind} role={:?} {:?} ({workload:?})", o.role, o.what);
        match o.what {
            What::Response { status, latency_ns, imdsv1 } => {
                let code = status.to_string();
                let labels = RequestLabels { workload: workload.clone(), endpoint, kind, code };
                self.metrics.requests.get_or_create(&labels).inc();
                let labels = DurationLabels { workload: workload.clone(), endpoint, kind };
                self.metrics.duration.get_or_create(&labels).observe(latency_ns as f64 / 1e9);
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
                    let key = StormLabels { workload, role: o.role };
                    // The storm series exists (at 0) from a key's first fetch, so "no storm" shows.
                    let _ = self.metrics.storm.get_or_create(&key);
                    let change = self.detector.on_fetch(&key, now);
                    self.apply(change);
                }
            }
            What::Expiration { packed } => {
                let Some(expires_at) = expiration::unix_seconds(packed) else {
                    self.metrics.userspace.bad_timestamp.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let expires_at = expires_at as f64;
                let labels =
                    CredentialLabels { workload: workload.clone(), endpoint, role: o.role.clone() };
                self.metrics.lifetime.get_or_create(&labels).observe(expires_at - now);
                let key = StormLabels { workload, role: o.role };
                let change = self.detector.on_expiration(&key, now, expires_at);
                self.apply(change);
            }
        }
    }

    fn observe_tcp(&mut self, o: TcpObservation) {
        match o {
            TcpObservation::Connect { cgroup_id, addr, port, result, latency_ns } => {
                let workload = self.resolver.workload_or_fallback(cgroup_id);
                let destination = self.classifier.classify(addr, port);
                let labels = TcpConnectLabels { workload: workload.clone(), destination, result };
                self.metrics.tcp.connects.get_or_create(&labels).inc();
                if result == "established" {
                    let labels = TcpDestinationLabels { workload, destination };
                    self.metrics
                        .tcp
                        .duration
                        .get_or_create(&labels)
                        .observe(latency_ns as f64 / 1e9);
                }
            }
            TcpObservation::Accept { cgroup_id, .. } => {
                let workload = self.resolver.workload_or_fallback(cgroup_id);
                self.metrics.tcp.accepts.get_or_create(&workload).inc();
            }
        }
    }

    fn apply(&self, change: Option<FlagChange<StormLabels>>) {
        let Some(FlagChange { key, storm }) = change else {
            return;
        };
        if storm {
            log::warn!(
                "credential refresh storm: pod={} container={} role={} fetches credentials far more often than their lifetime requires",
                key.workload.pod,
                key.workload.container,
                key.role
            );
        } else {
            log::info!("credential refresh storm over: pod={} role={}", key.workload.pod, key.role);
        }
        self.metrics.storm.get_or_create(&key).set(i64::from(storm));
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
        self.dns.tick(monotonic_ns(), &mut self.resolver, &self.metrics);
        self.metrics.cgroups_known.set(self.resolver.known_cgroups() as i64);
    }
}

fn register(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its fd, which stays open and unchanged until the AsyncFd (and
    // the RingBuf inside it) is dropped.
    unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)
}
