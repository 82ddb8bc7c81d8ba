//! Series lifecycle. prometheus-client's `Family` can remove a label set but cannot list them,
//! so every per-workload series is created through [`SeriesRegistry::get_or_create`], which
//! records it under its [`Workload`]. When a workload's labels are no longer in use (pod deleted,
//! cgroup gone, cgroup relabelled) it is *retired*; after the grace period, so that scrapes see
//! the final increments, all of its series are removed together.
use std::{
    any::Any,
    hash::Hash,
    time::{Duration, Instant},
};

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::family::{Family, MetricConstructor},
};

use crate::{
    attribution::labels::Workload,
    metrics::{
        CredentialLabels, DnsLabels, DnsNameLabels, DnsQtypeLabels, DurationLabels, RequestLabels,
        StormLabels, TcpConnectLabels, TcpDestinationLabels,
    },
};

/// A label set that belongs to one workload.
pub trait WorkloadLabels {
    fn workload(&self) -> &Workload;
}

impl WorkloadLabels for Workload {
    fn workload(&self) -> &Workload {
        self
    }
}

macro_rules! workload_labels {
    ($($t:ty),* $(,)?) => {$(
        impl WorkloadLabels for $t {
            fn workload(&self) -> &Workload {
                &self.workload
            }
        }
    )*};
}
workload_labels!(
    RequestLabels,
    DurationLabels,
    CredentialLabels,
    StormLabels,
    TcpConnectLabels,
    TcpDestinationLabels,
    DnsLabels,
    DnsQtypeLabels,
    DnsNameLabels,
);

/// The label sets one family holds for one workload.
struct FamilySeries<L, M, C> {
    family: Family<L, M, C>,
    labels: HashSet<L>,
}

/// Type-erased [`FamilySeries`], so one workload can hold series of every family.
trait Tracked: Send {
    /// Removes every recorded series from the family; returns how many there were.
    fn remove_all(&self) -> usize;
    fn len(&self) -> usize;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<L, M, C> Tracked for FamilySeries<L, M, C>
where
    L: Clone + Hash + Eq + Send + Sync + 'static,
    M: Send + Sync + 'static,
    C: MetricConstructor<M> + Send + Sync + 'static,
{
    fn remove_all(&self) -> usize {
        for labels in &self.labels {
            self.family.remove(labels);
        }
        self.labels.len()
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[derive(Default)]
struct Record {
    /// Keyed by the family's name as given to `get_or_create`.
    families: HashMap<&'static str, Box<dyn Tracked>>,
    retire_at: Option<Instant>,
}

pub struct SeriesRegistry {
    records: HashMap<Workload, Record>,
    grace: Duration,
}

impl std::fmt::Debug for SeriesRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesRegistry")
            .field("workloads", &self.records.len())
            .field("series", &self.series())
            .field("grace", &self.grace)
            .finish()
    }
}

impl SeriesRegistry {
    pub fn new(grace: Duration) -> Self {
        Self { records: HashMap::new(), grace }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// `family.get_or_create_owned(labels)`, recording the series under its workload. `name`
    /// identifies the family (one name per family, e.g. its metric name).
    pub fn get_or_create<L, M, C>(
        &mut self,
        name: &'static str,
        family: &Family<L, M, C>,
        labels: &L,
    ) -> M
    where
        L: WorkloadLabels + EncodeLabelSet + Clone + Hash + Eq + Send + Sync + 'static,
        M: Clone + Send + Sync + 'static,
        C: MetricConstructor<M> + Clone + Send + Sync + 'static,
    {
        let record = match self.records.get_mut(labels.workload()) {
            Some(r) => r,
            None => self.records.entry(labels.workload().clone()).or_default(),
        };
        let tracked = record.families.entry(name).or_insert_with(|| {
            Box::new(FamilySeries { family: family.clone(), labels: HashSet::<L>::new() })
        });
        match tracked.as_any_mut().downcast_mut::<FamilySeries<L, M, C>>() {
            Some(series) => {
                if !series.labels.contains(labels) {
                    series.labels.insert(labels.clone());
                }
            }
            // A programming error (one name used for two families); the series still counts,
            // it just would not be removed with its workload.
            None => log::error!("series family {name} registered with two label types"),
        }
        family.get_or_create_owned(labels)
    }

    /// Removes one series now (e.g. a storm flag the detector forgot).
    pub fn remove<L, M, C>(&mut self, name: &'static str, family: &Family<L, M, C>, labels: &L)
    where
        L: WorkloadLabels + EncodeLabelSet + Clone + Hash + Eq + Send + Sync + 'static,
        M: Send + Sync + 'static,
        C: MetricConstructor<M> + Send + Sync + 'static,
    {
        family.remove(labels);
        let Some(record) = self.records.get_mut(labels.workload()) else {
            return;
        };
        if let Some(series) = record
            .families
            .get_mut(name)
            .and_then(|t| t.as_any_mut().downcast_mut::<FamilySeries<L, M, C>>())
        {
            series.labels.remove(labels);
        }
    }

    /// Retires every workload `held` does not claim (removal after the grace period) and
    /// un-retires those it claims again.
    pub fn retire_unheld(&mut self, held: impl Fn(&Workload) -> bool, now: Instant) {
        let deadline = now + self.grace;
        for (workload, record) in &mut self.records {
            if held(workload) {
                if record.retire_at.take().is_some() {
                    log::debug!("series of {workload:?} in use again");
                }
            } else if record.retire_at.is_none() {
                log::debug!("series of {workload:?} retired, removal in {:?}", self.grace);
                record.retire_at = Some(deadline);
            }
        }
    }

    /// Removes the series of workloads retired at least the grace period ago; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Workload> {
        let mut removed = Vec::new();
        self.records.retain(|workload, record| {
            if record.retire_at.is_none_or(|at| at > now) {
                return true;
            }
            let n: usize = record.families.values().map(|t| t.remove_all()).sum();
            log::debug!("removed {n} series of {workload:?}");
            removed.push(workload.clone());
            false
        });
        if self.records.capacity() > 4 * self.records.len().max(64) {
            self.records.shrink_to_fit();
        }
        removed
    }

    /// Workloads with series.
    #[cfg(test)]
    pub fn workloads(&self) -> usize {
        self.records.len()
    }

    /// Series recorded, over every family.
    pub fn series(&self) -> usize {
        self.records.values().flat_map(|r| r.families.values()).map(|t| t.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        encoding::text::encode,
        metrics::{counter::Counter, histogram::Histogram},
        registry::Registry,
    };

    use super::*;

    fn pod(name: &str) -> Workload {
        Workload {
            namespace: "ns".into(),
            pod: name.into(),
            container: "app".into(),
            workload: "Deployment/x".into(),
        }
    }

    struct Fixture {
        requests: Family<RequestLabels, Counter>,
        duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
        imdsv1: Family<Workload, Counter>,
        registry: Registry,
    }

    fn fixture() -> Fixture {
        fn histogram() -> Histogram {
            Histogram::new([0.1, 1.0])
        }
        let f = Fixture {
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram),
            imdsv1: Family::default(),
            registry: Registry::default(),
        };
        let mut f = f;
        f.registry.register("r", "r", f.requests.clone());
        f.registry.register("d", "d", f.duration.clone());
        f.registry.register("i", "i", f.imdsv1.clone());
        f
    }

    fn exposition(r: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, r).unwrap();
        s
    }

