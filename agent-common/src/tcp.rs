//! TCP connect/accept types shared by the kernel programs and userspace.
use core::mem::size_of;

use crate::stats::{CacheSlot, CountKey, Counts, cache_slot_of};

/// Slots of the connect table, a power of two: a connect in progress takes slot
/// `cookie % CONNECT_TABLE_SIZE` (see `PendingConnect`).
pub const CONNECT_TABLE_SIZE: u32 = 8_192;
pub const LISTENER_TABLE_SIZE: u32 = 16_384;
/// Only new keys are sent (`TcpEvent`): a few per pod and CPU.
pub const EVENT_RING_BYTES: u32 = 256 * 1024;

/// A connect in progress, in slot `cookie % CONNECT_TABLE_SIZE` of an array: who asked, when,
/// and the class of the destination the application asked for (decided where the connect is
/// recorded, `sock_ops`' TCP_CONNECT_CB or connect4, before any DNAT). `start_ns == 0` marks a
/// free slot. A direct-mapped array, not a hash table: the recording
/// pays one warm store instead of a hash insert (a cold bucket and a lock, most of connect4's
/// time; socket-local storage cost as much; docs/benchmarks.md, "Figures behind design
/// choices"). Two connects in progress whose cookies share a slot: the second is not recorded and
/// is counted lost (`tcp_table_full`).
///
/// 48 bytes, cookie and start first: the table tests write slots of this shape with bpftool
/// (tests/scenarios/test_tcp.py); bytes 26..48 are unused.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingConnect {
    /// The socket's cookie: which socket holds the slot.
    pub cookie: u64,
    /// CLOCK_MONOTONIC: coarse where `sock_ops` records connects, precise where connect4 does.
    pub start_ns: u64,
    pub cgroup_id: u64,
    /// `CLASS_*`: where the application asked to connect.
    pub class: u8,
    /// The SYN retransmission timer expired: the attempt ends as a timeout.
    pub expired: u8,
    pub _pad: [u8; 22],
}
const _: () = assert!(size_of::<PendingConnect>() == 48);

/// A listening socket: network namespace, local address (all zeros for a wildcard listener;
/// IPv4 as IPv4-mapped) and port → the cgroup that called listen(). The address matters: two
/// pods of one network namespace may listen on the same port of different addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub netns: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<ListenerKey>() == 32);

impl ListenerKey {
    /// From the local address as four 32-bit words in memory order (all zeros for a wildcard
    /// listener; IPv4-mapped for IPv4), with word stores (see `EndpointKey::from_words`).
    #[inline(always)]
    pub const fn from_words(netns: u64, addr: [u32; 4], port: u16) -> Self {
        // SAFETY: ListenerKey is 32 bytes of integers and [u64; 4] is 32 bytes; on a
        // little-endian target the last word's low 16 bits are `port`, the rest the padding.
        unsafe {
            core::mem::transmute::<[u64; 4], Self>([
                netns,
                addr[0] as u64 | (addr[1] as u64) << 32,
                addr[2] as u64 | (addr[3] as u64) << 32,
                port as u64,
            ])
        }
    }

    /// The key as four words (its bytes: 32 bytes of integers, the padding zeros as
    /// `from_words`, the only constructor the kernel programs use, writes it).
    #[inline(always)]
    pub const fn words(&self) -> [u64; 4] {
        // SAFETY: ListenerKey is 32 bytes of integers and [u64; 4] is 32 bytes.
        unsafe { core::mem::transmute::<Self, [u64; 4]>(*self) }
    }

    /// Whether `other` is the same key, in four word comparisons, written out as
    /// `CountKey::same` is: `==` compares the address byte by byte, and on arrays can become a
    /// `bcmp` call, which BPF has not.
    #[inline(always)]
    pub const fn same(&self, other: &Self) -> bool {
        let (a, b) = (self.words(), other.words());
        a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
    }
}

/// Each CPU's last accept attribution (`PerCpuArray`, one entry), in front of the listener
/// table: a busy server accepts on few listeners, and the check here (a generation and four
/// words compared) costs a fraction of hashing a 32-byte key once or twice (the exact address,
/// then the wildcard). `generation`: the listener table's generation when `owner` was looked up
/// (`CW_TCP_LISTEN_GEN`, bumped by every listen()), so any new listener makes every CPU's entry
/// stale; entries do not go stale otherwise, since the table only ever gains or replaces
/// listeners (an LRU eviction only forgets one the entry still names rightly).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ListenerCache {
    pub generation: u64,
    /// The accepted socket's local address (so an exact listener's key, or the key a wildcard
    /// listener answered for).
    pub key: ListenerKey,
    /// The listener's cgroup, 0 when no recorded listener owns the key.
    pub owner: u64,
}
const _: () = assert!(size_of::<ListenerCache>() == 48);

