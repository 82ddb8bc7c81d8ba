//! The parent of each cgroup that gets DNS answers or sends metadata requests, recorded while
//! the cgroup exists. A short-lived container (a Job that resolves a name or fetches credentials
//! once and exits) can be gone, its directory removed, before userspace reads its counts and
//! events; the parent, the pod's cgroup, still names the pod and leads to its resolv.conf.
use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_skb_ancestor_cgroup_id, programs::SkBuffContext,
};

use crate::maps::CW_CGROUP_PARENTS;

/// Deepest cgroup level looked at. Kubernetes pods' containers sit at level 4 or 5 (the
/// systemd and cgroupfs layouts), a few more under a nested node (kind, a node in a container).
const MAX_LEVEL: i32 = 16;

/// Records `cgroup_id`'s parent (once per cgroup: a table lookup on later calls), for a packet
/// of a socket in that cgroup. The cgroup's level is where the packet's ancestor at that level
/// is the cgroup itself; the level above is its parent. Nothing is recorded for the root, or for
/// a cgroup deeper than `MAX_LEVEL`.
#[inline(always)]
pub fn remember_parent(ctx: &SkBuffContext, cgroup_id: u64) {
    if cgroup_id == 0 || unsafe { CW_CGROUP_PARENTS.get(&cgroup_id) }.is_some() {
        return;
    }
    let skb = ctx.as_ptr().cast();
    let mut parent = 0u64;
    let mut level = 0;
    while level < MAX_LEVEL {
        // 0 past the packet's own level (or without a socket).
        let id = unsafe { bpf_skb_ancestor_cgroup_id(skb, level) };
        if id == 0 {
            return;
        }
        if id == cgroup_id {
            if parent != 0 {
                // Full table: the least recently used entry goes (a cgroup long gone).
                let _ = CW_CGROUP_PARENTS.insert(&cgroup_id, &parent, 0);
            }
            return;
        }
        parent = id;
        level += 1;
    }
}
