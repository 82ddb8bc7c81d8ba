//! Who a cgroup is, from its path alone: pod UID and container id from a kubelet-shaped cgroup
//! path (systemd or cgroupfs driver, every QoS class, containerd, CRI-O, Docker and podman naming),
//! or the systemd unit, or the path itself.
use crate::attribution::labels::Workload;

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

/// The pod-level cgroup of a kubelet-shaped path (`…/pod<uid>` or `…-pod<uid>.slice`), which
/// holds every container of the pod, the sandbox included; `None` outside a pod.
pub fn pod_cgroup(path: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut pod = std::path::PathBuf::new();
    for part in path.components() {
        pod.push(part);
        if part.as_os_str().to_str().and_then(pod_uid).is_some() {
            return Some(pod);
        }
    }
    None
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

/// A container's own cgroup, by runtime and cgroup driver:
///
/// | runtime | systemd driver | cgroupfs driver |
/// |---|---|---|
/// | containerd | `cri-containerd-<id>.scope` | `<id>` |
/// | CRI-O | `crio-<id>.scope` | `crio-<id>` |
/// | Docker, cri-dockerd | `docker-<id>.scope` | `<id>` (`/docker/<id>` outside Kubernetes) |
/// | podman | `libpod-<id>.scope` | `libpod-<id>` |
///
/// The monitors are not containers: CRI-O's `crio-conmon-<id>[.scope]` and podman's
/// `libpod-conmon-<id>[.scope]`.
///
/// Any `<prefix>-<id>.scope` is taken (a scope is a container's unit whatever the runtime calls
/// it); without `.scope`, only a bare id or a runtime's prefix above, so that a cgroupfs
/// directory that merely ends in 64 hex digits is not a container.
fn container_id(part: &str) -> Option<&str> {
    let (name, scope) = match part.strip_suffix(".scope") {
        Some(name) => (name, true),
        None => (part, false),
    };
    if name.contains("conmon-") {
        return None;
    }
    let id = match name.rfind('-') {
        Some(dash) if scope || CGROUPFS_PREFIXES.contains(&&name[..dash]) => &name[dash + 1..],
        Some(_) => return None,
        None if scope => return None,
        None => name,
    };
    let ok = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(id)
}

/// The runtimes that name a cgroupfs container cgroup `<prefix>-<id>` (the others use the bare
/// id).
const CGROUPFS_PREFIXES: [&str; 2] = ["crio", "libpod"];

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const CID: &str = "8e3d5c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6";

    fn w(pod: &str, container: &str) -> Workload {
        Workload { pod: pod.into(), container: container.into(), ..Default::default() }
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
    fn the_pod_cgroup_of_a_container() {
        use std::path::Path;
        let uid_ = UID.replace('-', "_");
        let systemd = format!(
            "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice"
        );
        let container = format!("{systemd}/cri-containerd-{CID}.scope");
        assert_eq!(pod_cgroup(Path::new(&container)).unwrap(), Path::new(&systemd));
        let cgroupfs =
            format!("/sys/fs/cgroup/unified/credwatch-test-7/kubepods/besteffort/pod{UID}");
        let container = format!("{cgroupfs}/libpod-{CID}");
        assert_eq!(pod_cgroup(Path::new(&container)).unwrap(), Path::new(&cgroupfs));
        assert_eq!(pod_cgroup(Path::new(&cgroupfs)).unwrap(), Path::new(&cgroupfs));
        assert_eq!(pod_cgroup(Path::new("/sys/fs/cgroup/system.slice/nginx.service")), None);
        assert_eq!(pod_cgroup(Path::new("/sys/fs/cgroup/kubepods/burstable")), None);
    }

    /// Container cgroups in the shapes each runtime and driver makes them (the podman cgroupfs
    /// one as this machine's podman makes it under the runtime suite's `--cgroup-parent`, which
    /// tests/scenarios/test_runtime.py checks end to end), the ids replaced by CID.
    #[test]
    fn every_runtime_and_driver() {
        let uid_ = UID.replace('-', "_");
        let short = &CID[..12];
        let kube_systemd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice"
        );
        let kube_cgroupfs = format!("/kubepods/besteffort/pod{UID}");
        let in_pod = [
            // containerd: systemd (EKS AL2023, Bottlerocket) and cgroupfs (cri-dockerd's cgroupfs
            // path has the same shape)
            (format!("{kube_systemd}/cri-containerd-{CID}.scope"), Some(CID)),
            (format!("{kube_cgroupfs}/{CID}"), Some(CID)),
            // CRI-O: systemd, with crun's `container` subgroup, and cgroupfs
            (format!("{kube_systemd}/crio-{CID}.scope"), Some(CID)),
            (format!("{kube_systemd}/crio-{CID}.scope/container"), Some(CID)),
            (format!("{kube_cgroupfs}/crio-{CID}"), Some(CID)),
            (format!("{kube_systemd}/crio-conmon-{CID}.scope"), None),
            (format!("{kube_cgroupfs}/crio-conmon-{CID}"), None),
            // cri-dockerd: systemd (cgroupfs: as containerd's above)
            (format!("{kube_systemd}/docker-{CID}.scope"), Some(CID)),
            // podman: systemd (also crun's subgroup) and cgroupfs (this machine's, under a test
            // subtree as the runtime suite makes it)
            (format!("{kube_systemd}/libpod-{CID}.scope"), Some(CID)),
            (format!("{kube_systemd}/libpod-{CID}.scope/container"), Some(CID)),
            (format!("/credwatch-test-4242{kube_cgroupfs}/libpod-{CID}"), Some(CID)),
            (format!("{kube_cgroupfs}/libpod-conmon-{CID}"), None),
            // the pod's own cgroup
            (kube_systemd.clone(), None),
            (kube_cgroupfs.clone(), None),
        ];
        for (path, id) in in_pod {
            let identity = identify(&path);
            assert_eq!(identity.pod_uid.as_deref(), Some(UID), "{path}");
            assert_eq!(identity.container_id.as_deref(), id, "{path}");
            let container = if id.is_some() { short } else { "" };
            assert_eq!(identity.fallback, w(UID, container), "{path}");
        }
        let outside = [
            // docker: systemd and cgroupfs
            (format!("/system.slice/docker-{CID}.scope"), Some(CID)),
            (format!("/docker/{CID}"), Some(CID)),
            // podman: systemd (root and rootless, with crun's subgroup) and cgroupfs (default
            // parent)
            (format!("/machine.slice/libpod-{CID}.scope"), Some(CID)),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container"
                ),
                Some(CID),
            ),
            (format!("/libpod_parent/libpod-{CID}"), Some(CID)),
            (format!("/libpod_parent/libpod-conmon-{CID}"), None),
            (format!("/machine.slice/libpod-conmon-{CID}.scope"), None),
            // 64 hex digits after a dash that is no runtime's prefix, outside a scope
            (format!("/build/cache-{CID}"), None),
        ];
        for (path, id) in outside {
            let identity = identify(&path);
            assert_eq!(identity.pod_uid, None, "{path}");
            assert_eq!(identity.container_id.as_deref(), id, "{path}");
            let container = if id.is_some() { short } else { "" };
            assert_eq!(identity.fallback.container, container, "{path}");
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
}
