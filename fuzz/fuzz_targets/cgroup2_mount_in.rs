//! /proc/self/mountinfo: mount points are named by whoever mounts, escapes included.
#![no_main]
use agent::attribution::cgroup::cgroup2_mount_in;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = cgroup2_mount_in(&text);
});
