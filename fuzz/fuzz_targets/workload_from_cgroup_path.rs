//! cgroup paths are named by whoever creates cgroups: any text.
#![no_main]
use agent::attribution::identify::from_cgroup_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let w = from_cgroup_path(&path);
    if w.pod != path && w.workload.is_empty() {
        // A kubelet-shaped path: a pod UID and at most 12 hex digits of container id.
        assert_eq!(w.pod.len(), 36, "{w:?}");
        assert!(w.container.len() <= 12 && w.container.bytes().all(|b| b.is_ascii_hexdigit()));
    } else if w.pod != path {
        // Inside a systemd service: the unit (one path component) names pod and workload.
        assert!(
            w.pod == w.workload && w.pod.ends_with(".service") && !w.pod.contains('/'),
            "{w:?}"
        );
        assert!(w.container.is_empty(), "{w:?}");
    }
});
