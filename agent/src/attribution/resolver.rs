//! cgroup id → labels. [`Resolver`] gives Kubernetes metadata for the pod UID and container id
//! when the API watch (crate::attribution::pods) has it, the path-derived labels
//! (crate::attribution::identify) otherwise, and relabels cgroups when metadata arrives or goes.
//! It also says which label sets are still alive, which is what the series lifecycle
//! (crate::series) removes the others by.
use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::attribution::{
    cgroup::CgroupIndex,
    identify::{Identity, identify},
    labels::Workload,
    pods::cache::{Attribution, PodCache, PodEvent},
};

/// One cgroup that has produced events.
#[derive(Debug)]
struct Entry {
    /// The cgroup whose directory names this one: itself, or its parent when it was removed
    /// before it could be indexed (see [`Parents`]).
    dir_id: u64,
    /// Relative to the cgroup v2 mount, as indexed (of `dir_id`).
    path: String,
    identity: Identity,
    labels: Arc<Workload>,
    attribution: Attribution,
}

/// The parent of a cgroup, as the kernel recorded it while the cgroup existed (crate::kernel's
/// `CW_CGROUP_PARENTS`, filled for DNS and metadata clients). A container that ran briefly
/// (a Job that resolved a name and exited) may be gone before its first event is read; its
/// parent, the pod's cgroup, still names the pod, and its other containers hold the resolv.conf.
pub struct Parents(Box<dyn Fn(u64) -> Option<u64> + Send>);

impl Parents {
    pub fn new(lookup: impl Fn(u64) -> Option<u64> + Send + 'static) -> Self {
        Self(Box::new(lookup))
    }
}

impl std::fmt::Debug for Parents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parents")
    }
}

/// cgroup id → labels, cached per cgroup that produced events. A miss rescans the attached
/// subtree, at most once per `rescan_every`, so a burst of events from a new pod costs one walk.
#[derive(Debug)]
pub struct Resolver {
    index: CgroupIndex,
    entries: foldhash::HashMap<u64, Entry>,
    pods: PodCache,
    parents: Option<Parents>,
    last_rescan: Option<Instant>,
    rescan_every: Duration,
}

impl Resolver {
    /// A resolver whose deleted pods keep their labels for `grace` (so their last events are
    /// still attributed) before they are forgotten.
    pub fn new(index: CgroupIndex, grace: Duration) -> Self {
        Self {
            index,
            entries: foldhash::HashMap::default(),
            pods: PodCache::new(grace),
            parents: None,
            last_rescan: None,
            rescan_every: Duration::from_secs(1),
        }
    }

    /// Names a cgroup that is gone before it was indexed by its parent, when `parents` has it.
    pub fn with_parents(mut self, parents: Parents) -> Self {
        self.parents = Some(parents);
        self
    }

    pub fn resolve(&mut self, cgroup_id: u64) -> Option<Arc<Workload>> {
        if let Some(e) = self.entries.get(&cgroup_id) {
            return Some(e.labels.clone());
        }
        let (dir_id, path) = self.directory(cgroup_id)?;
        // A parent's path names the pod, not the removed container (no container id in it).
        let identity = identify(&path);
        let (labels, attribution) = self.pods.labels(&identity);
        let entry = Entry { dir_id, path, identity, labels: labels.clone(), attribution };
        self.entries.insert(cgroup_id, entry);
        Some(labels)
    }

    /// The indexed cgroup that names `cgroup_id` and its path: the cgroup itself, else (removed
    /// already) its parent as the kernel recorded it.
    fn directory(&mut self, cgroup_id: u64) -> Option<(u64, String)> {
        if self.index.lookup(cgroup_id).is_none() {
            let due = self.last_rescan.is_none_or(|t| t.elapsed() >= self.rescan_every);
            if due {
                self.index.rescan();
                self.last_rescan = Some(Instant::now());
            } else if !self.index.finds_by_handle() {
                // Only a walk finds it: a live cgroup the last walk missed would be named by its
                // parent (no container) for good. Not yet.
                return None;
            }
        }
        if let Some(path) = self.index.get(cgroup_id) {
            return Some((cgroup_id, path.to_string()));
        }
        let parent = (self.parents.as_ref()?.0)(cgroup_id)?;
        let path = self.index.lookup(parent)?.to_string();
        log::debug!("cgroup {cgroup_id} is gone; named by its parent {path}");
        Some((parent, path))
    }

    /// Applies news from the Kubernetes API; cgroups of a pod whose labels changed (it was not
    /// known yet, a container got its name, the owner was resolved) are relabelled at once.
    pub fn apply(&mut self, event: PodEvent, now: Instant) {
        match event {
            PodEvent::Upsert(meta) => {
                let uid = meta.uid.clone();
                if self.pods.upsert(meta) {
                    self.relabel(|u| u == uid);
                }
            }
            PodEvent::Delete { uid } => self.pods.delete(&uid, now),
            PodEvent::Synced { uids } => {
                let gone = self.pods.resync(&uids, now);
                if !gone.is_empty() {
                    log::info!("{} pods vanished while the watch was down", gone.len());
                }
            }
        }
    }

