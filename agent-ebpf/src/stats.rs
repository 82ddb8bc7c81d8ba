//! Counting per (cgroup, key): a per-CPU cache of slots in front of a shared hash table, with
//! the epoch userspace advances after each read (the model and its rule: `agent_common::stats`).
//! DNS answers and TCP connects count through here; each feature adds to the counts it owns.
use agent_common::stats::{CacheSlot, CountKey, Counts, slot_is_idle};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    maps::{HashMap, PerCpuArray},
};

use crate::maps;

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
    let epoch = u64::from(maps::config(epoch_index));
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
    let created = table.insert(key, zero, u64::from(BPF_NOEXIST)).is_ok();
    match table.get_ptr_mut(key) {
        Some(p) => Some((p, created)),
        None => {
            maps::count(lost);
            None
        }
    }
}

/// A feature's counting tables, as `count` takes them.
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

/// Counts a fact under `key`: `adds(stats, shared)` adds it to the counts `stats` points to,
/// through [`add`] with the `shared` it is given, in this CPU's cache slot when it can (plain
/// adds: programs do not nest on a CPU), else in the shared table (atomic adds: every CPU writes
/// it). `shared` is a constant at each of the two calls, so each becomes straight-line code of
/// its own, as if written twice. Some(true): the key was counted for the first time on this CPU
/// (its slot taken, or its shared entry created, now); None: the full table refused it (counted).
#[inline(always)]
pub fn count<K: CountKey, V: Counts>(
    tables: &Tables<K, V>,
    key: &K,
    mut adds: impl FnMut(*mut V, bool),
) -> Option<bool> {
    if let Some((slot, new)) = cache_slot(tables.cache, key, tables.epoch_index) {
        adds(unsafe { &raw mut (*slot).stats }, false);
        return Some(new);
    }
    let (stats, new) = shared_entry(tables.table, key, tables.zero, tables.lost)?;
    adds(stats, true);
    Some(new)
}

/// Adds `n` to `counter`: atomically in a shared entry, plainly in this CPU's slot.
///
/// # Safety
/// `counter` points into a map value `count` handed out.
#[inline(always)]
pub unsafe fn add(counter: *mut u64, n: u64, shared: bool) {
    if shared {
        unsafe { atomic_add(counter, n) };
    } else {
        unsafe { *counter += n };
    }
}

/// An atomic add to a counter in a map value: BPF's XADD, which every kernel has (core's atomics
/// offer no fetch_add on this target).
#[inline(always)]
pub unsafe fn atomic_add(counter: *mut u64, n: u64) {
    unsafe { core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) counter, in(reg) n) };
}
