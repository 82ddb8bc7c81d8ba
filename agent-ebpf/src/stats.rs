//! Counting per (cgroup, key): a per-CPU cache of slots in front of a shared hash table, with
//! the epoch userspace advances after each read (the model and its rule: `agent_common::stats`).
//! DNS answers and TCP connects count through here; each feature adds to the counts it owns.
use agent_common::stats::{CacheSlot, CountKey, Counts, slot_is_idle};
use aya_ebpf::maps::{HashMap, PerCpuArray};

use crate::maps::{CW_CONFIG, count};

/// Map update flag: create only.
const BPF_NOEXIST: u64 = 1;

/// This CPU's cache slot for `key`, taken for it if it is empty or idle since the epoch before
/// last (`config[epoch_index]`); None when another key holds it. The flag: the slot was taken
/// just now (its counts start from zero).
#[inline(always)]
pub fn cache_slot<K: CountKey, V: Counts>(
    cache: &PerCpuArray<CacheSlot<K, V>>,
    key: &K,
    epoch_index: u32,
) -> Option<(*mut CacheSlot<K, V>, bool)> {
    let slot = cache.get_ptr_mut(key.cache_slot())?;
    let epoch = CW_CONFIG.get(epoch_index).map_or(0, |e| u64::from(*e));
    let mut taken = false;
    unsafe {
        let held = (*slot).key;
        if !held.same(key) {
            if held.cgroup_id() != 0 && !slot_is_idle((*slot).active_epoch, epoch) {
                return None;
            }
            (*slot).key = *key;
            (*slot).stats = V::ZERO;
            taken = true;
        }
        (*slot).active_epoch = epoch;
    }
    Some((slot, taken))
}

/// The shared table's entry for `key`, created if missing (flag: created now); None, counted
/// under `lost`, when the table is full. `zero`: a static of zero counts (in `.rodata`, so that
/// the insert does not copy one onto the stack: with the DNS parser's frames the stack would pass
/// the verifier's 512 bytes).
#[inline(always)]
pub fn shared_entry<K, V: Counts>(
    table: &HashMap<K, V>,
    key: &K,
    zero: &'static V,
    lost: u32,
) -> Option<(*mut V, bool)> {
    if let Some(p) = table.get_ptr_mut(key) {
        return Some((p, false));
    }
    // BPF_NOEXIST: another CPU may have created it meanwhile, which is just as good (and then
    // that CPU reports it as new).
    let created = table.insert(key, zero, BPF_NOEXIST).is_ok();
    match table.get_ptr_mut(key) {
        Some(p) => Some((p, created)),
        None => {
            count(lost);
            None
        }
    }
}

/// Where a fact is counted: this CPU's cache slot (plain adds: programs do not nest on a CPU) or
/// the shared entry (atomic adds: every CPU writes it).
pub struct Entry<V> {
    stats: *mut V,
    shared: bool,
    /// Counted for the first time on this CPU: the slot was taken, or the entry created, now.
    pub new: bool,
}

impl<V> Entry<V> {
    /// Adds `n` to the counter `field` picks in the entry's counts.
    #[inline(always)]
    pub fn add(&self, field: impl FnOnce(*mut V) -> *mut u64, n: u64) {
        let counter = field(self.stats);
        if self.shared {
            unsafe { atomic_add(counter, n) };
        } else {
            unsafe { *counter += n };
        }
    }
}

/// A feature's counting tables, as `entry` takes them.
pub struct Tables<K: 'static, V: 'static> {
    pub cache: &'static PerCpuArray<CacheSlot<K, V>>,
    pub table: &'static HashMap<K, V>,
    /// Its index in `CW_CONFIG`.
    pub epoch_index: u32,
    /// The counter a fact the full table refused is counted under.
    pub lost: u32,
    /// Zero counts, in `.rodata` (see `shared_entry`).
    pub zero: &'static V,
}

/// The entry `key` counts in: its cache slot when it can, else the shared table.
#[inline(always)]
pub fn entry<K: CountKey, V: Counts>(tables: &Tables<K, V>, key: &K) -> Option<Entry<V>> {
    if let Some((slot, new)) = cache_slot(tables.cache, key, tables.epoch_index) {
        return Some(Entry { stats: unsafe { &raw mut (*slot).stats }, shared: false, new });
    }
    let (stats, new) = shared_entry(tables.table, key, tables.zero, tables.lost)?;
    Some(Entry { stats, shared: true, new })
}

/// An atomic add to a counter in a map value: BPF's XADD, which every kernel has (core's atomics
/// offer no fetch_add on this target).
#[inline(always)]
pub unsafe fn atomic_add(counter: *mut u64, n: u64) {
    unsafe { core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) counter, in(reg) n) };
}
