//! Who a cgroup is: pod UID and container id from a kubelet-shaped cgroup path (systemd or
//! cgroupfs driver, every QoS class, containerd, CRI-O and Docker naming), or the path itself.
//! [`Resolver`] turns a cgroup id into labels: Kubernetes metadata for the pod UID and container
//! id when the API watch (crate::pods) has it, the path-derived labels otherwise, and relabels
//! cgroups when metadata arrives or goes. It also says which label sets are still alive, which
//! is what the series lifecycle (crate::series) removes the others by.
use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};

use crate::{
    cgroup::CgroupIndex,
    pods::{Attribution, PodCache, PodEvent},
};

/// The labels every per-workload series carries.
///
/// With Kubernetes metadata: the pod's namespace and name, the container's name and the
/// controller that owns the pod (`Deployment/api`). Without it (see [`identify`]): the pod UID,
/// the short container id, or the systemd unit or cgroup path.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub workload: String,
}

/// What `#[derive(EncodeLabelSet)]` would write (`namespace="…",pod="…",container="…",
/// workload="…"`, values escaped), in two encoder calls instead of twelve: the first three labels
/// are written, escaped here, as the text encoder's label *key* (which it copies as it is), the
/// last as an ordinary label. Every per-pod line of /metrics carries these labels, and the
/// encoder's per-label calls were half of a scrape's CPU with 1,000 pods (`perf`,
/// `cargo xtask bench footprint`). Sound because this crate enables only prometheus-client's text
/// encoders (no protobuf feature, where a key is a field of its own); a test compares the output
/// with the derived encoding, escapes included, in both text formats.
impl EncodeLabelSet for Workload {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        LABEL_PREFIX.with_borrow_mut(|prefix| {
            prefix.clear();
            for (key, value) in
                [("namespace", &self.namespace), ("pod", &self.pod), ("container", &self.container)]
            {
                prefix.push_str(key);
                prefix.push_str("=\"");
                push_escaped(prefix, value);
                prefix.push_str("\",");
            }
            prefix.push_str("workload");
            let mut label = encoder.encode_label();
            let mut key = label.encode_label_key()?;
            key.write_str(prefix)?;
            let mut value = key.encode_label_value()?;
            EncodeLabelValue::encode(&self.workload.as_str(), &mut value)?;
            value.finish()
        })
    }
}

