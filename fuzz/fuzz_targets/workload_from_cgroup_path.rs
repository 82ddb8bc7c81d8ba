//! cgroup paths are named by whoever creates cgroups: any text.
#![no_main]
use credwatch_fuzz::workload::from_cgroup_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let w = from_cgroup_path(&path);
    if w.pod != path {
        // A kubelet-shaped path: a pod UID and at most 12 hex digits of container id.
        assert_eq!(w.pod.len(), 36, "{w:?}");
        assert!(w.container.len() <= 12 && w.container.bytes().all(|b| b.is_ascii_hexdigit()));
    }
});
