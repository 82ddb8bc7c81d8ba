//! The pods of this node as the API last described them, reduced to what labels need: memory
//! grows with the pods on this node, never with the cluster.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::attribution::{
    identify::{CONTAINER_ID_SHOWN, Identity},
    labels::Workload,
};

/// What the watch tells the pipeline.
#[derive(Debug)]
pub enum PodEvent {
    /// A pod on this node was listed, added or modified.
    Upsert(PodMeta),
    /// A pod was deleted.
    Delete { uid: String },
    /// A full list completed: these are all the pods; any other was deleted meanwhile.
    Synced { uids: HashSet<String> },
}

/// What credwatch keeps of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `<Kind>/<name>` of the controller (see crate::attribution::pods::owner).
    pub workload: String,
    /// (full container id, container name), from the current and last-terminated state of every
    /// container, init and ephemeral container in the pod's status.
    pub containers: Vec<(String, String)>,
}

/// How a cgroup's labels were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// Pod and container from the API.
    Kubernetes,
    /// The pod is known but this container id is not in its statuses (yet).
    PodOnly,
    /// A kubelet cgroup whose pod the API has not described (yet).
    Pending,
    /// Not a kubelet cgroup: labels from the path.
    Local,
}

#[derive(Debug)]
struct Known {
    meta: PodMeta,
    /// Labels of the pod-level cgroup (container "").
    pod_level: Arc<Workload>,
    /// Container id → labels; one shared `Arc` per container name.
    containers: HashMap<String, Arc<Workload>>,
    /// The pod-level labels and one per container name.
    distinct: Vec<Arc<Workload>>,
    deleted_at: Option<Instant>,
}

impl Known {
    fn new(meta: PodMeta) -> Self {
        let pod_level = Arc::new(Workload {
            namespace: meta.namespace.clone(),
            pod: meta.name.clone(),
            container: String::new(),
            workload: meta.workload.clone(),
        });
        let mut by_name: HashMap<&str, Arc<Workload>> = HashMap::new();
        let mut containers = HashMap::with_capacity(meta.containers.len());
        for (id, name) in &meta.containers {
            let labels = by_name.entry(name).or_insert_with(|| {
                Arc::new(Workload { container: name.clone(), ..(*pod_level).clone() })
            });
            containers.insert(id.clone(), labels.clone());
        }
        let distinct = std::iter::once(pod_level.clone()).chain(by_name.into_values()).collect();
        Self { meta, pod_level, containers, distinct, deleted_at: None }
    }
}

#[derive(Debug)]
pub struct PodCache {
    pods: HashMap<String, Known>,
    /// How long a deleted pod's labels stay usable.
    grace: Duration,
}

impl PodCache {
    pub fn new(grace: Duration) -> Self {
        Self { pods: HashMap::new(), grace }
    }

    /// Adds or replaces a pod; true when its labels may have changed.
    pub fn upsert(&mut self, meta: PodMeta) -> bool {
        if let Some(known) = self.pods.get_mut(&meta.uid) {
            // A pod listed again after a relist is not deleted, whatever was assumed meanwhile.
            known.deleted_at = None;
            if known.meta == meta {
                return false;
            }
        }
        self.pods.insert(meta.uid.clone(), Known::new(meta));
        true
    }

    /// The pod is gone from the API; its labels stay for the grace period.
    pub fn delete(&mut self, uid: &str, now: Instant) {
        if let Some(known) = self.pods.get_mut(uid) {
            known.deleted_at.get_or_insert(now);
        }
    }

    /// After a full list: pods not in it were deleted while nobody watched. Returns their UIDs.
    pub fn resync(&mut self, listed: &HashSet<String>, now: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        for (uid, known) in &mut self.pods {
            if known.deleted_at.is_none() && !listed.contains(uid) {
                known.deleted_at = Some(now);
                gone.push(uid.clone());
            }
        }
        gone
    }

