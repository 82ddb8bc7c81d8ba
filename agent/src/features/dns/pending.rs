//! The kernel's pending-query table (`CW_DNS_PENDING`), mapped into this process: once a second
//! the slots of queries older than the timeout are freed here and counted as timeouts.
//!
//! Exactly-once: the kernel counts an answer only within the timeout and then frees the slot with
//! a plain store; past the timeout it leaves the slot alone. This side frees only slots older than
//! the timeout plus [`MARGIN_NS`] (which covers the kernel program between reading the clock and
//! freeing the slot), with a compare-and-exchange on `query_ns`, which fails if the query was sent
//! again meanwhile (the kernel rewrote `query_ns`). So each query is counted by one side only.
use std::{
    io,
    os::fd::AsFd as _,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use agent_common::dns::{DnsPendingSlot, PENDING_TABLE_SIZE};
use aya::maps::MapData;

/// How much older than the timeout a slot must be before this side takes it.
pub const MARGIN_NS: u64 = 100_000_000;

/// A query that got no answer in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut {
    pub cgroup_id: u64,
    pub qtype: u16,
}

pub struct PendingTable {
    slots: NonNull<DnsPendingSlot>,
    len: usize,
    /// Keeps the map alive as long as the mapping (the mapping alone would too; this is clearer).
    _map: MapData,
}

// SAFETY: the mapping is owned by this value; concurrent access is only with the kernel, through
// volatile reads and atomics.
unsafe impl Send for PendingTable {}

impl std::fmt::Debug for PendingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingTable").field("slots", &self.len).finish()
    }
}

impl PendingTable {
    /// Maps the table (created with BPF_F_MMAPABLE) read-write.
    pub fn new(map: MapData) -> io::Result<Self> {
        let len = PENDING_TABLE_SIZE as usize;
        let bytes = mapping_bytes();
        // SAFETY: a fresh shared mapping of the map's values; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd()),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let slots = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self { slots, len, _map: map })
    }

    /// Frees the slots of queries sent more than `timeout_ns` + [`MARGIN_NS`] before monotonic
    /// time `now_ns` that are still waiting, and returns them.
    pub fn take_timed_out(&mut self, now_ns: u64, timeout_ns: u64) -> Vec<TimedOut> {
        // SAFETY: the mapping holds `len` slots.
        unsafe { take_timed_out(self.slots.as_ptr(), self.len, now_ns, timeout_ns) }
    }
}

/// [`PendingTable::take_timed_out`] over `len` slots at `slots`, which the kernel may be writing.
///
/// # Safety
/// `slots` points to `len` valid slots, 8-byte aligned.
unsafe fn take_timed_out(
    slots: *mut DnsPendingSlot,
    len: usize,
    now_ns: u64,
    timeout_ns: u64,
) -> Vec<TimedOut> {
    let mut out = Vec::new();
    for i in 0..len {
        // SAFETY: i < len (caller); slots are 32 bytes from an 8-byte aligned start, so
        // query_ns is aligned as AtomicU64 requires.
        let slot = unsafe { slots.add(i) };
        let query_ns = unsafe { AtomicU64::from_ptr(&raw mut (*slot).query_ns) };
        let sent = query_ns.load(Ordering::Acquire);
        if sent == 0 || now_ns.saturating_sub(sent) <= timeout_ns.saturating_add(MARGIN_NS) {
            continue;
        }
        // Read before the exchange: once freed the kernel may reuse the slot.
        let (cgroup_id, qtype) = unsafe {
            (
                (&raw const (*slot).cgroup_id).read_volatile(),
                (&raw const (*slot).qtype).read_volatile(),
            )
        };
        if query_ns.compare_exchange(sent, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            out.push(TimedOut { cgroup_id, qtype });
        }
    }
    out
}

impl Drop for PendingTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        unsafe { libc::munmap(self.slots.as_ptr().cast(), mapping_bytes()) };
    }
}

/// The values' bytes rounded up to whole pages, as the kernel maps them.
fn mapping_bytes() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    (PENDING_TABLE_SIZE as usize * size_of::<DnsPendingSlot>()).next_multiple_of(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(query_ns: u64, cgroup_id: u64) -> DnsPendingSlot {
        DnsPendingSlot { query_ns, cookie: 7, cgroup_id, id: 1, qtype: 28, _pad: [0; 4] }
    }

    #[test]
    fn only_slots_past_the_timeout_and_margin_are_taken_and_freed() {
        let timeout = 5_000_000_000;
        let now = 100_000_000_000;
        let mut slots = vec![
            slot(0, 1),                             // free
            slot(now - timeout, 2),                 // the kernel may still count its answer
            slot(now - timeout - MARGIN_NS, 3),     // on the edge: still the kernel's
            slot(now - timeout - MARGIN_NS - 1, 4), // past it: a timeout
            slot(1, 5),                             // long past
        ];
        let taken = unsafe { take_timed_out(slots.as_mut_ptr(), slots.len(), now, timeout) };
        assert_eq!(
            taken,
            [TimedOut { cgroup_id: 4, qtype: 28 }, TimedOut { cgroup_id: 5, qtype: 28 }]
        );
        let left: Vec<u64> = slots.iter().map(|s| s.query_ns).collect();
        assert_eq!(left, [0, now - timeout, now - timeout - MARGIN_NS, 0, 0]);
        // Counted once: a second sweep finds nothing more.
        assert!(
            unsafe { take_timed_out(slots.as_mut_ptr(), slots.len(), now, timeout) }.is_empty()
        );
    }
}