    fn relabel(&mut self, pod: impl Fn(&str) -> bool) {
        for e in self.entries.values_mut() {
            if !e.identity.pod_uid.as_deref().is_some_and(&pod) {
                continue;
            }
            let (labels, attribution) = self.pods.labels(&e.identity);
            if labels != e.labels {
                log::debug!("relabelled {}: {:?} -> {:?}", e.path, e.labels, labels);
            }
            e.labels = labels;
            e.attribution = attribution;
        }
    }

    /// Forgets deleted pods whose grace has passed and cgroups that no longer exist (a new
    /// event from either resolves afresh).
    pub fn sweep(&mut self, now: Instant) {
        let expired: HashSet<String> = self.pods.expire(now).into_iter().collect();
        let index = &self.index;
        self.entries.retain(|_, e| {
            let expired = e.identity.pod_uid.as_ref().is_some_and(|u| expired.contains(u));
            !expired && index.still_there(e.dir_id, &e.path)
        });
        if self.entries.capacity() > 4 * self.entries.len().max(64) {
            self.entries.shrink_to_fit();
        }
        let dirs: HashSet<u64> = self.entries.values().map(|e| e.dir_id).collect();
        self.index.retain(|id| dirs.contains(&id));
    }

    /// Label sets still in use: those of existing cgroups (unless their pod was deleted) and
    /// those of every container of every pod on the node (so a restarted container, whose new
    /// cgroup has not spoken yet, keeps its series).
    pub fn held(&self) -> HashSet<&Workload> {
        let cgroups = self.entries.values().filter_map(|e| {
            let deleted = matches!(e.attribution, Attribution::Kubernetes | Attribution::PodOnly)
                && e.identity.pod_uid.as_deref().is_some_and(|u| self.pods.is_deleted(u));
            (!deleted).then_some(&*e.labels)
        });
        cgroups.chain(self.pods.live_labels()).collect()
    }