    /// Forgets pods deleted at least `grace` ago; returns their UIDs.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let grace = self.grace;
        let mut expired = Vec::new();
        self.pods.retain(|uid, known| {
            let keep = known.deleted_at.is_none_or(|at| now.saturating_duration_since(at) < grace);
            if !keep {
                expired.push(uid.clone());
            }
            keep
        });
        if self.pods.capacity() > 4 * self.pods.len().max(64) {
            self.pods.shrink_to_fit();
        }
        expired
    }

    pub fn is_deleted(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|k| k.deleted_at.is_some())
    }

    pub fn live_count(&self) -> usize {
        self.pods.values().filter(|k| k.deleted_at.is_none()).count()
    }

    /// Every label set of every pod not deleted.
    pub fn live_labels(&self) -> impl Iterator<Item = &Workload> {
        self.pods
            .values()
            .filter(|k| k.deleted_at.is_none())
            .flat_map(|k| k.distinct.iter().map(|w| &**w))
    }

    /// Labels for a cgroup, and how they were found.
    pub fn labels(&self, identity: &Identity) -> (Arc<Workload>, Attribution) {
        let fallback = || Arc::new(identity.fallback.clone());
        let Some(uid) = &identity.pod_uid else {
            return (fallback(), Attribution::Local);
        };
        let Some(known) = self.pods.get(uid) else {
            return (fallback(), Attribution::Pending);
        };
        let Some(id) = &identity.container_id else {
            return (known.pod_level.clone(), Attribution::Kubernetes);
        };
        match known.containers.get(id) {
            Some(labels) => (labels.clone(), Attribution::Kubernetes),
            None => (
                Arc::new(Workload {
                    container: id[..CONTAINER_ID_SHOWN.min(id.len())].to_string(),
                    ..(*known.pod_level).clone()
                }),
                Attribution::PodOnly,
            ),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::identify::identify;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const CID: &str = "8e3d5c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6";
    const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn meta() -> PodMeta {
        PodMeta {
            uid: UID.into(),
            namespace: "shop".into(),
            name: "api-7d9f8b6c5d-x2x4k".into(),
            workload: "Deployment/api".into(),
            containers: vec![(CID.into(), "app".into()), (OLD.into(), "app".into())],
        }
    }

    fn labels(container: &str) -> Workload {
        Workload {
            namespace: "shop".into(),
            pod: "api-7d9f8b6c5d-x2x4k".into(),
            container: container.into(),
            workload: "Deployment/api".into(),
        }
    }

    fn cgroup(container: &str) -> Identity {
        identify(&format!("/kubepods/burstable/pod{UID}/{container}"))
    }

    #[test]
    fn labels_come_from_the_pod_once_it_is_known() {
        let mut cache = PodCache::new(Duration::from_secs(60));
        let (w, how) = cache.labels(&cgroup(CID));
        assert_eq!((w.pod.as_str(), how), (UID, Attribution::Pending));

        assert!(cache.upsert(meta()));
        assert!(!cache.upsert(meta()), "same metadata is no change");
        assert_eq!(cache.labels(&cgroup(CID)), (Arc::new(labels("app")), Attribution::Kubernetes));
        // the restarted container's previous id still names it
        assert_eq!(cache.labels(&cgroup(OLD)).0, Arc::new(labels("app")));
        // a container the status does not list yet: pod labels, short id
        let new = "2".repeat(64);
        assert_eq!(
            cache.labels(&cgroup(&new)),
            (Arc::new(labels("222222222222")), Attribution::PodOnly)
        );
        // the pod-level cgroup
        let pod = identify(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(cache.labels(&pod).0, Arc::new(labels("")));
        // not a pod
        let unit = identify("/system.slice/sshd.service");
        assert_eq!(cache.labels(&unit).1, Attribution::Local);
    }

    #[test]
    fn deleted_pods_keep_their_labels_for_the_grace_period() {
        let grace = Duration::from_secs(60);
        let mut cache = PodCache::new(grace);
        cache.upsert(meta());
        assert_eq!(cache.live_labels().count(), 2, "pod level and `app`");
        let t0 = Instant::now();
        cache.delete(UID, t0);
        assert!(cache.is_deleted(UID));
        assert_eq!(cache.live_count(), 0);
        assert_eq!(cache.live_labels().count(), 0);
        assert_eq!(cache.labels(&cgroup(CID)).1, Attribution::Kubernetes);
        assert!(cache.expire(t0 + grace / 2).is_empty());
        assert_eq!(cache.expire(t0 + grace), vec![UID.to_string()]);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.labels(&cgroup(CID)).1, Attribution::Pending);
    }

    #[test]
    fn a_relist_deletes_what_it_no_longer_shows_and_revives_what_it_does() {
        let mut cache = PodCache::new(Duration::from_secs(60));
        cache.upsert(meta());
        let other = PodMeta { uid: "other".into(), ..meta() };
        cache.upsert(other.clone());
        let now = Instant::now();
        let listed = HashSet::from(["other".to_string()]);
        assert_eq!(cache.resync(&listed, now), vec![UID.to_string()]);
        assert!(cache.is_deleted(UID) && !cache.is_deleted("other"));
        // deleted by mistake? a later listing brings it back
        cache.upsert(meta());
        assert!(!cache.is_deleted(UID));
    }
}
