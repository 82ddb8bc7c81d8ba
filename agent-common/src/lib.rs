//! Everything that crosses the kernel/userspace boundary: map and program names, the map key and
//! value layouts, and the event the kernel sends. One Rust type per layout, used by both sides.
//!
//! Every struct is `#[repr(C)]` with explicit padding fields (hash-map keys must be fully
//! initialised) and a size assertion next to it, so a layout change cannot go unnoticed.
//!
//! No type here can carry raw payload bytes: the only text that crosses is an IAM role name,
//! validated in the kernel against the IAM role-name alphabet. Credential secrets never leave the
//! kernel (see SECURITY.md).
#![cfg_attr(not(test), no_std)]

pub mod dfa;
pub mod dns;
pub mod linklocal;
pub mod names;
pub mod sdk;
pub mod stats;
pub mod tcp;

use core::mem::size_of;

/// Longest IAM role name (AWS limit: 64 characters).
pub const ROLE_MAX: usize = 64;

/// Bit set in [`names::MAP_PORTS`] for a TCP port that some metadata endpoint listens on.
pub const PORT_FLAG_METADATA: u8 = 1;
/// Bit set in [`names::MAP_PORTS`] for a DNS server port (UDP and TCP).
pub const PORT_FLAG_DNS: u8 = 2;
/// Bit set in [`names::MAP_PORTS`] for the port of a configured link-local service stand-in whose
/// address is outside the link-local prefixes (a loopback metadata endpoint, `--ntp-endpoint`,
/// `--vpc-resolver`): packets to it are looked up in [`names::MAP_LINKLOCAL_SERVICES`]. Packets to
/// 169.254.0.0/16 and fd00:ec2::/64 are looked up whatever their port.
pub const PORT_FLAG_LINKLOCAL: u8 = 4;

/// Entries of [`names::MAP_PORTS`]: every port's flags, 4 bits each, 16 ports to a `u64` entry
/// (32 KiB). The fast path looks up the service-side port of every TCP and UDP packet, which for
/// half of a connection's packets is the client's ephemeral port: a different entry for every
/// connection. A byte per port in an array (whose entries the kernel rounds up to 8 bytes) is
/// 512 KiB, as big as a core's L2 cache, and those lookups missed it.
pub const PORT_WORDS: u32 = 65_536 / 16;

/// The [`names::MAP_PORTS`] entry holding `port`'s flags.
#[inline(always)]
pub const fn port_word(port: u16) -> u32 {
    (port >> 4) as u32
}

/// `port`'s flags in its entry `word` (see [`port_word`]).
#[inline(always)]
pub const fn port_flags(word: u64, port: u16) -> u8 {
    ((word >> ((port & 15) * 4)) & 0xf) as u8
}

/// `word` with `flag` added to `port`'s flags.
pub const fn with_port_flag(word: u64, port: u16, flag: u8) -> u64 {
    word | ((flag as u64 & 0xf) << ((port & 15) * 4))
}

/// Capacity of the per-socket flow table (LRU: the oldest idle flow is evicted first).
pub const FLOW_TABLE_SIZE: u32 = 16_384;
/// Capacity of the metadata endpoint table.
pub const ENDPOINT_TABLE_SIZE: u32 = 64;
/// Capacity of the cgroup → parent table ([`names::MAP_CGROUP_PARENTS`], LRU): more than the
/// cgroups that send DNS queries on a node at once (a few per pod, at most a few hundred pods).
pub const CGROUP_PARENTS_TABLE_SIZE: u32 = 8_192;
/// Ring buffer size in bytes (a power of two, multiple of the page size). Userspace reads the
/// rings every 25 ms; 1 MiB holds about 8,000 metadata events, so a storm must pass ~300k
/// requests/s (or the agent stall for a second at 8k/s) before one is lost.
pub const EVENT_RING_BYTES: u32 = 1024 * 1024;

/// A metadata endpoint: IPv6 address (IPv4 as `::ffff:a.b.c.d`) and TCP port in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<EndpointKey>() == 20);

