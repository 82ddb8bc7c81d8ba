//! DNS types shared by the kernel parser and userspace.
use core::mem::size_of;

/// Longest name on the wire (RFC 1035: 255 bytes including length bytes and the root label).
pub const NAME_MAX: usize = 255;
/// Bytes of name the event carries (NAME_MAX rounded up; the tail is zero).
pub const NAME_BUF: usize = 256;
/// Most labels a valid name can have (each takes at least 2 bytes).
pub const LABELS_MAX: usize = 128;
/// DNS header length.
pub const HEADER_LEN: usize = 12;

pub const PENDING_TABLE_SIZE: u32 = 16_384;
pub const EVENT_RING_BYTES: u32 = 1024 * 1024;

/// A query waiting for its response: the socket and the transaction id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsPendingKey {
    pub cookie: u64,
    pub id: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<DnsPendingKey>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsPending {
    pub query_ns: u64,
    pub cgroup_id: u64,
    pub qtype: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<DnsPending>() == 24);

/// [`DnsEvent::event`] values.
pub const EVENT_QUERY: u8 = 1;
pub const EVENT_RESPONSE: u8 = 2;

/// [`DnsEvent::flags`] bits.
pub const FLAG_TCP: u8 = 1;
/// Response had the TC (truncated) bit: the resolver will retry over TCP.
pub const FLAG_TRUNCATED: u8 = 2;

/// A query (with its question name, in wire format) or a response matched to its query.
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
    /// Query: bytes of `name` that are the name (length bytes included, root label excluded).
    pub name_len: u8,
    pub _pad: [u8; 6],
    pub name: [u8; NAME_BUF],
}
const _: () = assert!(size_of::<DnsEvent>() == 304);
