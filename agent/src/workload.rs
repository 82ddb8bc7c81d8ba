//! Who a cgroup is: pod UID and container id from a kubelet-shaped cgroup path (systemd or
//! cgroupfs driver, every QoS class, containerd, CRI-O and Docker naming), or the path itself.
//! The Kubernetes lookup that turns a pod UID into namespace and name plugs in behind
//! [`Resolver`] without changing the metrics.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::encoding::EncodeLabelSet;

use crate::cgroup::CgroupIndex;

/// The labels every per-workload series carries.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// Container ids are shown shortened, as `docker ps` and `crictl ps` do.
const CONTAINER_ID_SHOWN: usize = 12;

/// Parses a cgroup path relative to the cgroup v2 mount.
pub fn from_cgroup_path(path: &str) -> Workload {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some(pod_at) = parts.iter().position(|p| pod_uid(p).is_some()) else {
        return Workload { pod: path.to_string(), ..Default::default() };
    };
    let uid = pod_uid(parts[pod_at]).unwrap_or_default();
    let container = parts
        .get(pod_at + 1)
        .and_then(|p| container_id(p))
        .map(|id| id[..CONTAINER_ID_SHOWN.min(id.len())].to_string())
        .unwrap_or_default();
    Workload { namespace: String::new(), pod: uid, container }
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

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, or a bare `<id>`
/// (cgroupfs driver). CRI-O's `crio-conmon-<id>.scope` is the monitor, not the container.
fn container_id(part: &str) -> Option<&str> {
    let id = match part.strip_suffix(".scope") {
        Some(scope) => {
            if scope.starts_with("crio-conmon-") {
                return None;
            }
            &scope[scope.rfind('-')? + 1..]
        }
        None => part,
    };
    let ok = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(id)
}

/// cgroup id → workload, cached. A miss rescans the attached subtree, at most once per
/// `rescan_every`, so a burst of events from a new pod costs one walk.
#[derive(Debug)]
pub struct Resolver {
    index: CgroupIndex,
    cache: HashMap<u64, Arc<Workload>>,
    last_rescan: Option<Instant>,
    rescan_every: Duration,
}

impl Resolver {
    pub fn new(index: CgroupIndex) -> Self {
        Self {
            index,
            cache: HashMap::new(),
            last_rescan: None,
            rescan_every: Duration::from_secs(1),
        }
    }

    pub fn resolve(&mut self, cgroup_id: u64) -> Option<Arc<Workload>> {
        if let Some(w) = self.cache.get(&cgroup_id) {
            return Some(w.clone());
        }
        if self.index.get(cgroup_id).is_none() {
            let due = self.last_rescan.is_none_or(|t| t.elapsed() >= self.rescan_every);
            if !due {
                return None;
            }
            self.index.rescan();
            self.last_rescan = Some(Instant::now());
        }
        let workload = Arc::new(from_cgroup_path(self.index.get(cgroup_id)?));
        self.cache.insert(cgroup_id, workload.clone());
        Some(workload)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const CID: &str = "8e3d5c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6";

    fn w(pod: &str, container: &str) -> Workload {
        Workload { namespace: String::new(), pod: pod.into(), container: container.into() }
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
        }
    }

    #[test]
    fn other_paths_are_labelled_with_the_path() {
        for path in [
            "/system.slice/containerd.service",
            "/",
            "/user.slice/podman.scope",
            "/kubepods/burstable",
        ] {
            assert_eq!(from_cgroup_path(path), w(path, ""), "{path}");
        }
        // "pod" followed by something that is not a UID is not a pod
        assert_eq!(from_cgroup_path("/podcast/x"), w("/podcast/x", ""));
    }
}