    /// cgroups that produced events and look like a pod's, but have no Kubernetes metadata
    /// (pod unknown, or container not in its statuses).
    pub fn unresolved(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.attribution, Attribution::Pending | Attribution::PodOnly))
            .count()
    }

    /// Pods on this node, not deleted.
    pub fn pods_known(&self) -> usize {
        self.pods.live_count()
    }

    /// The workload, or a label that says which cgroup it was when it vanished before it could
    /// be indexed (never a bare "unknown").
    pub fn workload_or_fallback(&mut self, cgroup_id: u64) -> Workload {
        match self.resolve(cgroup_id) {
            Some(w) => (*w).clone(),
            None => Workload { pod: format!("/cgroup-id/{cgroup_id}"), ..Default::default() },
        }
    }

    /// The cgroup's directory, when it is (still) in the index; its parent's when the cgroup
    /// was named by its parent (see [`Parents`]).
    pub fn cgroup_dir(&mut self, cgroup_id: u64) -> Option<std::path::PathBuf> {
        self.resolve(cgroup_id)?;
        let dir_id = self.entries.get(&cgroup_id)?.dir_id;
        self.index.absolute(dir_id)
    }

    pub fn known_cgroups(&self) -> usize {
        self.index.len()
    }

    /// Whether the cgroup is one the resolver still holds (it produced events and has not
    /// vanished since; see [`Self::sweep`]).
    pub fn holds(&self, cgroup_id: u64) -> bool {
        self.entries.contains_key(&cgroup_id)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::MetadataExt as _, path::PathBuf};

    use super::*;
    use crate::attribution::pods::cache::PodMeta;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const CID: &str = "8e3d5c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6";

    fn w(pod: &str, container: &str) -> Workload {
        Workload { pod: pod.into(), container: container.into(), ..Default::default() }
    }

    /// A directory tree standing in for the cgroup mount (cgroup ids are directory inodes).
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("credwatch-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Self(root)
        }
        fn mkdir(&self, rel: &str) -> u64 {
            let p = self.0.join(rel.trim_start_matches('/'));
            fs::create_dir_all(&p).unwrap();
            fs::metadata(p).unwrap().ino()
        }
        fn rmdir(&self, rel: &str) {
            fs::remove_dir(self.0.join(rel.trim_start_matches('/'))).unwrap();
        }
        fn resolver(&self, grace: Duration) -> Resolver {
            Resolver::new(CgroupIndex::new(self.0.clone(), self.0.clone()), grace)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn pod_meta(containers: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            uid: UID.into(),
            namespace: "shop".into(),
            name: "api-1".into(),
            workload: "Deployment/api".into(),
            containers: containers.iter().map(|(i, n)| (i.to_string(), n.to_string())).collect(),
        }
    }

    #[test]
    fn cgroups_are_relabelled_when_their_pod_becomes_known() {
        let tree = Tree::new("relabel");
        let path = format!("/kubepods/besteffort/pod{UID}/{CID}");
        let id = tree.mkdir(&path);
        let mut r = tree.resolver(Duration::from_secs(60));
        let before = r.resolve(id).unwrap();
        assert_eq!(*before, w(UID, &CID[..12]));
        assert_eq!(r.unresolved(), 1);

        // the pod is known, its container not yet: pod labels, short id
        r.apply(PodEvent::Upsert(pod_meta(&[])), Instant::now());
        let partial = r.resolve(id).unwrap();
        assert_eq!((partial.pod.as_str(), partial.container.as_str()), ("api-1", &CID[..12]));
        assert_eq!(r.unresolved(), 1);

        r.apply(PodEvent::Upsert(pod_meta(&[(CID, "app")])), Instant::now());
        let after = r.resolve(id).unwrap();
        assert_eq!(
            *after,
            Workload {
                namespace: "shop".into(),
                pod: "api-1".into(),
                container: "app".into(),
                workload: "Deployment/api".into(),
            }
        );
        assert_eq!(r.unresolved(), 0);
        assert_eq!(r.pods_known(), 1);
        let held = r.held();
        assert!(held.contains(&*after) && !held.contains(&*before) && !held.contains(&*partial));
    }

    #[test]
    fn deleted_pods_and_vanished_cgroups_stop_holding_their_labels() {
        let tree = Tree::new("lifecycle");
        let grace = Duration::from_secs(60);
        let pod_path = format!("/kubepods/besteffort/pod{UID}/{CID}");
        let unit_path = "/system.slice/cron.service";
        let pod_id = tree.mkdir(&pod_path);
        let unit_id = tree.mkdir(unit_path);
        let mut r = tree.resolver(grace);
        let t0 = Instant::now();
        r.apply(PodEvent::Upsert(pod_meta(&[(CID, "app")])), t0);
        let app = r.resolve(pod_id).unwrap();
        let cron = r.resolve(unit_id).unwrap();
        assert_eq!(cron.pod, "cron.service");
        assert!(r.held().contains(&*app) && r.held().contains(&*cron));

        // a restarted container's old cgroup goes: its pod still holds the labels
        tree.rmdir(&pod_path);
        r.sweep(t0);
        assert!(r.held().contains(&*app));

        // the pod is deleted: nothing holds them, though the name resolves during the grace
        r.apply(PodEvent::Delete { uid: UID.into() }, t0);
        assert!(!r.held().contains(&*app));
        assert_eq!(r.pods_known(), 0);

        // the unit's cgroup goes
        tree.rmdir(unit_path);
        r.sweep(t0 + grace);
        assert!(r.held().is_empty(), "{:?}", r.held());
    }

    #[test]
    fn a_cgroup_removed_before_it_was_indexed_is_named_by_its_parent() {
        let tree = Tree::new("parent");
        let grace = Duration::from_secs(60);
        let pod_path = format!("/kubepods/besteffort/pod{UID}");
        let job_path = format!("{pod_path}/{CID}");
        let pod_id = tree.mkdir(&pod_path);
        let job_id = tree.mkdir(&job_path);
        tree.rmdir(&job_path);
        // Without the kernel's record, the removed cgroup has no name.
        assert!(tree.resolver(grace).resolve(job_id).is_none());

        let parents = Parents::new(move |id| (id == job_id).then_some(pod_id));
        let mut r = tree.resolver(grace).with_parents(parents);
        assert_eq!(*r.resolve(job_id).unwrap(), w(UID, ""));
        assert_eq!(r.cgroup_dir(job_id), Some(tree.0.join(pod_path.trim_start_matches('/'))));
        assert!(r.resolve(job_id + 1_000_000).is_none(), "no parent recorded: no name");
        // A new cgroup the last walk missed (and no lookup by handle here, not a cgroup file
        // system) is not taken for a removed one before the next walk.
        let mut walked = tree.resolver(grace).with_parents(Parents::new(move |_| Some(pod_id)));
        assert!(walked.resolve(pod_id).is_some());
        let late_path = format!("{pod_path}/late");
        let late_id = tree.mkdir(&late_path);
        assert!(walked.resolve(late_id).is_none(), "named by its parent before a walk ran");
        tree.rmdir(&late_path);
        // Held while the pod's cgroup is there, gone with it.
        r.sweep(Instant::now());
        assert!(r.holds(job_id));
        tree.rmdir(&pod_path);
        r.sweep(Instant::now());
        assert!(!r.holds(job_id));
    }

    #[test]
    fn a_relist_that_misses_a_pod_deletes_it() {
        let tree = Tree::new("relist");
        let id = tree.mkdir(&format!("/kubepods/pod{UID}/{CID}"));
        let mut r = tree.resolver(Duration::from_secs(60));
        r.apply(PodEvent::Upsert(pod_meta(&[(CID, "app")])), Instant::now());
        let app = r.resolve(id).unwrap();
        r.apply(PodEvent::Synced { uids: HashSet::new() }, Instant::now());
        assert!(!r.held().contains(&*app));
    }
}
