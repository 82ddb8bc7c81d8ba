//! The kernel's link-local tables as userspace reads them: the per-(cgroup, service) counts as
//! increments since the previous read, and the per-CPU second slots.
use std::collections::HashMap;

use agent_common::{
    linklocal::{PacketsKey, SECOND_SLOTS, SecondSlot},
    names,
};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};

use crate::kernel::{Attachment, KernelError};

pub struct LinkLocalTables {
    packets: PerCpuHashMap<MapData, PacketsKey, u64>,
    seconds: PerCpuArray<MapData, SecondSlot>,
    /// Each entry's count at the previous read.
    last: HashMap<PacketsKey, u64>,
}

impl std::fmt::Debug for LinkLocalTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkLocalTables").field("entries", &self.last.len()).finish()
    }
}

impl LinkLocalTables {
    pub fn take(kernel: &mut Attachment) -> Result<Self, KernelError> {
        Ok(Self {
            packets: kernel.take_map(names::MAP_LINKLOCAL_PACKETS)?,
            seconds: kernel.take_map(names::MAP_LINKLOCAL_SECONDS)?,
            last: HashMap::new(),
        })
    }

    /// Every entry's packets since the previous read (entries with none left out), and how many
    /// entries the table holds.
    pub fn read_increments(&mut self) -> (Vec<(PacketsKey, u64)>, usize) {
        let keys: Vec<PacketsKey> = self.packets.keys().filter_map(Result::ok).collect();
        let mut out = Vec::new();
        for &key in &keys {
            // Removed between listing and lookup: nothing new.
            let Ok(per_cpu) = self.packets.get(&key, 0) else { continue };
            let now: u64 = per_cpu.iter().sum();
            let prev = self.last.insert(key, now).unwrap_or(0);
            // Lower than before: the entry was removed and created again meanwhile.
            let inc = if now >= prev { now - prev } else { now };
            if inc > 0 {
                out.push((key, inc));
            }
        }
        (out, keys.len())
    }

    /// Every second slot's per-CPU values (`[slot][cpu]`).
    pub fn read_slots(&self) -> Result<Vec<Vec<SecondSlot>>, aya::maps::MapError> {
        (0..SECOND_SLOTS)
            .map(|i| self.seconds.get(&i, 0).map(|per_cpu| per_cpu.iter().copied().collect()))
            .collect()
    }

    /// Removes the kernel entries of cgroups that are `gone` (their counts were delivered at the
    /// last read; nothing sends from a vanished cgroup).
    pub fn forget(&mut self, gone: impl Fn(u64) -> bool) {
        let keys: Vec<PacketsKey> =
            self.last.keys().filter(|k| gone(k.cgroup_id)).copied().collect();
        for key in keys {
            let _ = self.packets.remove(&key);
            self.last.remove(&key);
        }
    }
}