pub const RESULT_ESTABLISHED: u8 = 0;
/// Reset by the peer while the SYN was outstanding.
pub const RESULT_REFUSED: u8 = 1;
/// No answer: the SYN retransmission timer gave up.
pub const RESULT_TIMEOUT: u8 = 2;
/// Closed before an answer for another reason: the application gave up (its own connect
/// timeout), or an ICMP error.
pub const RESULT_ERROR: u8 = 3;

/// Destination classes (`TcpStatsKey::class`), decided in connect4 from the address and port
/// the application passed to connect(), most specific first: a configured metadata endpoint
/// (address and port, `CW_ENDPOINTS`), a DNS port (`CW_PORTS`), a configured cluster or AWS API
/// range (`CW_TCP_CIDRS`, whose values userspace computes so that the longest matching prefix
/// gives the first class in this order), loopback, anything else. Userspace names them.
pub const CLASS_EXTERNAL: u8 = 0;
pub const CLASS_LOOPBACK: u8 = 1;
pub const CLASS_CLUSTER: u8 = 2;
pub const CLASS_AWS_API: u8 = 3;
pub const CLASS_DNS: u8 = 4;
pub const CLASS_METADATA: u8 = 5;
/// Not a destination: the key accepted connections are counted under.
pub const CLASS_ACCEPTED: u8 = 6;

/// Entries of the range table `CW_TCP_CIDRS` (an LPM trie keyed by IPv6 address, IPv4 as
/// IPv4-mapped; value: a `CLASS_*`, or [`CLASS_EXTERNAL`] for a range that only hides a wider
/// IPv6 range from IPv4-mapped addresses).
pub const CIDR_TABLE_SIZE: u32 = 1_024;

/// (cgroup, class) pairs counted at once; a cgroup has one per class it connects to, and one for
/// its accepts.
pub const STATS_TABLE_SIZE: u32 = 16_384;
/// Slots of each CPU's statistics cache (`CW_TCP_STATS_CPU`).
pub const STATS_CACHE_SLOTS: u32 = 64;
const _: () = assert!(STATS_CACHE_SLOTS.is_power_of_two());

/// Upper bounds (inclusive, nanoseconds) of the connect-latency histogram's buckets: those of
/// `credwatch_tcp_connect_duration_seconds` (loopback connects take tens of microseconds,
/// cross-zone ones milliseconds, SYN retries seconds). Slot `LATENCY_BOUNDS_NS.len()` holds what
/// is above the last (+Inf).
pub const LATENCY_BOUNDS_NS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    3_000_000_000,
    10_000_000_000,
];
/// Histogram slots: the bounds, +Inf, and one unused so that indexes can be masked.
pub const LATENCY_SLOTS: usize = 16;
const _: () = assert!(LATENCY_BOUNDS_NS.len() < LATENCY_SLOTS);

/// Results (`TcpStats::connects` slots).
pub const RESULTS: usize = 4;

/// Connects of one cgroup to one class, or (class [`CLASS_ACCEPTED`]) its accepted connections.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpStatsKey {
    pub cgroup_id: u64,
    pub class: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<TcpStatsKey>() == 16);

impl TcpStatsKey {
    /// With word stores (see `EndpointKey::from_words`).
    #[inline(always)]
    pub const fn new(cgroup_id: u64, class: u8) -> Self {
        // SAFETY: TcpStatsKey is 16 bytes of integers and [u64; 2] is 16 bytes; on a
        // little-endian target the second word's low byte is `class`, the rest the padding.
        unsafe { core::mem::transmute::<[u64; 2], Self>([cgroup_id, class as u64]) }
    }
}

/// Counters since the entry (or cache slot) was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpStats {
    /// Attempts by `RESULT_*`.
    pub connects: [u64; RESULTS],
    pub accepts: u64,
    /// Established connects only.
    pub latency_sum_ns: u64,
    /// Established connects, not cumulative: slot i counts latencies in (bound[i-1], bound[i]].
    pub latency: [u64; LATENCY_SLOTS],
}
const _: () = assert!(size_of::<TcpStats>() == 176);

impl TcpStats {
    pub const ZERO: Self =
        Self { connects: [0; RESULTS], accepts: 0, latency_sum_ns: 0, latency: [0; LATENCY_SLOTS] };
}

// SAFETY: repr(C), u64s and arrays of u64s only: 4 + 1 + 1 + 16 of them.
unsafe impl Counts for TcpStats {
    const ZERO: Self = TcpStats::ZERO;
    const COUNTERS: usize = RESULTS + 2 + LATENCY_SLOTS;
}

impl CountKey for TcpStatsKey {
    #[inline(always)]
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        self.cgroup_id == other.cgroup_id && self.class == other.class
    }
    #[inline(always)]
    fn cache_slot(&self) -> u32 {
        cache_slot_of(self.cgroup_id, self.class as u16, STATS_CACHE_SLOTS)
    }
}

