//! TCP connect/accept types shared by the kernel programs and userspace.
use core::mem::size_of;

/// Slots of the connect table, a power of two: a connect in progress takes slot
/// `cookie % CONNECT_TABLE_SIZE` (see `PendingConnect`).
pub const CONNECT_TABLE_SIZE: u32 = 8_192;
pub const LISTENER_TABLE_SIZE: u32 = 16_384;
pub const EVENT_RING_BYTES: u32 = 512 * 1024;

/// A connect in progress, in slot `cookie % CONNECT_TABLE_SIZE` of an array: what the
/// application asked for (before any DNAT), who asked, and when. `start_ns == 0` marks a free
/// slot. A direct-mapped array, not a hash table: connect4 pays one warm store instead of a hash
/// insert (a cold bucket and a lock, most of connect4's time; socket-local storage cost as much;
/// docs/benchmarks.md, "Figures behind design choices"). Two connects in progress whose cookies
/// share a slot: the second is not recorded and is counted lost (`tcp_table_full`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingConnect {
    /// The socket's cookie: which socket holds the slot.
    pub cookie: u64,
    pub start_ns: u64,
    pub cgroup_id: u64,
    /// IPv6, or IPv4-mapped IPv6.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    /// The SYN retransmission timer expired: the attempt ends as a timeout.
    pub expired: u8,
    pub _pad: [u8; 5],
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

pub const RESULT_ESTABLISHED: u8 = 0;
/// Reset by the peer while the SYN was outstanding.
pub const RESULT_REFUSED: u8 = 1;
/// No answer: the SYN retransmission timer gave up.
pub const RESULT_TIMEOUT: u8 = 2;
/// Closed before an answer for another reason: the application gave up (its own connect
/// timeout), or an ICMP error.
pub const RESULT_ERROR: u8 = 3;

pub const EVENT_CONNECT: u8 = 1;
pub const EVENT_ACCEPT: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpEvent {
    pub cgroup_id: u64,
    /// Connect: connect() to established or closed, nanoseconds.
    pub latency_ns: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub event: u8,
    pub result: u8,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<TcpEvent>() == 40);
