//! Reading what the kernel counts per (cgroup, key) (`agent_common::stats`: a shared table and a
//! cache of slots per CPU in front of it), once a second, as increments since the previous read;
//! advancing the feature's epoch after each read, so that the kernel may take over cache slots
//! whose counts were all read; and removing shared entries nobody needs any more.
use std::{collections::HashMap, hash::Hash};

use agent_common::{
    names,
    stats::{CacheSlot, CountKey, Counts, counters, counters_mut},
};
use aya::{
    Pod,
    maps::{self, MapData},
};

use crate::kernel::{Attachment, KernelError};

/// Reads without a change this many times in a row (one a second) and a shared entry is removed
/// from the kernel table, to make room for new cgroups. Its counts were already delivered; if the
/// cgroup counts again the entry starts again from zero.
pub const IDLE_READS_BEFORE_REMOVAL: u32 = 600;

/// One feature's counting tables and what userspace remembers of them.
pub struct CountTables<K, V>
where
    CacheSlot<K, V>: Pod,
{
    table: maps::HashMap<MapData, K, V>,
    cache: maps::PerCpuArray<MapData, CacheSlot<K, V>>,
    cache_slots: u32,
    epoch: Epoch,
    /// What each shared entry held at the previous read, and for how many reads it has not
    /// changed.
    last: HashMap<K, (V, u32)>,
    /// What each (CPU, slot) of the cache held at the previous read.
    last_cpu: HashMap<(usize, u32), CacheSlot<K, V>>,
}

/// A feature's epoch: its index in `CW_CONFIG` and the value the kernel sees there.
pub struct Epoch {
    config: maps::Array<MapData, u32>,
    index: u32,
    value: u32,
}

impl Epoch {
    pub fn new(config: maps::Array<MapData, u32>, index: u32) -> Self {
        Self { config, index, value: 0 }
    }

    fn advance(&mut self) {
        self.value = self.value.wrapping_add(1);
        if let Err(e) = self.config.set(self.index, &self.value, 0) {
            log::warn!("advancing the statistics epoch {}: {e}", self.index);
        }
    }
}

impl<K, V> std::fmt::Debug for CountTables<K, V>
where
    CacheSlot<K, V>: Pod,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountTables").field("entries", &self.last.len()).finish()
    }
}

impl<K, V> CountTables<K, V>
where
    K: CountKey + Pod + Eq + Hash,
    V: Counts + Pod,
    CacheSlot<K, V>: Pod,
{
    pub fn new(
        table: maps::HashMap<MapData, K, V>,
        cache: maps::PerCpuArray<MapData, CacheSlot<K, V>>,
        cache_slots: u32,
        epoch: Epoch,
    ) -> Self {
        Self { table, cache, cache_slots, epoch, last: HashMap::new(), last_cpu: HashMap::new() }
    }

    /// Takes a feature's counting maps out of the kernel object: its shared `table`, its per-CPU
    /// `cache` of `cache_slots` slots, and its epoch at `epoch_index` in `CW_CONFIG` (which every
    /// counting feature writes, through a descriptor of its own).
    pub fn take(
        kernel: &mut Attachment,
        table: &'static str,
        cache: &'static str,
        cache_slots: u32,
        epoch_index: u32,
    ) -> Result<Self, KernelError> {
        let config = kernel.share_map(names::MAP_CONFIG)?;
        Ok(Self::new(
            kernel.take_map(table)?,
            kernel.take_map(cache)?,
            cache_slots,
            Epoch::new(config, epoch_index),
        ))
    }

    /// The increments of every key that counted something since the previous call (a key may
    /// come more than once: from the shared table and from several CPUs' caches).
    pub fn read_increments(&mut self) -> Vec<(K, V)> {
        let keys: Vec<K> = self.table.keys().filter_map(Result::ok).collect();
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(keys.len());
        for key in keys {
            // An entry removed between listing and lookup has nothing new.
            let Ok(now) = self.table.get(&key, 0) else { continue };
            let (prev, unchanged) = self.last.get(&key).copied().unwrap_or((V::ZERO, 0));
            match increment(&prev, &now) {
                Some(inc) => {
                    out.push((key, inc));
                    next.insert(key, (now, 0));
                }
                None if unchanged + 1 >= IDLE_READS_BEFORE_REMOVAL => {
                    let _ = self.table.remove(&key);
                }
                None => {
                    next.insert(key, (now, unchanged + 1));
                }
            }
        }
        self.last = next;
        for index in 0..self.cache_slots {
            // Unreadable (not expected): read again next time, nothing lost meanwhile.
            let Ok(per_cpu) = self.cache.get(&index, 0) else { continue };
            for (cpu, now) in per_cpu.iter().enumerate() {
                let prev = self.last_cpu.insert((cpu, index), *now);
                if let Some(inc) = slot_increment(prev.as_ref(), now) {
                    out.push((now.key, inc));
                }
            }
        }
        // Only after everything above was read: a cache slot idle since the epoch before the
        // new one may then be taken by another key.
        self.epoch.advance();
        out
    }

    /// Removes the shared entries of cgroups that are `gone` (vanished, or their pod deleted) and
    /// that counted nothing at the last read: their counts were delivered, and the cgroup's id
    /// will not count again. (A socket can outlive its cgroup; if one counts after this, its entry
    /// is created again and read from zero.) Their cache slots need nothing: the kernel takes
    /// them for other keys once idle.
    pub fn prune(&mut self, gone: impl Fn(u64) -> bool) -> usize {
        let mut removed = 0;
        self.last.retain(|key, (_, unchanged)| {
            if *unchanged == 0 || !gone(key.cgroup_id()) {
                return true;
            }
            if self.table.remove(key).is_ok() {
                removed += 1;
            }
            false
        });
        removed
    }
}

