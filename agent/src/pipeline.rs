//! From kernel events to metrics: attribution, counting, the storm detector, DNS and TCP.
use std::{
    collections::HashSet,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use agent_common::RequestKind;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
};

use crate::{
    attribution::{
        labels::Workload, metrics::AttributionMetrics, pods::cache::PodEvent, resolver::Resolver,
    },
    clock::Clock,
    dns::{self, observer::DnsObserver},
    metadata::{
        detector::{Detector, FlagChange, Rule},
        event::{self, Observation, What},
        expiration,
        unanswered::Unanswered,
    },
    metrics::{
        CredentialLabels, DurationLabels, Metrics, RequestLabels, StormLabels, TcpConnectLabels,
        TcpDestinationLabels,
    },
    series::SeriesRegistry,
    tcp::{self, classify::Classifier, event::TcpObservation},
};

/// How often the metadata and TCP rings are read. Polling on a timer instead of waiting for each ring's wakeup
/// costs at most this much delay and saves a thread wakeup (and context switch) per event burst:
/// at ~1k metadata requests/s that was about a third of the agent's CPU. The rings hold far more
/// than arrives in this time (docs/benchmarks.md).
const RING_POLL: Duration = Duration::from_millis(25);
/// How often storm flags are re-evaluated (so they clear when fetching stops) and DNS timeouts
/// are reported.
const TICK: Duration = Duration::from_secs(1);
/// A (workload, role) with no fetch for this long is forgotten and its storm series removed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The `code` of a metadata request that got no response status line.
pub const NO_RESPONSE: &str = "no_response";

pub struct Pipeline {
    resolver: Resolver,
    detector: Detector<StormLabels>,
    dns: DnsObserver,
    classifier: Classifier,
    metrics: Metrics,
    clock: Clock,
    series: SeriesRegistry,
    attribution: AttributionMetrics,
    pod_events: Option<mpsc::Receiver<PodEvent>>,
    unanswered: Option<Unanswered>,
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
            clock: Clock::new(),
            series: SeriesRegistry::new(Duration::from_secs(120)),
            attribution: AttributionMetrics::default(),
            pod_events: None,
            unanswered: None,
        }
    }

    /// Counts the requests the kernel's flow table shows unanswered past the timeout.
    pub fn with_unanswered(mut self, unanswered: Unanswered) -> Self {
        self.unanswered = Some(unanswered);
        self
    }

    /// Series lifecycle and Kubernetes metadata: series of a workload no longer in use are
    /// removed after `grace`; `pod_events` (from crate::attribution::pods) relabel cgroups.
    pub fn with_attribution(
        mut self,
        grace: Duration,
        attribution: AttributionMetrics,
        pod_events: Option<mpsc::Receiver<PodEvent>>,
    ) -> Self {
        self.series = SeriesRegistry::new(grace);
        self.attribution = attribution;
        self.pod_events = pod_events;
        self
    }

    /// Reads the metadata, DNS and TCP rings until `shutdown` changes.
    pub async fn run(
        mut self,
        [mut ring, dns_ring, mut tcp_ring]: [RingBuf<MapData>; 3],
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        // DNS events (NXDOMAIN answers) are read as they come: the search-list analysis reads
        // the pod's resolv.conf through one of its processes, and a short-lived resolver may be
        // gone 25 ms later. They are few (the kernel counts everything else).
        let mut dns_ring = register(dns_ring)?;
        let mut poll = tokio::time::interval(RING_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(TICK);
        let mut sweep = tokio::time::interval(sweep_every(self.series.grace()));
        let mut pods = self.pod_events.take();
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    drain(&mut ring, event::decode, |r| match r {
                        Ok(o) => self.observe(o),
                        Err(e) => self.undecodable(&e),
                    });
                    drain(&mut tcp_ring, tcp::event::decode, |r| match r {
                        Ok(o) => self.observe_tcp(o),
                        Err(e) => self.undecodable(&e),
                    });
                }
                guard = dns_ring.readable_mut() => {
                    let mut guard = guard?;
                    drain(guard.get_inner_mut(), dns::event::decode, |r| match r {
                        Ok(a) => {
                            let now = self.clock.unix_seconds(a.ktime_ns);
                            self.dns.observe(a, &mut self.resolver, &self.metrics, &mut self.series, now);
                        }
                        Err(e) => self.undecodable(&e),
                    });
                    guard.clear_ready();
                }
                _ = tick.tick() => self.tick(),
                _ = sweep.tick() => self.sweep(),
                event = next_pod_event(&mut pods) => match event {
                    Some(e) => self.resolver.apply(e, Instant::now()),
                    None => {
                        log::warn!("pod watch ended: keeping the last known pods");
                        pods = None;
                    }
                },
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
                self.series.get_or_create(&self.metrics.requests, &labels).inc();
                let labels = DurationLabels { workload: workload.clone(), endpoint, kind };
                self.series
                    .get_or_create(&self.metrics.duration, &labels)
                    .observe(latency_ns as f64 / 1e9);
                if imdsv1 {
                    self.series.get_or_create(&self.metrics.imdsv1, &workload).inc();
                }
                if o.kind == RequestKind::Credentials && status == 200 {
                    let labels = CredentialLabels {
                        workload: workload.clone(),
                        endpoint,
                        role: o.role.clone(),
                    };
                    self.series.get_or_create(&self.metrics.fetches, &labels).inc();
                    let key = StormLabels { workload, role: o.role };
                    self.storm_key_seen(&key);
                    let change = self.detector.on_fetch(&key, now);
                    self.apply(change);
                }
            }
            What::NoResponse { imdsv1 } => {
                // Counted, but not timed: there is no response to time.
                let code = NO_RESPONSE.to_string();
                let labels = RequestLabels { workload: workload.clone(), endpoint, kind, code };
                self.series.get_or_create(&self.metrics.requests, &labels).inc();
                if imdsv1 {
                    self.series.get_or_create(&self.metrics.imdsv1, &workload).inc();
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
                self.series
                    .get_or_create(&self.metrics.lifetime, &labels)
                    .observe(expires_at - now);
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
                self.series.get_or_create(&self.metrics.tcp.connects, &labels).inc();
                if result == "established" {
                    let labels = TcpDestinationLabels { workload, destination };
                    self.series
                        .get_or_create(&self.metrics.tcp.duration, &labels)
                        .observe(latency_ns as f64 / 1e9);
                }
            }
            TcpObservation::Accept { cgroup_id, .. } => {
                let workload = self.resolver.workload_or_fallback(cgroup_id);
                self.series.get_or_create(&self.metrics.tcp.accepts, &workload).inc();
            }
        }
    }

    /// A storm series exists (at 0) from a key's first fetch, so "no storm" is visible.
    fn storm_key_seen(&mut self, key: &StormLabels) {
        let _ = self.series.get_or_create(&self.metrics.storm, key);
    }

    fn apply(&mut self, change: Option<FlagChange<StormLabels>>) {
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
            self.series.get_or_create(&self.metrics.storm, &key).set(i64::from(storm));
        }
    }

    fn tick(&mut self) {
        let now = self.clock.unix_now();
        if let Some(unanswered) = self.unanswered.as_mut() {
            for o in unanswered.sweep(self.clock.monotonic_ns()) {
                self.observe(o);
            }
        }
        let (changes, forgotten) = self.detector.tick(now, FORGET_AFTER);
        for c in changes {
            self.apply(Some(c));
        }
        for key in forgotten {
            self.series.remove(&self.metrics.storm, &key);
        }
        self.dns.tick(
            self.clock.monotonic_ns(),
            &mut self.resolver,
            &self.metrics,
            &mut self.series,
        );
        self.metrics.cgroups_known.set(self.resolver.known_cgroups() as i64);
    }
}