impl EndpointKey {
    pub const fn new(addr: [u8; 16], port: u16) -> Self {
        Self { addr, port, _pad: [0; 2] }
    }

    /// The IPv4-mapped IPv6 form the kernel programs use for IPv4 addresses.
    pub const fn v4(octets: [u8; 4], port: u16) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self::new(addr, port)
    }

    /// From an address as four 32-bit words in memory order (IPv6, IPv4-mapped for IPv4): built
    /// with word stores, where a field-by-field key with its zero padding can become a `memset`
    /// call in a BPF program.
    #[inline(always)]
    pub const fn from_words(addr: [u32; 4], port: u16) -> Self {
        // SAFETY: EndpointKey is 20 bytes of integers (no invalid bit pattern) and [u32; 5] is
        // 20 bytes; on a little-endian target the fifth word's low half is `port`, its high half
        // the zero padding.
        unsafe {
            core::mem::transmute::<[u32; 5], Self>([
                addr[0],
                addr[1],
                addr[2],
                addr[3],
                port as u32,
            ])
        }
    }
}

// The word-based key constructors (`EndpointKey::from_words`, `tcp::TcpStatsKey::new`,
// `tcp::ListenerKey::from_words`) lay fields out as a little-endian target does; the BPF target
// is bpfel, and the agent runs on x86_64 and aarch64.
const _: () = assert!(cfg!(target_endian = "little"));

/// The word, in memory order, that makes an address IPv4-mapped (`::ffff:0:0/96`'s third word).
pub const MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Which service an endpoint is; a label on every metadata metric.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    Imds = 0,
    Ecs = 1,
    PodIdentity = 2,
    Custom = 3,
}

impl EndpointKind {
    pub const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Imds,
            1 => Self::Ecs,
            2 => Self::PodIdentity,
            _ => Self::Custom,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Imds => "imds",
            Self::Ecs => "ecs",
            Self::PodIdentity => "pod_identity",
            Self::Custom => "custom",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointValue {
    pub kind: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<EndpointValue>() == 4);

/// What a request asked for, decided in the kernel from the method and path.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Any other metadata path.
    Metadata = 0,
    /// `PUT /latest/api/token` (IMDSv2 session token).
    Token = 1,
    /// `GET /latest/meta-data/iam/security-credentials/` (the role list).
    RoleList = 2,
    /// A credential document: IMDS role credentials, ECS task credentials, Pod Identity.
    Credentials = 3,
}

impl RequestKind {
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Token,
            2 => Self::RoleList,
            3 => Self::Credentials,
            _ => Self::Metadata,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Token => "token",
            Self::RoleList => "role_list",
            Self::Credentials => "credentials",
        }
    }
}

/// Where the credentials' identity comes from, since only IMDS paths name the role.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// Not a credential request.
    None = 0,
    /// IMDS: the role name is in [`MetadataEvent::role`].
    ImdsRole = 1,
    /// ECS-style container credentials (`/v2/credentials/…`, or any full URI).
    EcsTask = 2,
    /// EKS Pod Identity (`/v1/credentials`).
    PodIdentity = 3,
}

impl CredentialSource {
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::ImdsRole,
            2 => Self::EcsTask,
            3 => Self::PodIdentity,
            _ => Self::None,
        }
    }
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get = 0,
    Put = 1,
    Other = 2,
}

/// Kinds of [`MetadataEvent`].
pub const EVENT_RESPONSE: u8 = 1;
pub const EVENT_EXPIRATION: u8 = 2;
/// The request got no response status line: its connection ended first (the server closed or
/// reset it, or the client reset it), or it arrived after `--metadata-timeout`.
pub const EVENT_NO_RESPONSE: u8 = 3;

