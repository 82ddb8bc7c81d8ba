//! DNS types shared by the kernel parser and userspace.
use core::mem::size_of;

use crate::stats::{CacheSlot, CountKey, Counts, cache_slot_of};

/// Longest name on the wire (RFC 1035: 255 bytes including length bytes and the root label).
pub const NAME_MAX: usize = 255;
/// Bytes of name the event carries (NAME_MAX rounded up; the tail is zero).
pub const NAME_BUF: usize = 256;
/// Most labels a valid name can have (each takes at least 2 bytes).
pub const LABELS_MAX: usize = 128;
/// DNS header length.
pub const HEADER_LEN: usize = 12;

/// (cgroup, query type) pairs counted at once; a cgroup has one per query type it uses.
pub const STATS_TABLE_SIZE: u32 = 16_384;
pub const EVENT_RING_BYTES: u32 = 1024 * 1024;

/// Query types counted under their own number; any other is counted as 0 ("other"), so that a
/// workload cannot create more than `KNOWN_QTYPES.len() + 1` series. Userspace names them.
pub const KNOWN_QTYPES: [u16; 12] = [1, 2, 5, 6, 12, 15, 16, 28, 33, 64, 65, 255];
pub const QTYPE_OTHER: u16 = 0;

/// Response codes counted under their own number (NOERROR..REFUSED); the rest share a slot.
pub const RCODE_SLOTS: usize = 8;
pub const RCODE_OTHER_SLOT: usize = 6;
pub const RCODE_NXDOMAIN: u8 = 3;

/// Upper bounds (inclusive, nanoseconds) of the latency histogram's buckets, as in Prometheus:
/// a node-local cache answers well under a millisecond, an upstream in tens of milliseconds.
/// Answers after more than a second land in +Inf (queries with no answer are counted as
/// timeouts instead). Slot `LATENCY_BOUNDS_NS.len()` holds what is above the last. Eleven bounds
/// rather than more: every bucket is a line per pod and query type on every scrape.
pub const LATENCY_BOUNDS_NS: [u64; 11] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
/// Histogram slots: the bounds, +Inf, and one unused so that indexes can be masked.
pub const LATENCY_SLOTS: usize = 16;
const _: () = assert!(LATENCY_BOUNDS_NS.len() < LATENCY_SLOTS);

/// Answered queries of one cgroup and query type.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsStatsKey {
    pub cgroup_id: u64,
    /// A member of [`KNOWN_QTYPES`], or [`QTYPE_OTHER`].
    pub qtype: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<DnsStatsKey>() == 16);

/// Counters since the entry was created, updated with atomic adds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsStats {
    /// By response code: slots 0..=5 are NOERROR..REFUSED, [`RCODE_OTHER_SLOT`] the rest.
    pub responses: [u64; RCODE_SLOTS],
    /// Responses with the TC bit.
    pub truncated: u64,
    pub latency_sum_ns: u64,
    /// Not cumulative: slot i counts latencies in (bound[i-1], bound[i]].
    pub latency: [u64; LATENCY_SLOTS],
}
const _: () = assert!(size_of::<DnsStats>() == 208);

impl DnsStats {
    pub const ZERO: Self = Self {
        responses: [0; RCODE_SLOTS],
        truncated: 0,
        latency_sum_ns: 0,
        latency: [0; LATENCY_SLOTS],
    };
}

/// Slots of each CPU's statistics cache (`CW_DNS_STATS_CPU`).
pub const STATS_CACHE_SLOTS: u32 = 64;
const _: () = assert!(STATS_CACHE_SLOTS.is_power_of_two());

/// A slot of a CPU's statistics cache (`CW_DNS_STATS_CPU`): the counts of one (cgroup, query
/// type) answered on that CPU. The kernel counts an answer here, with plain adds, when the slot
/// its key hashes to holds that key or can be taken; otherwise in the shared table `CW_DNS_STATS`.
/// The rule for taking a slot, and the epoch (`config::DNS_STATS_EPOCH`) it relies on, are
/// [`crate::stats`]'s.
pub type DnsStatsSlot = CacheSlot<DnsStatsKey, DnsStats>;
const _: () = assert!(size_of::<DnsStatsSlot>() == 232);

impl CountKey for DnsStatsKey {
    #[inline(always)]
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        self.cgroup_id == other.cgroup_id && self.qtype == other.qtype
    }
    #[inline(always)]
    fn cache_slot(&self) -> u32 {
        stats_cache_slot(self.cgroup_id, self.qtype)
    }
}

// SAFETY: repr(C), u64s and arrays of u64s only: 8 + 1 + 1 + 16 of them.
unsafe impl Counts for DnsStats {
    const ZERO: Self = Self::ZERO;
    const COUNTERS: usize = RCODE_SLOTS + 2 + LATENCY_SLOTS;
}

/// The cache slot of (cgroup, known query type).
#[inline(always)]
pub const fn stats_cache_slot(cgroup_id: u64, qtype: u16) -> u32 {
    cache_slot_of(cgroup_id, qtype, STATS_CACHE_SLOTS)
}

/// The histogram slot of a latency (reference for the kernel's branch-free version).
pub fn latency_slot(ns: u64) -> usize {
    LATENCY_BOUNDS_NS.iter().filter(|&&b| ns > b).count()
}