thread_local! {
    /// Reused by every [`Workload`] label encoding (a scrape writes tens of thousands).
    static LABEL_PREFIX: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A label value as the exposition formats escape it: backslash, double quote and line feed.
fn push_escaped(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Container ids are shown shortened, as `docker ps` and `crictl ps` do.
pub const CONTAINER_ID_SHOWN: usize = 12;

/// What a cgroup path says about its processes: the keys for a Kubernetes lookup, and the labels
/// to use when there is none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The pod UID of a kubelet-created cgroup (with dashes, as in `metadata.uid`).
    pub pod_uid: Option<String>,
    /// The full container id (64 hex digits), as in `status.containerStatuses[].containerID`
    /// after the `<runtime>://` prefix.
    pub container_id: Option<String>,
    /// Labels from the path alone.
    pub fallback: Workload,
}

/// The labels for a cgroup path when there is no Kubernetes metadata for it.
pub fn from_cgroup_path(path: &str) -> Workload {
    identify(path).fallback
}

/// Parses a cgroup path relative to the cgroup v2 mount.
///
/// - kubelet cgroup (any driver, QoS class or runtime): `pod` = pod UID, `container` = short
///   container id;
/// - a container outside Kubernetes (`docker-<id>.scope`, `/docker/<id>`, `libpod-<id>.scope`):
///   `pod` = the cgroup path, `container` = short container id;
/// - inside a systemd service (`…/nginx.service[/…]`): `pod` = `workload` = the unit;
/// - anything else: `pod` = the cgroup path.
pub fn identify(path: &str) -> Identity {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(pod_at) = parts.iter().position(|p| pod_uid(p).is_some()) {
        let container_id = parts.get(pod_at + 1).and_then(|p| container_id(p)).map(str::to_string);
        let uid = pod_uid(parts[pod_at]);
        return Identity {
            fallback: Workload {
                pod: uid.clone().unwrap_or_default(),
                container: short_id(container_id.as_deref()),
                ..Default::default()
            },
            pod_uid: uid,
            container_id,
        };
    }
    let container_id = parts.iter().rev().find_map(|p| container_id(p)).map(str::to_string);
    let container = short_id(container_id.as_deref());
    // A container's own scope says more than the service that started it; a service says more
    // than its path.
    let unit = parts.iter().rev().find(|p| p.ends_with(".service"));
    let fallback = match unit {
        Some(unit) if container_id.is_none() => Workload {
            pod: (*unit).to_string(),
            workload: (*unit).to_string(),
            ..Default::default()
        },
        _ => Workload { pod: path.to_string(), container, ..Default::default() },
    };
    Identity { pod_uid: None, container_id, fallback }
}

fn short_id(id: Option<&str>) -> String {
    id.map(|id| id[..CONTAINER_ID_SHOWN.min(id.len())].to_string()).unwrap_or_default()
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let raw = if let Some(slice) = part.strip_suffix(".slice") {
        if !slice.starts_with("kubepods") {
            return None;
        }
        &slice[slice.rfind("-pod")? + 4..]
    } else {
        part.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    let ok = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    ok.then_some(uid)
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope`, or
/// a bare `<id>` (cgroupfs driver). CRI-O's `crio-conmon-<id>.scope` and podman's
/// `libpod-conmon-<id>.scope` are the monitors, not the containers.
fn container_id(part: &str) -> Option<&str> {
    let id = match part.strip_suffix(".scope") {
        Some(scope) => {
            if scope.contains("conmon-") {
                return None;
            }
            &scope[scope.rfind('-')? + 1..]
        }
        None => part,
    };
    let ok = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(id)
}

/// One cgroup that has produced events.
#[derive(Debug)]
struct Entry {
    /// Relative to the cgroup v2 mount, as indexed.
    path: String,
    identity: Identity,
    labels: Arc<Workload>,
    attribution: Attribution,
}

/// cgroup id → labels, cached per cgroup that produced events. A miss rescans the attached
/// subtree, at most once per `rescan_every`, so a burst of events from a new pod costs one walk.
#[derive(Debug)]
pub struct Resolver {
    index: CgroupIndex,
    entries: foldhash::HashMap<u64, Entry>,
    pods: PodCache,
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
            last_rescan: None,
            rescan_every: Duration::from_secs(1),
        }
    }

    pub fn resolve(&mut self, cgroup_id: u64) -> Option<Arc<Workload>> {
        if let Some(e) = self.entries.get(&cgroup_id) {
            return Some(e.labels.clone());
        }
        if self.index.lookup(cgroup_id).is_none() {
            let due = self.last_rescan.is_none_or(|t| t.elapsed() >= self.rescan_every);
            if !due {
                return None;
            }
            self.index.rescan();
            self.last_rescan = Some(Instant::now());
        }
        let path = self.index.get(cgroup_id)?.to_string();
        let identity = identify(&path);
        let (labels, attribution) = self.pods.labels(&identity);
        let entry = Entry { path, identity, labels: labels.clone(), attribution };
        self.entries.insert(cgroup_id, entry);
        Some(labels)
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
        self.entries.retain(|&id, e| {
            let expired = e.identity.pod_uid.as_ref().is_some_and(|u| expired.contains(u));
            !expired && index.still_there(id, &e.path)
        });
        if self.entries.capacity() > 4 * self.entries.len().max(64) {
            self.entries.shrink_to_fit();
        }
        let entries = &self.entries;
        self.index.retain(|id| entries.contains_key(&id));
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

    /// The cgroup's directory, when it is (still) in the index.
    pub fn cgroup_dir(&mut self, cgroup_id: u64) -> Option<std::path::PathBuf> {
        self.resolve(cgroup_id)?;
        self.index.absolute(cgroup_id)
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
    use crate::pods::PodMeta;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const CID: &str = "8e3d5c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6";

    fn w(pod: &str, container: &str) -> Workload {
        Workload { pod: pod.into(), container: container.into(), ..Default::default() }
    }

    /// The labels as prometheus-client's derive encodes them: the reference for the hand-written
    /// encoding of [`Workload`].
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Derived {
        namespace: String,
        pod: String,
        container: String,
        workload: String,
    }

    /// Flattened into a larger label set, as the metrics use it.
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct OursWithMore {
        #[prometheus(flatten)]
        workload: Workload,
        qtype: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct DerivedWithMore {
        #[prometheus(flatten)]
        workload: Derived,
        qtype: &'static str,
    }

    fn exposition<L>(labels: &[L], openmetrics: bool) -> String
    where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        use prometheus_client::{
            encoding::{prometheus_text, text},
            metrics::{counter::Counter, family::Family},
            registry::Registry,
        };
        let mut registry = Registry::default();
        let family = Family::<L, Counter>::default();
        registry.register("requests", "help", family.clone());
        for (i, l) in labels.iter().enumerate() {
            family.get_or_create(l).inc_by(i as u64 + 1);
        }
        let mut out = String::new();
        if openmetrics {
            text::encode(&mut out, &registry).unwrap();
        } else {
            prometheus_text::encode(&mut out, &registry).unwrap();
        }
        // series order follows the family's hash map: compare as sets of lines
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    }

    #[test]
    fn workload_labels_encode_as_the_derive_would_escapes_included() {
        let values = [
            ("default", "api-7d9f", "app", "Deployment/api"),
            ("", "", "", ""),
            ("ns", "quote\"in", "back\\slash", "line\nfeed"),
            ("ünï", "ends with \\", "\"\"", "Job/x=\"y\",z"),
        ];
        let ours: Vec<OursWithMore> = values
            .iter()
            .map(|&(n, p, c, w)| OursWithMore {
                workload: Workload {
                    namespace: n.into(),
                    pod: p.into(),
                    container: c.into(),
                    workload: w.into(),
                },
                qtype: "A",
            })
            .collect();
        let derived: Vec<DerivedWithMore> = ours
            .iter()
            .map(|o| DerivedWithMore {
                workload: Derived {
                    namespace: o.workload.namespace.clone(),
                    pod: o.workload.pod.clone(),
                    container: o.workload.container.clone(),
                    workload: o.workload.workload.clone(),
                },
                qtype: "A",
            })
            .collect();
        for openmetrics in [true, false] {
            let (a, b) = (exposition(&ours, openmetrics), exposition(&derived, openmetrics));
            assert_eq!(a, b, "openmetrics: {openmetrics}");
            assert!(
                a.contains(
                    r#"pod="quote\"in",container="back\\slash",workload="line\nfeed",qtype="A""#
                ),
                "{a}"
            );
        }
    }

    #[test]
    fn kubelet_layouts_in_the_wild() {
        let uid_ = UID.replace('-', "_");
        let short = &CID[..12];
        let cases = [
            // systemd driver, containerd, each QoS class
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{CID}.scope"
                ),
                short,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{CID}.scope"
                ),
                short,
            ),
            (format!("/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{CID}.scope"), short),
            // systemd driver, CRI-O and Docker
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-{CID}.scope"
                ),
                short,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/docker-{CID}.scope"
                ),
                short,
            ),
            // cgroupfs driver (guaranteed has no QoS level)
            (format!("/kubepods/burstable/pod{UID}/{CID}"), short),
            (format!("/kubepods/besteffort/pod{UID}/{CID}"), short),
            (format!("/kubepods/pod{UID}/{CID}"), short),
            // under a test or nested root, and the pod-level cgroup itself
            (format!("/credwatch-test-1/kubepods/pod{UID}/{CID}"), short),
            (format!("/kubepods/burstable/pod{UID}"), ""),
            // CRI-O's monitor is not a container
            (format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{CID}.scope"), ""),
        ];
        for (path, container) in cases {
            assert_eq!(from_cgroup_path(&path), w(UID, container), "{path}");
            let id = identify(&path);
            assert_eq!(id.pod_uid.as_deref(), Some(UID), "{path}");
            let full = (!container.is_empty()).then_some(CID);
            assert_eq!(id.container_id.as_deref(), full, "{path}");
        }
    }

    #[test]
    fn hosts_without_kubernetes_label_by_unit_container_or_path() {
        let unit = |u: &str| Workload { pod: u.into(), workload: u.into(), ..Default::default() };
        let short = &CID[..12];
        let cases = [
            // systemd services, also nested and per-user
            ("/system.slice/containerd.service", unit("containerd.service")),
            ("/system.slice/nginx.service/worker", unit("nginx.service")),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/backup.service",
                unit("backup.service"),
            ),
            // containers outside Kubernetes: docker (systemd and cgroupfs), podman
            (
                &format!("/system.slice/docker-{CID}.scope") as &str,
                w(&format!("/system.slice/docker-{CID}.scope"), short),
            ),
            (&format!("/docker/{CID}"), w(&format!("/docker/{CID}"), short)),
            (
                &format!("/machine.slice/libpod-{CID}.scope"),
                w(&format!("/machine.slice/libpod-{CID}.scope"), short),
            ),
            // podman's monitor is not the container
            (
                &format!("/machine.slice/libpod-conmon-{CID}.scope"),
                w(&format!("/machine.slice/libpod-conmon-{CID}.scope"), ""),
            ),
            // everything else: the path
            ("/", w("/", "")),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                w("/user.slice/user-1000.slice/session-3.scope", ""),
            ),
            ("/kubepods/burstable", w("/kubepods/burstable", "")),
            // "pod" followed by something that is not a UID is not a pod
            ("/podcast/x", w("/podcast/x", "")),
        ];
        for (path, want) in cases {
            let id = identify(path);
            assert_eq!(id.fallback, want, "{path}");
            assert_eq!(id.pod_uid, None, "{path}");
        }
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