/// Flags in [`MetadataEvent::flags`] and [`Flow::flags`]. The first three are the header
/// automaton's own flags (`dfa::headers`), ORed in as it finds them.
pub const FLAG_IMDSV2_TOKEN: u8 = dfa::headers::FLAG_TOKEN;
/// The request's header block has ended.
pub const FLAG_HEADERS_END: u8 = dfa::headers::FLAG_END;
/// Another request followed this one in the same bytes (pipelining).
pub const FLAG_PIPELINED: u8 = dfa::headers::FLAG_PIPELINED;
/// A GET to a container endpoint (`ecs`, `pod_identity`, `custom`) on a path that names no kind:
/// a credential fetch if its `200` response carries `"Expiration"`, else a metadata request.
/// The response's event waits until that is known.
pub const FLAG_CANDIDATE: u8 = 8;

/// One event per metadata response (status and time to first byte) and one per credential
/// document whose `"Expiration"` the kernel found. No payload bytes: the expiration arrives as
/// the packed decimal `YYYYMMDDhhmmss` built from its digits.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MetadataEvent {
    pub cgroup_id: u64,
    /// Request to first response byte, nanoseconds.
    pub latency_ns: u64,
    /// `YYYYMMDDhhmmss` as a decimal number, 0 when not an expiration event.
    pub expiration: u64,
    /// `bpf_ktime_get_ns` at the event, to place it in wall-clock time in userspace.
    pub ktime_ns: u64,
    pub event: u8,
    pub endpoint: u8,
    pub kind: u8,
    pub method: u8,
    pub source: u8,
    pub flags: u8,
    pub status: u16,
    pub role_len: u8,
    /// The client's `sdk::Sdk` id, from its `User-Agent` (never the header itself).
    pub sdk: u8,
    pub _pad: [u8; 6],
    pub role: [u8; ROLE_MAX],
}
const _: () = assert!(size_of::<MetadataEvent>() == 112);

/// Flow phase in [`Flow::phase`].
pub const PHASE_REQUEST_SENT: u8 = 1;
pub const PHASE_RESPONDING: u8 = 2;
/// The response started after `--metadata-timeout`: userspace counts the request unanswered.
pub const PHASE_LATE: u8 = 3;

/// Per-socket state between a request and its response, keyed by socket cookie. Userspace reads
/// the table to count requests left unanswered past `--metadata-timeout` (and removes those).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Flow {
    pub cgroup_id: u64,
    pub request_ns: u64,
    /// First byte of the response: a candidate credential response's event is sent once the
    /// document has been read, with the latency to this byte.
    pub response_ns: u64,
    pub expiration: u64,
    /// TCP sequence number of the request's first segment (a retransmission is not a new request).
    pub request_seq: u32,
    /// Next in-order request sequence number while the header block continues.
    pub request_next_seq: u32,
    /// Next in-order response sequence number while scanning the body.
    pub response_next_seq: u32,
    /// Status of a candidate response whose event waits (0: none waits).
    pub status: u16,
    pub phase: u8,
    pub endpoint: u8,
    pub kind: u8,
    pub method: u8,
    pub source: u8,
    pub flags: u8,
    /// State of the `dfa::expiration` automaton for this response.
    pub scan: u8,
    pub role_len: u8,
    /// State of the `dfa::headers` automaton for this request.
    pub header: u8,
    /// The `sdk::Sdk` id that automaton found (0 until a `User-Agent` is read).
    pub sdk: u8,
    pub role: [u8; ROLE_MAX],
}
const _: () = assert!(size_of::<Flow>() == 120);