/// `now - prev`, or None when nothing changed. Counters only grow; if any went down the entry was
/// removed and created again since `prev`, and all of `now` is new.
pub fn increment<V: Counts>(prev: &V, now: &V) -> Option<V> {
    let mut inc = *now;
    let mut recreated = false;
    for (n, p) in counters_mut(&mut inc).iter_mut().zip(counters(prev)) {
        match n.checked_sub(*p) {
            Some(d) => *n = d,
            None => recreated = true,
        }
    }
    if recreated {
        inc = *now;
    }
    (inc != V::ZERO).then_some(inc)
}

/// What a cache slot counted since `prev` (its previous read), or None. A slot whose key changed
/// was taken afresh: the previous key's counts were all read, and all of `now` is new. (The
/// kernel never resets a slot for the key it holds, and a slot taken by another key stays with it
/// for at least two epochs, so a change of key is always seen between two reads.)
pub fn slot_increment<K: CountKey, V: Counts>(
    prev: Option<&CacheSlot<K, V>>,
    now: &CacheSlot<K, V>,
) -> Option<V> {
    if now.key.cgroup_id() == 0 {
        return None;
    }
    match prev {
        Some(p) if p.key.same(&now.key) => increment(&p.stats, &now.stats),
        _ => (now.stats != V::ZERO).then_some(now.stats),
    }
}

#[cfg(test)]
mod tests {
    use agent_common::tcp::{TcpStats, TcpStatsKey, TcpStatsSlot};

    use super::*;

    fn stats(established: u64, refused: u64, slot: usize) -> TcpStats {
        let mut s = TcpStats::ZERO;
        s.connects[0] = established;
        s.connects[1] = refused;
        s.latency[slot] = established;
        s.latency_sum_ns = established * 1000;
        s
    }

    #[test]
    fn increments_are_differences() {
        let inc = increment(&stats(2, 1, 3), &stats(5, 1, 3)).unwrap();
        assert_eq!((inc.connects[0], inc.connects[1], inc.latency[3]), (3, 0, 3));
        assert_eq!(inc.latency_sum_ns, 3000);
        assert_eq!(increment(&stats(2, 1, 3), &stats(2, 1, 3)), None);
    }

    #[test]
    fn a_recreated_entry_counts_from_zero() {
        let inc = increment(&stats(9, 0, 1), &stats(2, 0, 1)).unwrap();
        assert_eq!((inc.connects[0], inc.latency[1]), (2, 2));
    }

    fn slot(cgroup_id: u64, stats: TcpStats) -> TcpStatsSlot {
        let key = TcpStatsKey { cgroup_id, class: 1, _pad: [0; 7] };
        TcpStatsSlot { key, active_epoch: 0, stats }
    }

    #[test]
    fn cache_slots_count_increments_and_start_over_under_a_new_key() {
        assert_eq!(slot_increment(None, &slot(0, stats(0, 0, 0))), None, "empty");
        let first = slot(7, stats(2, 1, 3));
        let inc = slot_increment(None, &first).unwrap();
        assert_eq!((inc.connects[0], inc.connects[1]), (2, 1), "first read: everything");
        let inc = slot_increment(Some(&first), &slot(7, stats(5, 1, 3))).unwrap();
        assert_eq!((inc.connects[0], inc.connects[1]), (3, 0), "same key: the difference");
        assert_eq!(slot_increment(Some(&first), &first), None, "unchanged");
        // Taken by another cgroup: its counts start from zero.
        let inc = slot_increment(Some(&first), &slot(8, stats(1, 0, 2))).unwrap();
        assert_eq!((inc.connects[0], inc.latency[2]), (1, 1));
    }
}
