//! Series lifecycle. prometheus-client's `Family` can remove a label set but cannot list them,
//! so every per-workload family is a [`Tracked`] one, and its series are created through
//! [`SeriesRegistry::get_or_create`], which records each under its [`Workload`]. When a
//! workload's labels are no longer in use (pod deleted, cgroup gone, cgroup relabelled) it is
//! *retired*; after the grace period, so that scrapes see the final increments, all of its series
//! are removed together.
//!
//! A [`Tracked`] family is registered once, with its name and help, where it is declared; the
//! handle carries an identity issued at registration, and the registry keeps each workload's
//! label sets per family identity. The registry knows no family and no label type: a label type
//! says which workload it belongs to by implementing [`WorkloadLabels`].
use std::{
    any::Any,
    hash::Hash,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use foldhash::{HashMap, HashMapExt as _, HashSet};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric},
    metrics::{
        TypedMetric,
        family::{Family, MetricConstructor},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::attribution::labels::Workload;

/// A label set that belongs to one workload.
pub trait WorkloadLabels {
    fn workload(&self) -> &Workload;
}

impl WorkloadLabels for Workload {
    fn workload(&self) -> &Workload {
        self
    }
}

/// Implements [`WorkloadLabels`] for label sets with a `workload: Workload` field.
macro_rules! workload_labels {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::series::WorkloadLabels for $t {
            fn workload(&self) -> &$crate::attribution::labels::Workload {
                &self.workload
            }
        }
    )*};
}
pub(crate) use workload_labels;

/// What every label type of a tracked family must be.
pub trait SeriesLabels:
    WorkloadLabels + EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static
{
}
impl<L> SeriesLabels for L where
    L: WorkloadLabels
        + EncodeLabelSet
        + Clone
        + Hash
        + Eq
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Identity of one registered family; issued once per [`Tracked::register`], process-wide, so
/// two families never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FamilyId(u32);

static NEXT_FAMILY: AtomicU32 = AtomicU32::new(0);

/// A per-workload metric family, registered, whose series go with their workload.
#[derive(Debug)]
pub struct Tracked<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    id: FamilyId,
}

impl<L, M, C: Clone> Clone for Tracked<L, M, C> {
    fn clone(&self) -> Self {
        Self { family: self.family.clone(), id: self.id }
    }
}

impl<L, M, C> Tracked<L, M, C>
where
    L: SeriesLabels,
    M: EncodeMetric + TypedMetric + std::fmt::Debug + Send + Sync + 'static,
    C: MetricConstructor<M> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    /// Registers `family` under `name` (without `_total`, as prometheus-client wants it).
    pub fn register(
        registry: &mut Registry,
        name: &str,
        help: &str,
        family: Family<L, M, C>,
    ) -> Self {
        registry.register(name, help, family.clone());
        Self { family, id: FamilyId(NEXT_FAMILY.fetch_add(1, Ordering::Relaxed)) }
    }
}

/// A tracked histogram family, its buckets given by a constructor.
pub type TrackedHistogram<L> = Tracked<L, Histogram, fn() -> Histogram>;

/// The label sets one family holds for one workload.
struct FamilySeries<L, M, C> {
    family: Family<L, M, C>,
    labels: HashSet<L>,
}

/// Type-erased [`FamilySeries`], so one workload can hold series of every family.
trait Erased: Send {
    /// Removes every recorded series from the family; returns how many there were.
    fn remove_all(&self) -> usize;
    fn len(&self) -> usize;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<L, M, C> Erased for FamilySeries<L, M, C>
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
    /// At most one entry per family (a workload has series in about ten): a scan is cheaper
    /// than hashing.
    families: Vec<(FamilyId, Box<dyn Erased>)>,
    retire_at: Option<Instant>,
}

impl Record {
    /// This record's label sets of `t`'s family. The entry under an id was created by the
    /// handle that carries that id, whose types are fixed, so the downcast always succeeds.
    fn series_of<L, M, C>(&mut self, t: &Tracked<L, M, C>) -> Option<&mut FamilySeries<L, M, C>>
    where
        L: 'static,
        M: 'static,
        C: 'static,
    {
        let (_, erased) = self.families.iter_mut().find(|(id, _)| *id == t.id)?;
        erased.as_any_mut().downcast_mut::<FamilySeries<L, M, C>>()
    }
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