/// Indexes of the kernel's per-CPU counters ([`names::MAP_COUNTERS`]). Loss and rejects are
/// counted where they happen and exported as `credwatch_events_lost_total` and
/// `credwatch_parse_rejects_total`.
pub mod counter {
    /// Ring buffer full: an event was dropped.
    pub const LOST_RINGBUF_FULL: u32 = 0;
    /// Flow table insert failed.
    pub const LOST_FLOW_TABLE: u32 = 1;
    /// Payload to a metadata port that is not an HTTP request.
    pub const REJECT_NOT_HTTP: u32 = 2;
    /// Request line longer than the kernel parses.
    pub const REJECT_REQUEST_LINE: u32 = 3;
    /// Role name with characters outside the IAM alphabet, or too long.
    pub const REJECT_BAD_ROLE: u32 = 4;
    /// Response from a metadata endpoint on a socket with no request seen.
    pub const REJECT_NO_REQUEST: u32 = 5;
    /// Response that does not start with an HTTP status line.
    pub const REJECT_BAD_STATUS: u32 = 6;
    /// Credential document ended with no `"Expiration"`.
    pub const REJECT_NO_EXPIRATION: u32 = 7;
    /// `"Expiration"` value not shaped like `YYYY-MM-DDThh:mm:ss`.
    pub const REJECT_BAD_TIMESTAMP: u32 = 8;
    /// Response segment out of order: the expiration search for that response stops.
    pub const REJECT_OUT_OF_ORDER: u32 = 9;
    /// Segment longer than the kernel scans (a response body, or a request's header block).
    pub const REJECT_SCAN_LIMIT: u32 = 10;
    /// Retransmitted segment (ignored, counted for visibility).
    pub const RETRANSMIT: u32 = 11;
    /// DNS event dropped: its ring buffer was full.
    pub const LOST_DNS_RINGBUF_FULL: u32 = 12;
    /// DNS pending-query table insert failed.
    pub const LOST_DNS_PENDING_TABLE: u32 = 13;
    /// DNS message shorter than its 12-byte header (or the TCP length prefix).
    pub const DNS_MALFORMED_HEADER: u32 = 14;
    /// DNS query whose question count is not 1, or a query with the response bit set.
    pub const DNS_MALFORMED_QDCOUNT: u32 = 15;
    /// Label longer than 63 bytes.
    pub const DNS_MALFORMED_LABEL: u32 = 16;
    /// Name longer than 255 bytes, or the question runs past the packet.
    pub const DNS_MALFORMED_NAME: u32 = 17;
    /// Compression pointer in a query's question (a query has nothing to point to).
    pub const DNS_MALFORMED_POINTER: u32 = 18;
    /// Response whose query the kernel did not see (sent before the agent started, or evicted).
    pub const DNS_UNMATCHED_RESPONSE: u32 = 19;
    /// TCP event (a new key's) dropped: its ring buffer was full. The counts are not affected.
    pub const LOST_TCP_RINGBUF_FULL: u32 = 20;
    /// TCP pending-connect or listener table insert failed.
    pub const LOST_TCP_TABLE: u32 = 21;
    /// DNS per-cgroup statistics table full: a response was not counted.
    pub const LOST_DNS_STATS_TABLE: u32 = 22;
    /// A request that followed another on a connection before its response (pipelining): the
    /// first is counted and matched to its response; the ones after it only here.
    pub const REJECT_PIPELINED: u32 = 23;
    /// A response that began after `--metadata-timeout`: its request is counted unanswered.
    pub const REJECT_LATE_RESPONSE: u32 = 24;
    /// TCP per-cgroup statistics table full: a connect or accept was not counted.
    pub const LOST_TCP_STATS_TABLE: u32 = 25;
    /// Link-local per-(cgroup, service) table full: a packet was counted in the per-second
    /// totals but not for its workload.
    pub const LOST_LINKLOCAL_TABLE: u32 = 26;
    pub const COUNT: u32 = 27;
}

/// Bytes of payload the kernel copies at once for parsing (a power of two: indexes are masked).
pub const SCRATCH_LEN: usize = 512;
/// Most response bytes one segment is scanned for `"Expiration"`.
pub const SCAN_MAX_BYTES: usize = 8 * SCRATCH_LEN;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain `repr(C)` data with explicit padding, valid for any bit pattern.
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for EndpointValue {}
    unsafe impl aya::Pod for MetadataEvent {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for crate::dns::DnsPendingSlot {}
    unsafe impl aya::Pod for crate::dns::DnsEvent {}
    unsafe impl aya::Pod for crate::dns::DnsStatsKey {}
    unsafe impl aya::Pod for crate::dns::DnsStats {}
    unsafe impl aya::Pod for crate::dns::DnsStatsSlot {}
    unsafe impl aya::Pod for crate::tcp::PendingConnect {}
    unsafe impl aya::Pod for crate::tcp::ListenerKey {}
    unsafe impl aya::Pod for crate::tcp::TcpEvent {}
    unsafe impl aya::Pod for crate::tcp::TcpStatsKey {}
    unsafe impl aya::Pod for crate::tcp::TcpStats {}
    unsafe impl aya::Pod for crate::tcp::TcpStatsSlot {}
    unsafe impl aya::Pod for crate::linklocal::ServiceValue {}
    unsafe impl aya::Pod for crate::linklocal::PacketsKey {}
    unsafe impl aya::Pod for crate::linklocal::SecondSlot {}
}

