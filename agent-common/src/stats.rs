//! Counting in the kernel per (cgroup, key), read by userspace once a second: the model DNS
//! answers and TCP connects share (docs/architecture.md, "Counting in the kernel").
//!
//! Each feature has a shared hash table of counts (`HashMap<K, V>`, atomic adds) and, in front of
//! it, a small per-CPU cache of [`CacheSlot`]s (a per-CPU array, plain adds). A fact is counted in
//! the slot its key hashes to when the slot holds that key, is empty, or has counted nothing since
//! the epoch before last; otherwise in the shared table. The epoch lives in `CW_CONFIG` (one index
//! per feature) and is advanced by userspace after each read of the table and of every CPU's
//! slots, so a slot is only taken over once userspace has read all of its counts: it then starts
//! again from zero under its new key, and userspace, which sees the key change, counts it from
//! zero.
//!
//! Why a cache: the shared table costs a hash lookup and atomic adds on every fact, and the
//! atomic adds move the entry's cache line between the CPUs counting one pod's facts.

/// A key counted per cgroup. `cgroup_id` 0 marks an empty cache slot (no cgroup has id 0).
pub trait CountKey: Copy {
    fn cgroup_id(&self) -> u64;
    /// Whether `other` is the same key. Written out per key type, field by field: a derived
    /// comparison of the padding bytes can become a `bcmp` call, which BPF has not.
    fn same(&self, other: &Self) -> bool;
    /// The slot of a CPU's cache this key counts in.
    fn cache_slot(&self) -> u32;
}

/// The counts of one key: `u64`s only, so that userspace can subtract two reads field by field.
///
/// # Safety
/// Implemented only by `#[repr(C)]` structs of `u64`s and arrays of `u64`s, `COUNTERS` of them
/// in all ([`counters`] views them as a slice).
pub unsafe trait Counts: Copy + PartialEq {
    const ZERO: Self;
    /// Number of `u64` counters in `Self`.
    const COUNTERS: usize;
}

/// The counters of a [`Counts`] value, in memory order.
pub fn counters<V: Counts>(v: &V) -> &[u64] {
    debug_assert_eq!(size_of::<V>(), V::COUNTERS * 8);
    // SAFETY: V is repr(C) u64s only (the Counts contract), so it is V::COUNTERS aligned u64s.
    unsafe { core::slice::from_raw_parts((v as *const V).cast::<u64>(), V::COUNTERS) }
}

/// Mutable [`counters`].
pub fn counters_mut<V: Counts>(v: &mut V) -> &mut [u64] {
    debug_assert_eq!(size_of::<V>(), V::COUNTERS * 8);
    // SAFETY: as in `counters`.
    unsafe { core::slice::from_raw_parts_mut((v as *mut V).cast::<u64>(), V::COUNTERS) }
}

/// A slot of a CPU's cache: the counts of one key counted on that CPU since the slot was taken.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSlot<K, V> {
    /// `cgroup_id` 0: empty.
    pub key: K,
    /// The epoch of the last fact counted here.
    pub active_epoch: u64,
    pub stats: V,
}

/// The cache slot of (cgroup, kind) in a cache of `slots` slots (a power of two): a
/// multiplicative hash, so that consecutive cgroup ids spread.
#[inline(always)]
pub const fn cache_slot_of(cgroup_id: u64, kind: u16, slots: u32) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    ((cgroup_id ^ ((kind as u64) << 48)).wrapping_mul(K) >> (64 - slots.trailing_zeros())) as u32
}

/// Whether a cache slot last counted in `active_epoch` may be taken by another key at `epoch`:
/// userspace has read it since its last count (it read every slot before advancing the epoch
/// past `active_epoch + 1`).
#[inline(always)]
pub const fn slot_is_idle(active_epoch: u64, epoch: u64) -> bool {
    active_epoch + 2 <= epoch
}