    fn touch(series: &mut SeriesRegistry, f: &Fixture, w: &Workload, code: &str) {
        let labels = RequestLabels {
            workload: w.clone(),
            endpoint: "imds",
            kind: "credentials",
            code: code.into(),
        };
        series.get_or_create("r", &f.requests, &labels).inc();
        let labels = DurationLabels { workload: w.clone(), endpoint: "imds", kind: "credentials" };
        series.get_or_create("d", &f.duration, &labels).observe(0.5);
        series.get_or_create("i", &f.imdsv1, w).inc();
    }

    #[test]
    fn a_retired_workload_loses_every_series_after_the_grace_period() {
        let f = fixture();
        let grace = Duration::from_secs(30);
        let mut series = SeriesRegistry::new(grace);
        let (a, b) = (pod("a"), pod("b"));
        for _ in 0..3 {
            touch(&mut series, &f, &a, "200");
        }
        touch(&mut series, &f, &a, "404");
        touch(&mut series, &f, &b, "200");
        assert_eq!((series.workloads(), series.series()), (2, 7));

        let t0 = Instant::now();
        series.retire_unheld(|w| w == &b, t0);
        assert!(series.expire(t0).is_empty(), "not before the grace period");
        assert!(exposition(&f.registry).contains("pod=\"a\""));
        assert_eq!(series.expire(t0 + grace), vec![a.clone()]);
        let text = exposition(&f.registry);
        assert!(!text.contains("pod=\"a\""), "{text}");
        assert!(text.contains("pod=\"b\""), "{text}");
        assert_eq!((series.workloads(), series.series()), (1, 3));
    }

    #[test]
    fn a_workload_held_again_is_not_removed() {
        let f = fixture();
        let grace = Duration::from_secs(30);
        let mut series = SeriesRegistry::new(grace);
        let a = pod("a");
        touch(&mut series, &f, &a, "200");
        let t0 = Instant::now();
        series.retire_unheld(|_| false, t0);
        series.retire_unheld(|_| true, t0 + grace / 2);
        assert!(series.expire(t0 + grace * 2).is_empty());
        assert!(exposition(&f.registry).contains("pod=\"a\""));
    }

    #[test]
    fn single_series_can_be_removed() {
        let f = fixture();
        let mut series = SeriesRegistry::new(Duration::from_secs(1));
        let a = pod("a");
        touch(&mut series, &f, &a, "200");
        series.remove("i", &f.imdsv1, &a);
        assert_eq!(series.series(), 2);
        assert!(!exposition(&f.registry).contains("i_total{"));
    }
}