    /// The series of `labels` in `t`'s family (created if new), recorded under its workload.
    pub fn get_or_create<L, M, C>(&mut self, t: &Tracked<L, M, C>, labels: &L) -> M
    where
        L: SeriesLabels,
        M: Clone + Send + Sync + 'static,
        C: MetricConstructor<M> + Clone + Send + Sync + 'static,
    {
        let record = match self.records.get_mut(labels.workload()) {
            Some(r) => r,
            None => self.records.entry(labels.workload().clone()).or_default(),
        };
        match record.series_of(t) {
            Some(series) => {
                if !series.labels.contains(labels) {
                    series.labels.insert(labels.clone());
                }
            }
            None => {
                let mut series =
                    FamilySeries { family: t.family.clone(), labels: HashSet::default() };
                series.labels.insert(labels.clone());
                record.families.push((t.id, Box::new(series)));
            }
        }
        t.family.get_or_create_owned(labels)
    }

    /// Removes one series now (e.g. a storm flag the detector forgot).
    pub fn remove<L, M, C>(&mut self, t: &Tracked<L, M, C>, labels: &L)
    where
        L: SeriesLabels,
        M: Send + Sync + 'static,
        C: MetricConstructor<M> + Send + Sync + 'static,
    {
        t.family.remove(labels);
        if let Some(series) =
            self.records.get_mut(labels.workload()).and_then(|record| record.series_of(t))
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
            let n: usize = record.families.iter().map(|(_, t)| t.remove_all()).sum();
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
        self.records.values().flat_map(|r| &r.families).map(|(_, t)| t.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        encoding::text::encode,
        metrics::{counter::Counter, histogram::Histogram},
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

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct CodeLabels {
        #[prometheus(flatten)]
        workload: Workload,
        code: String,
    }
    workload_labels!(CodeLabels);

    struct Fixture {
        requests: Tracked<CodeLabels, Counter>,
        duration: Tracked<Workload, Histogram, fn() -> Histogram>,
        imdsv1: Tracked<Workload, Counter>,
        registry: Registry,
    }

    fn fixture() -> Fixture {
        fn histogram() -> Histogram {
            Histogram::new([0.1, 1.0])
        }
        let mut registry = Registry::default();
        Fixture {
            requests: Tracked::register(&mut registry, "r", "r", Family::default()),
            duration: Tracked::register(
                &mut registry,
                "d",
                "d",
                Family::new_with_constructor(histogram),
            ),
            imdsv1: Tracked::register(&mut registry, "i", "i", Family::default()),
            registry,
        }
    }

    fn exposition(r: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, r).unwrap();
        s
    }

    fn touch(series: &mut SeriesRegistry, f: &Fixture, w: &Workload, code: &str) {
        let labels = CodeLabels { workload: w.clone(), code: code.into() };
        series.get_or_create(&f.requests, &labels).inc();
        series.get_or_create(&f.duration, w).observe(0.5);
        series.get_or_create(&f.imdsv1, w).inc();
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
        series.remove(&f.imdsv1, &a);
        assert_eq!(series.series(), 2);
        assert!(!exposition(&f.registry).contains("i_total{"));
    }

    /// Two families with the same label type keep their series apart (a string key shared by
    /// mistake used to mix them up).
    #[test]
    fn families_of_one_label_type_are_told_apart() {
        let f = fixture();
        let other: Tracked<Workload, Counter> = {
            let mut r = Registry::default();
            Tracked::register(&mut r, "o", "o", Family::default())
        };
        let mut series = SeriesRegistry::new(Duration::from_secs(1));
        let a = pod("a");
        series.get_or_create(&f.imdsv1, &a).inc();
        series.get_or_create(&other, &a).inc();
        assert_eq!(series.series(), 2);
        series.remove(&other, &a);
        assert_eq!(series.series(), 1);
        assert!(exposition(&f.registry).contains("i_total{"));
    }
}