/// A slot of a CPU's statistics cache (`CW_TCP_STATS_CPU`), in front of `CW_TCP_STATS`; the
/// rule for taking it is [`crate::stats`]'s, with `config::TCP_STATS_EPOCH`.
pub type TcpStatsSlot = CacheSlot<TcpStatsKey, TcpStats>;
const _: () = assert!(size_of::<TcpStatsSlot>() == 200);

/// The histogram slot of a latency: the number of bounds below it.
#[inline(always)]
pub fn latency_slot(ns: u64) -> usize {
    // Most connects are fast: stop at the first bound that holds it (the loop is unrolled).
    let mut slot = 0;
    while slot < LATENCY_BOUNDS_NS.len() && ns > LATENCY_BOUNDS_NS[slot] {
        slot += 1;
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EndpointKey, MAPPED_WORD};

    #[test]
    fn word_built_keys_equal_field_built_ones() {
        let key = TcpStatsKey::new(0x1234_5678_9abc_def0, CLASS_AWS_API);
        assert_eq!(
            key,
            TcpStatsKey { cgroup_id: 0x1234_5678_9abc_def0, class: CLASS_AWS_API, _pad: [0; 7] }
        );
        let ip = u32::from_ne_bytes([10, 1, 2, 3]);
        assert_eq!(
            EndpointKey::from_words([0, 0, MAPPED_WORD, ip], 8080),
            EndpointKey::v4([10, 1, 2, 3], 8080)
        );
        let v6: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        let words: [u32; 4] =
            core::array::from_fn(|i| u32::from_ne_bytes(v6[i * 4..i * 4 + 4].try_into().unwrap()));
        assert_eq!(EndpointKey::from_words(words, 53), EndpointKey::new(v6, 53));
        let ev = TcpEvent::new(9, EVENT_NEW_KEY, CLASS_DNS);
        assert_eq!(
            (ev.cgroup_id, ev.event, ev.class, ev._pad),
            (9, EVENT_NEW_KEY, CLASS_DNS, [0; 6])
        );
        assert_eq!(
            ListenerKey::from_words(7, words, 443),
            ListenerKey { netns: 7, addr: v6, port: 443, _pad: [0; 6] }
        );
    }

    /// The listener cache compares keys with `same` (agent-ebpf's `listener_owner`), through
    /// their words: the words are the key's bytes, and every field takes part.
    #[test]
    fn listener_key_words_are_its_bytes() {
        let v6: [u8; 16] = core::array::from_fn(|i| i as u8 * 16 + 1);
        let key = ListenerKey { netns: 7, addr: v6, port: 443, _pad: [0; 6] };
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_mut(8).zip(key.words()) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        let expected: Vec<u8> =
            [&7u64.to_ne_bytes()[..], &v6, &443u16.to_ne_bytes(), &[0; 6]].concat();
        assert_eq!(bytes[..], expected[..]);
        let others = [
            ListenerKey { netns: 8, ..key },
            ListenerKey { addr: [0; 16], ..key },
            ListenerKey { port: 444, ..key },
        ];
        assert!(key.same(&{ key }));
        for other in others {
            assert!(!other.same(&key), "{other:?}");
        }
    }

    #[test]
    fn latency_slots_follow_the_bounds() {
        assert_eq!(latency_slot(0), 0);
        assert_eq!(latency_slot(100_000), 0, "bounds are inclusive");
        assert_eq!(latency_slot(100_001), 1);
        assert_eq!(latency_slot(10_000_000_000), 13);
        assert_eq!(latency_slot(10_000_000_001), 14, "+Inf");
        assert_eq!(latency_slot(u64::MAX), 14);
        for (i, &b) in LATENCY_BOUNDS_NS.iter().enumerate() {
            assert_eq!(latency_slot(b), i);
            assert_eq!(latency_slot(b + 1), i + 1);
        }
    }
}

/// [`TcpEvent::event`]: a key was counted for the first time on this CPU (a cache slot taken for
/// it, or its shared entry created): userspace may not know its cgroup yet, and resolves it now,
/// while the cgroup still exists, rather than at the next read of the counts.
pub const EVENT_NEW_KEY: u8 = 1;

/// The only record the TCP programs send: nothing per connection (the counts are read from the
/// tables), only what userspace must learn at once.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpEvent {
    pub cgroup_id: u64,
    pub event: u8,
    pub class: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<TcpEvent>() == 16);

impl TcpEvent {
    /// With word stores (see `EndpointKey::from_words`).
    #[inline(always)]
    pub const fn new(cgroup_id: u64, event: u8, class: u8) -> Self {
        // SAFETY: TcpEvent is 16 bytes of integers and [u64; 2] is 16 bytes; on a little-endian
        // target the second word's low bytes are `event` and `class`, the rest the padding.
        unsafe {
            core::mem::transmute::<[u64; 2], Self>([cgroup_id, event as u64 | (class as u64) << 8])
        }
    }
}