/// Buckets of the pending-query table; a query's bucket comes from its socket cookie and
/// transaction id ([`pending_bucket`]).
pub const PENDING_BUCKETS: u32 = 4096;
/// Slots per bucket: a query takes a free slot of its bucket, so only a bucket with all of them
/// waiting refuses a query (counted as `dns_pending_table_full`).
pub const PENDING_WAYS: u32 = 4;
pub const PENDING_TABLE_SIZE: u32 = PENDING_BUCKETS * PENDING_WAYS;
const _: () = assert!(PENDING_BUCKETS.is_power_of_two());

/// Adjacent buckets one socket's queries spread over, by the low bits of their transaction ids.
pub const PENDING_SOCKET_BUCKETS: u32 = 256;
const _: () =
    assert!(PENDING_SOCKET_BUCKETS.is_power_of_two() && PENDING_SOCKET_BUCKETS <= PENDING_BUCKETS);

/// The first slot of the bucket of the query (socket cookie, transaction id): the socket's region
/// by a multiplicative hash of its cookie (consecutive cookies land far apart), then one of
/// [`PENDING_SOCKET_BUCKETS`] adjacent buckets by the id. A busy socket's queries and answers so
/// touch the same 32 KiB of the table, which stays in the CPU's cache, instead of a random line of
/// its 512 KiB each time (figures in docs/benchmarks.md, "Figures behind design choices"); one
/// socket still has 1,024 slots for queries in flight (c-ares sends many over one socket; glibc,
/// Go, CoreDNS, dnsmasq and unbound use a socket per query or two).
#[inline(always)]
pub const fn pending_bucket(cookie: u64, id: u16) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let region = (cookie.wrapping_mul(K) >> (64 - PENDING_BUCKETS.trailing_zeros())) as u32;
    let bucket = (region + (id as u32 & (PENDING_SOCKET_BUCKETS - 1))) & (PENDING_BUCKETS - 1);
    bucket * PENDING_WAYS
}

/// A slot of the pending-query table (an array the agent maps into its memory): a query waiting
/// for its response. Free while `query_ns` is 0.
///
/// Who frees a slot, so that each query is counted exactly once: the kernel, when the answer
/// comes within the DNS timeout (`config::DNS_TIMEOUT_MS`); an answer after that is not counted
/// and the slot is left to userspace, which frees slots older than the timeout plus a margin with
/// a compare-and-exchange of `query_ns` (which fails if the query was sent again meanwhile) and
/// counts them as timeouts. The kernel writes `query_ns` last, after the other fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsPendingSlot {
    /// When the query was sent (CLOCK_MONOTONIC, ns); 0: free.
    pub query_ns: u64,
    pub cookie: u64,
    pub cgroup_id: u64,
    pub id: u16,
    pub qtype: u16,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<DnsPendingSlot>() == 32);

/// [`DnsEvent::event`] value: an answered query (the only kind there is).
pub const EVENT_RESPONSE: u8 = 2;

/// [`DnsEvent::flags`] bits.
pub const FLAG_TCP: u8 = 1;
/// Response had the TC (truncated) bit: the resolver will retry over TCP.
pub const FLAG_TRUNCATED: u8 = 2;

/// A response matched to its query, with the response's question section copied raw (the
/// name in wire format first; userspace validates it). Sent for NXDOMAIN answers, or for every
/// answer when [`crate::names::config::DNS_ALL_NAMES`] is set; everything else is counted in
/// the kernel ([`DnsStats`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub cookie: u64,
    pub cgroup_id: u64,
    /// Response: query to response, nanoseconds.
    pub latency_ns: u64,
    pub ktime_ns: u64,
    pub id: u16,
    pub qtype: u16,
    pub ancount: u16,
    pub event: u8,
    pub flags: u8,
    pub rcode: u8,
    /// Bytes of `name` copied from the packet (the question, possibly more than its name).
    pub name_len: u8,
    pub _pad: [u8; 6],
    pub name: [u8; NAME_BUF],
}
const _: () = assert!(size_of::<DnsEvent>() == 304);

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets from `from` to `to`, going up and wrapping around the table.
    fn distance(from: u32, to: u32) -> u32 {
        (to / PENDING_WAYS + PENDING_BUCKETS - from / PENDING_WAYS) % PENDING_BUCKETS
    }

    #[test]
    fn a_sockets_queries_stay_in_its_region_and_use_all_of_it() {
        for cookie in [1u64, 2, 4097, 0xdead_beef, u64::MAX] {
            let first = pending_bucket(cookie, 0);
            let mut used = std::collections::HashSet::new();
            for id in 0..=u16::MAX {
                let slot = pending_bucket(cookie, id);
                assert_eq!(slot % PENDING_WAYS, 0);
                assert!(slot < PENDING_TABLE_SIZE);
                assert!(distance(first, slot) < PENDING_SOCKET_BUCKETS, "{cookie} {id}");
                used.insert(slot);
            }
            assert_eq!(used.len() as u32, PENDING_SOCKET_BUCKETS);
        }
    }

    #[test]
    fn consecutive_cookies_land_in_different_regions() {
        // Sockets made one after another (consecutive cookies) must not share buckets, or a few
        // busy clients would fill each other's.
        let regions: Vec<u32> = (1..=16u64).map(|c| pending_bucket(c, 0)).collect();
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                let apart = distance(*a, *b).min(distance(*b, *a));
                assert!(apart >= PENDING_SOCKET_BUCKETS / 4, "{regions:?}");
            }
        }
    }
}
