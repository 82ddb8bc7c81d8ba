//! TCP counts → per-workload series: connects by destination class and result, connect latency,
//! accepts, from the kernel's tables (read once a second); the kernel's only events say which
//! cgroups to resolve at once.
use std::collections::HashSet;

use agent_common::tcp::{CLASS_ACCEPTED, TcpStats, TcpStatsKey};

use super::{
    classify::class_label,
    metrics::{TcpConnectLabels, TcpDestinationLabels, TcpMetrics},
    record::{self, TcpObservation},
    tables::TcpTables,
};
use crate::{
    attribution::{labels::Workload, resolver::Resolver},
    observer::{Context, Observer},
    record::RecordError,
    series::SeriesRegistry,
};

#[derive(Debug)]
pub struct TcpObserver {
    metrics: TcpMetrics,
    tables: TcpTables,
}

impl TcpObserver {
    pub fn new(tables: TcpTables, metrics: TcpMetrics) -> Self {
        Self { metrics, tables }
    }
}

impl Observer for TcpObserver {
    /// A key the kernel counted for the first time on a CPU: its cgroup is resolved now, while it
    /// exists (a short-lived pod's may be gone by the next read of the counts).
    fn on_record(&mut self, bytes: &[u8], cx: &mut Context) -> Result<(), RecordError> {
        match record::decode(bytes)? {
            TcpObservation::NewKey { cgroup_id, .. } => {
                let _ = cx.resolver.resolve(cgroup_id);
            }
        }
        Ok(())
    }

    /// The kernel's counts since the last tick.
    fn tick(&mut self, cx: &mut Context) {
        for (key, inc) in self.tables.read_increments() {
            record_counts(&key, &inc, &mut cx.resolver, &self.metrics, &mut cx.series);
        }
    }

    /// Removes the kernel's entries of cgroups gone, once their counts were read (see
    /// `CountTables::prune`).
    fn sweep(&mut self, cx: &Context, _removed: &HashSet<Workload>) {
        let removed = self.tables.prune(|cgroup_id| !cx.resolver.holds(cgroup_id));
        if removed > 0 {
            log::debug!("removed {removed} TCP statistics entries of vanished cgroups");
        }
    }
}

/// Adds one key's increments to its workload's series.
pub fn record_counts(
    key: &TcpStatsKey,
    inc: &TcpStats,
    resolver: &mut Resolver,
    m: &TcpMetrics,
    series: &mut SeriesRegistry,
) {
    let workload = resolver.workload_or_fallback(key.cgroup_id);
    if key.class == CLASS_ACCEPTED {
        if inc.accepts > 0 {
            series.get_or_create(&m.accepts, &workload).inc_by(inc.accepts);
        }
        return;
    }
    let destination = class_label(key.class);
    for (result, &n) in inc.connects.iter().enumerate() {
        if n > 0 {
            let result = record::result_label(result as u8);
            let labels = TcpConnectLabels { workload: workload.clone(), destination, result };
            series.get_or_create(&m.connects, &labels).inc_by(n);
        }
    }
    if inc.latency.iter().any(|&n| n > 0) {
        let labels = TcpDestinationLabels { workload, destination };
        series.get_or_create(&m.duration, &labels).add(&inc.latency, inc.latency_sum_ns);
    }
}
