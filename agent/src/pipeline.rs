//! Reads the features' ring buffers and hands each record to its feature's observer, with one
//! shared context; runs the observers' ticks and the series lifecycle, and applies what the
//! Kubernetes watch says about pods.
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    io::unix::{AsyncFd, AsyncFdReadyMutGuard},
    sync::{mpsc, watch},
};

use crate::{
    attribution::{labels::Workload, metrics::AttributionMetrics, pods::cache::PodEvent},
    http::Ready,
    observer::{Context, Delivery, Feature, Observer},
};

/// How often polled rings are read. Polling on a timer instead of waiting for each ring's
/// wakeup costs at most this much delay and saves a thread wakeup (and context switch) per event
/// burst, a large share of the agent's CPU under a steady stream of metadata requests. The rings
/// hold far more than arrives in this time (docs/benchmarks.md).
const RING_POLL: Duration = Duration::from_millis(25);
/// How often the observers' ticks run.
const TICK: Duration = Duration::from_secs(1);

/// The gauges the pipeline keeps current.
#[derive(Clone, Debug, Default)]
pub struct PipelineGauges {
    /// `credwatch_cgroups_known`.
    pub cgroups_known: Gauge,
    pub attribution: AttributionMetrics,
}

pub struct Pipeline {
    cx: Context,
    features: Vec<Feature>,
    gauges: PipelineGauges,
    pod_events: Option<mpsc::Receiver<PodEvent>>,
    /// Set once the first pod list has been applied (Kubernetes attribution on).
    ready_on_sync: Option<Ready>,
}

/// A ring read on the poll timer, and the observer of its records.
struct Polled {
    ring: RingBuf<MapData>,
    observer: Box<dyn Observer>,
}

/// A ring read when the kernel signals it.
struct Woken {
    ring: AsyncFd<RingBuf<MapData>>,
    observer: Box<dyn Observer>,
}

impl Pipeline {
    /// `pod_events` (from crate::attribution::pods) relabel cgroups; `ready_on_sync` is set
    /// once the first full pod list among them has been applied.
    pub fn new(
        cx: Context,
        features: Vec<Feature>,
        gauges: PipelineGauges,
        pod_events: Option<mpsc::Receiver<PodEvent>>,
        ready_on_sync: Option<Ready>,
    ) -> Self {
        Self { cx, features, gauges, pod_events, ready_on_sync }
    }

    /// Reads every feature's ring until `shutdown` changes.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
        let Self { mut cx, features, gauges, mut pod_events, mut ready_on_sync } = self;
        let mut polled = Vec::new();
        let mut woken = Vec::new();
        let mut ringless = Vec::new();
        for Feature { name, ring, observer } in features {
            let Some((ring, delivery)) = ring else {
                log::debug!("the {name} feature has no ring: ticks only");
                ringless.push(observer);
                continue;
            };
            log::debug!("reading the {name} ring ({delivery:?})");
            match delivery {
                Delivery::Polled => polled.push(Polled { ring, observer }),
                Delivery::Woken => woken.push(Woken { ring: register(ring)?, observer }),
            }
        }
        let mut poll = tokio::time::interval(RING_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(TICK);
        let mut sweep = tokio::time::interval(sweep_every(cx.series.grace()));
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    for p in &mut polled {
                        drain(&mut p.ring, &mut *p.observer, &mut cx);
                    }
                }
                ready = readable(&mut woken) => {
                    let (mut guard, observer) = ready?;
                    drain(guard.get_inner_mut(), observer, &mut cx);
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    for o in observers(&mut polled, &mut woken, &mut ringless) {
                        o.tick(&mut cx);
                    }
                    gauges.cgroups_known.set(cx.resolver.known_cgroups() as i64);
                }
                _ = sweep.tick() => {
                    let removed = sweep_series(&mut cx);
                    for o in observers(&mut polled, &mut woken, &mut ringless) {
                        o.sweep(&cx, &removed);
                    }
                    if !removed.is_empty() {
                        crate::memory::release_freed_memory();
                    }
                    gauges.attribution.cgroups_unresolved.set(cx.resolver.unresolved() as i64);
                    gauges.attribution.pods.set(cx.resolver.pods_known() as i64);
                }
                event = next_pod_event(&mut pod_events) => match event {
                    Some(e) => {
                        let synced = matches!(e, PodEvent::Synced { .. });
                        cx.resolver.apply(e, Instant::now());
                        if let Some(ready) = ready_on_sync.take_if(|_| synced) {
                            ready.store(true, std::sync::atomic::Ordering::Release);
                            log::info!("ready: the first pod list has loaded");
                        }
                    }
                    None => {
                        log::warn!("pod watch ended: keeping the last known pods");
                        pod_events = None;
                    }
                },
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

fn observers<'a>(
    polled: &'a mut [Polled],
    woken: &'a mut [Woken],
    ringless: &'a mut [Box<dyn Observer>],
) -> impl Iterator<Item = &'a mut Box<dyn Observer>> {
    polled
        .iter_mut()
        .map(|p| &mut p.observer)
        .chain(woken.iter_mut().map(|w| &mut w.observer))
        .chain(ringless.iter_mut())
}

/// Hands every record waiting in `ring` to `observer`; counts those it cannot decode.
fn drain(ring: &mut RingBuf<MapData>, observer: &mut dyn Observer, cx: &mut Context) {
    while let Some(record) = ring.next() {
        if let Err(e) = observer.on_record(&record, cx) {
            cx.undecodable(&e);
        }
    }
}

/// The first of the woken rings to have data, with its observer; never, if there are none.
async fn readable(
    woken: &mut [Woken],
) -> std::io::Result<(AsyncFdReadyMutGuard<'_, RingBuf<MapData>>, &mut dyn Observer)> {
    if woken.is_empty() {
        return std::future::pending().await;
    }
    let waits = woken.iter_mut().map(|w| {
        Box::pin(async move {
            let guard = w.ring.readable_mut().await;
            (guard, &mut *w.observer)
        })
    });
    let ((guard, observer), _, _) = futures_util::future::select_all(waits).await;
    Ok((guard?, observer))
}

fn register(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its fd, which stays open and unchanged until the AsyncFd (and
    // the RingBuf inside it) is dropped.
    unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)
}

/// Series lifecycle: forget vanished cgroups and expired pods, retire the label sets nothing
/// holds any more, and remove those whose grace period is over. Returns the workloads removed.
fn sweep_series(cx: &mut Context) -> HashSet<Workload> {
    let now = Instant::now();
    cx.resolver.sweep(now);
    let held = cx.resolver.held();
    cx.series.retire_unheld(|w| held.contains(w), now);
    let removed: HashSet<Workload> = cx.series.expire(now).into_iter().collect();
    if !removed.is_empty() {
        log::debug!("removed the series of {} workloads", removed.len());
    }
    removed
}

/// Often enough that series go within about a quarter of the grace period after it ends, and at
/// least once a second; at most four times a second (a sweep stats each cgroup that produced
/// events).
fn sweep_every(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(250), TICK)
}

async fn next_pod_event(events: &mut Option<mpsc::Receiver<PodEvent>>) -> Option<PodEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