/// Decodes every record waiting in `ring` and hands each result to `each`.
fn drain<T, E>(
    ring: &mut RingBuf<MapData>,
    decode: fn(&[u8]) -> Result<T, E>,
    mut each: impl FnMut(Result<T, E>),
) {
    while let Some(item) = ring.next() {
        each(decode(&item));
    }
}

fn register(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its fd, which stays open and unchanged until the AsyncFd (and
    // the RingBuf inside it) is dropped.
    unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)
}

impl Pipeline {
    /// Series lifecycle: forget vanished cgroups and expired pods, retire the label sets nothing
    /// holds any more, and remove those whose grace period is over.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.resolver.sweep(now);
        let resolver = &self.resolver;
        self.dns.forget(|cgroup_id| !resolver.holds(cgroup_id));
        let held = self.resolver.held();
        self.series.retire_unheld(|w| held.contains(w), now);
        let removed: HashSet<Workload> = self.series.expire(now).into_iter().collect();
        if !removed.is_empty() {
            log::debug!("removed the series of {} workloads", removed.len());
            self.detector.forget(|k| removed.contains(&k.workload));
            crate::memory::release_freed_memory();
        }
        self.attribution.cgroups_unresolved.set(self.resolver.unresolved() as i64);
        self.attribution.pods.set(self.resolver.pods_known() as i64);
    }
}

/// Often enough that series go within about a quarter of the grace period after it ends; never
/// more than every 5 s (a sweep stats each cgroup that produced events).
fn sweep_every(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(250), TICK)
}

async fn next_pod_event(events: &mut Option<mpsc::Receiver<PodEvent>>) -> Option<PodEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