/// The secrets guarantee, by construction: every type the kernel hands to userspace (ring-buffer
/// events, and map values a reader of the maps could see) is destructured here field by field,
/// without `..`. Adding a field fails to compile until it is listed here, which is the moment
/// to show it cannot carry payload bytes and to update SECURITY.md.
#[cfg(test)]
mod boundary {
    use super::*;
    use crate::{
        dns::{DnsEvent, DnsPendingSlot, DnsStats, DnsStatsKey, DnsStatsSlot},
        linklocal::{PacketsKey, SecondSlot, ServiceValue},
        tcp::{
            ListenerCache, ListenerKey, PendingConnect, TcpEvent, TcpStats, TcpStatsKey,
            TcpStatsSlot,
        },
    };

    /// All-zero value of a plain-old-data boundary type.
    fn zeroed<T: Copy>() -> T {
        // SAFETY: only used on the repr(C) integer/array types below, valid for any bits.
        unsafe { core::mem::zeroed() }
    }

    #[test]
    fn only_known_fields_cross_and_only_two_hold_bytes_from_packets() {
        // Metadata: integers, enums as u8, and the role name. The role is the only field filled
        // from payload bytes, and only from the *request* path after every byte passed the IAM
        // role-name check (`[A-Za-z0-9+=,.@_-]`, at most ROLE_MAX); the expiration is a number
        // built from 14 digits; `sdk` is an id the header automaton's table sets (`sdk::Sdk`,
        // 0..=17), never a byte of the User-Agent. Nothing from a response body is copied.
        let MetadataEvent {
            cgroup_id: _,
            latency_ns: _,
            expiration: _,
            ktime_ns: _,
            event: _,
            endpoint: _,
            kind: _,
            method: _,
            source: _,
            flags: _,
            status: _,
            role_len: _,
            sdk: _,
            _pad,
            role,
        } = zeroed();
        assert_eq!((role.len(), _pad.len()), (ROLE_MAX, 6));
        // The flow table is read by userspace (unanswered requests): integers, automaton
        // states, and the same validated role.
        let Flow {
            cgroup_id: _,
            request_ns: _,
            response_ns: _,
            expiration: _,
            request_seq: _,
            request_next_seq: _,
            response_next_seq: _,
            status: _,
            phase: _,
            endpoint: _,
            kind: _,
            method: _,
            source: _,
            flags: _,
            scan: _,
            role_len: _,
            header: _,
            sdk: _,
            role,
        } = zeroed();
        assert_eq!(role.len(), ROLE_MAX);
        // DNS: the question of a response from a DNS server port (never the metadata ports),
        // copied raw; userspace validates it as a wire-format name. Sent only for NXDOMAIN
        // answers, or for every answer with --dns-top-names.
        let DnsEvent {
            cookie: _,
            cgroup_id: _,
            latency_ns: _,
            ktime_ns: _,
            id: _,
            qtype: _,
            ancount: _,
            event: _,
            flags: _,
            rcode: _,
            name_len: _,
            _pad,
            name,
        } = zeroed();
        assert_eq!((name.len(), _pad.len()), (dns::NAME_BUF, 6));
        let DnsPendingSlot { query_ns: _, cookie: _, cgroup_id: _, id: _, qtype: _, _pad } =
            zeroed();
        // DNS statistics: counts and latency sums per cgroup and query type.
        let DnsStatsKey { cgroup_id: _, qtype: _, _pad } = zeroed();
        let DnsStats { responses: _, truncated: _, latency_sum_ns: _, latency: _ } = zeroed();
        let DnsStatsSlot { key: _, active_epoch: _, stats: _ } = zeroed();
        // TCP: counts per (cgroup, destination class), a class decided from the address and port
        // given to connect(), no address and no payload at all.
        let TcpEvent { cgroup_id: _, event: _, class: _, _pad } = zeroed();
        let PendingConnect { cookie: _, start_ns: _, cgroup_id: _, class: _, expired: _, _pad } =
            zeroed();
        let TcpStatsKey { cgroup_id: _, class: _, _pad } = zeroed();
        let TcpStats { connects: _, accepts: _, latency_sum_ns: _, latency: _ } = zeroed();
        let TcpStatsSlot { key: _, active_epoch: _, stats: _ } = zeroed();
        let ListenerKey { netns: _, addr: _, port: _, _pad } = zeroed();
        let ListenerCache { generation: _, key: _, owner: _ } = zeroed();
        // Endpoint table: configured by userspace.
        let EndpointKey { addr: _, port: _, _pad } = zeroed();
        let EndpointValue { kind: _, _pad } = zeroed();
        // Link-local packet counts: a cgroup id, a service number and packet counts; the service
        // table is configured by userspace. No payload, no address.
        let PacketsKey { cgroup_id: _, service: _, _pad } = zeroed();
        let SecondSlot { second: _, packets: _ } = zeroed();
        let ServiceValue { service: _, _pad } = zeroed();
    }

