//! The shape every feature has, as the pipeline runs it: a ring buffer its kernel programs write
//! records into, and an [`Observer`] that turns each record into series. All observers share one
//! [`Context`]: who a cgroup is, the series registry, the clock.
use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
};

use aya::maps::{MapData, RingBuf};
use prometheus_client::registry::Registry;

use crate::{
    attribution::{labels::Workload, resolver::Resolver},
    cli::RunArgs,
    clock::Clock,
    endpoints::EndpointSpec,
    kernel::Attachment,
    metrics::UserspaceCounters,
    record::RecordError,
    series::SeriesRegistry,
};

/// What every observer works with.
#[derive(Debug)]
pub struct Context {
    pub resolver: Resolver,
    pub series: SeriesRegistry,
    pub clock: Clock,
    /// Rejects found in userspace, exported with the kernel's.
    pub rejects: Arc<UserspaceCounters>,
}

impl Context {
    /// A record the observer could not decode: counted, logged, dropped.
    pub fn undecodable(&self, e: &RecordError) {
        self.rejects.undecodable_event.fetch_add(1, Ordering::Relaxed);
        log::warn!("dropping kernel event: {e}");
    }
}

/// One feature's userspace half.
pub trait Observer: Send {
    /// One record from the feature's ring: decode it and update the series it justifies.
    fn on_record(&mut self, record: &[u8], cx: &mut Context) -> Result<(), RecordError>;

    /// Once a second: what is due by time rather than by record (flags that clear, kernel tables
    /// read as deltas, timeouts).
    fn tick(&mut self, _cx: &mut Context) {}

    /// After the resolver forgot vanished cgroups and the series of the `removed` workloads were
    /// removed: drop what the observer keeps for them.
    fn sweep(&mut self, _cx: &Context, _removed: &HashSet<Workload>) {}
}

/// When the pipeline reads a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// On the pipeline's poll timer: a burst costs one wakeup.
    Polled,
    /// As soon as the kernel signals data: for records whose context may be gone a poll later.
    Woken,
}

/// What a feature is built from: the configuration, the kernel object to take its maps from
/// (rings, tables), and the registry to register its families in.
pub struct Setup<'a> {
    pub args: &'a RunArgs,
    /// The metadata endpoints watched (defaults and flags together).
    pub endpoints: &'a [EndpointSpec],
    pub kernel: &'a mut Attachment,
    pub registry: &'a mut Registry,
}

/// A feature as the pipeline runs it.
pub struct Feature {
    pub name: &'static str,
    /// Its ring and when it is read; None for a feature that only counts in kernel tables, read
    /// on its `tick`.
    pub ring: Option<(RingBuf<MapData>, Delivery)>,
    pub observer: Box<dyn Observer>,
}

impl std::fmt::Debug for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feature")
            .field("name", &self.name)
            .field("delivery", &self.ring.as_ref().map(|(_, delivery)| delivery))
            .finish()
    }
}
