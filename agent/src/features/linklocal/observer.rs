//! Link-local counts → series. Once a second: the kernel's per-(cgroup, service) counts become
//! per-workload increments, and every completed second one observation of the per-second
//! histograms (`seconds`). No ring: the kernel sends nothing per packet.
use std::collections::HashSet;

use agent_common::linklocal::Service;

use super::{
    metrics::{LinkLocalLabels, LinkLocalMetrics},
    seconds::{Second, Seconds},
    tables::LinkLocalTables,
};
use crate::{
    attribution::labels::Workload,
    observer::{Context, Observer},
    record::RecordError,
};

#[derive(Debug)]
pub struct LinkLocalObserver {
    tables: LinkLocalTables,
    seconds: Seconds,
    metrics: LinkLocalMetrics,
}

impl LinkLocalObserver {
    /// `now_ns`: monotonic now, before the programs are attached (the first second observed).
    pub fn new(tables: LinkLocalTables, metrics: LinkLocalMetrics, now_ns: u64) -> Self {
        Self { tables, seconds: Seconds::new(now_ns), metrics }
    }
}

impl Observer for LinkLocalObserver {
    /// The feature has no ring: nothing arrives here.
    fn on_record(&mut self, _record: &[u8], _cx: &mut Context) -> Result<(), RecordError> {
        Ok(())
    }

    fn tick(&mut self, cx: &mut Context) {
        let (increments, entries) = self.tables.read_increments();
        self.metrics.table_entries.set(entries as i64);
        for (key, inc) in increments {
            let Some(service) = Service::from_u8(key.service) else { continue };
            let workload = cx.resolver.workload_or_fallback(key.cgroup_id);
            let labels = LinkLocalLabels { workload, linklocal_service: service.as_str() };
            cx.series.get_or_create(&self.metrics.packets, &labels).inc_by(inc);
        }
        let slots = match self.tables.read_slots() {
            Ok(slots) => slots,
            Err(e) => {
                // Observed at the next tick instead (up to SECOND_SLOTS seconds late).
                log::warn!("reading the link-local seconds: {e}");
                return;
            }
        };
        for second in self.seconds.completed(cx.clock.monotonic_ns(), &slots) {
            log::trace!("link-local {second:?}");
            match second {
                Second::Counted { packets, .. } => self.metrics.observe_second(&packets),
                Second::Lost { second } => {
                    log::warn!(
                        "link-local packets of monotonic second {second} were overwritten before they were read"
                    );
                    self.metrics.seconds_lost.inc();
                }
            }
        }
    }

    /// The kernel entries of cgroups the resolver no longer holds (vanished) are removed.
    fn sweep(&mut self, cx: &Context, _removed: &HashSet<Workload>) {
        self.tables.forget(|cgroup_id| !cx.resolver.holds(cgroup_id));
    }
}