    #[test]
    fn the_boundary_maps_are_the_declared_ones() {
        // CW_SCRATCH is the only map that ever holds payload bytes (wiped after every use,
        // write-only for the agent's descriptor); the agent never reads it.
        assert!(names::MAPS.contains(&names::MAP_SCRATCH));
        // CW_DNS_STATS_CPU (14th): counts per (cgroup, query type), no payload (DnsStatsSlot).
        // CW_TCP_STATS and CW_TCP_STATS_CPU (15th, 16th): counts per (cgroup, destination class),
        // no payload (TcpStats); CW_TCP_CIDRS (17th): configured address ranges.
        // CW_LINKLOCAL_SERVICES, _PACKETS, _SECONDS (18th-20th): configuration, and packet counts
        // per (cgroup, service) and per second; no payload (ServiceValue, SecondSlot, u64).
        // CW_CGROUP_PARENTS (21st): cgroup id → parent cgroup id; no payload.
        // CW_TCP_LISTENER_CPU and CW_TCP_LISTEN_GEN (22nd, 23rd): a listener's key (network
        // namespace, local address, port), its cgroup and a generation count; no payload.
        assert_eq!(names::MAPS.len(), 23, "a new map: decide here whether it can hold payload");
    }
}

#[cfg(test)]
mod ports {
    use super::*;

    #[test]
    fn each_port_has_four_bits_of_its_own() {
        let mut words = [0u64; PORT_WORDS as usize];
        let set = [(0, PORT_FLAG_DNS), (15, PORT_FLAG_METADATA), (16, PORT_FLAG_LINKLOCAL)];
        for (port, flag) in set.into_iter().chain([(53, PORT_FLAG_DNS), (65_535, PORT_FLAG_DNS)]) {
            let w = &mut words[port_word(port) as usize];
            *w = with_port_flag(*w, port, flag);
        }
        let w = &mut words[port_word(53) as usize];
        *w = with_port_flag(*w, 53, PORT_FLAG_METADATA);
        for port in 0..=u16::MAX {
            let flags = port_flags(words[port_word(port) as usize], port);
            let expected = match port {
                0 => PORT_FLAG_DNS,
                15 => PORT_FLAG_METADATA,
                16 => PORT_FLAG_LINKLOCAL,
                53 => PORT_FLAG_DNS | PORT_FLAG_METADATA,
                65_535 => PORT_FLAG_DNS,
                _ => 0,
            };
            assert_eq!(flags, expected, "port {port}");
        }
    }
}
