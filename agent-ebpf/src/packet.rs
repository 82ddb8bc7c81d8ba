//! IP and L4 headers of a `cgroup_skb` packet (data starts at the IP header): the fast path's
//! direct header read, and the offsets and socket facts the parsers need.
use agent_common::linklocal::{V4_PREFIX, V6_PREFIX};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_socket_cookie, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: u32 = 8;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;

/// Which side of the connection the watched service (endpoint, DNS server) is on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Egress: the service is the destination.
    ToService,
    /// Ingress: the service is the source.
    FromService,
}

/// Where the L4 header is and what the port flags said.
pub struct L4 {
    pub proto: u8,
    pub v4: bool,
    pub l4_off: usize,
    pub port: u16,
    pub port_flags: u8,
    pub dir: Direction,
}

/// A TCP segment to or from a metadata endpoint, with what the parsers need.
pub struct Segment {
    pub endpoint_kind: u8,
    pub seq: u32,
    pub tcp_flags: u8,
    /// Offset of the TCP payload from the start of the IP header.
    pub payload_off: u32,
    pub payload_len: u32,
    pub cookie: u64,
    pub cgroup_id: u64,
    pub now_ns: u64,
}

/// (protocol, L4 offset, IPv4?, service-side port, destination link-local?)
pub type Headers = (u8, usize, bool, u16, bool);

/// Reads protocol and service-side port straight from the packet: a bounds check against a
/// constant, then plain loads (a helper call per field is several times dearer; this is what keeps
/// the fast path close to an empty program). An IPv4 header without options and the ports take 24
/// bytes, an IPv6 header and the ports 44: every TCP or UDP packet has them. IPv4 options and
/// IPv6 extension headers are not followed (these clients send neither). The port is one 16-bit
/// load (the verifier allows unaligned packet loads where the CPU does, as on x86-64 and arm64).
///
/// On egress it also tells whether the destination is in 169.254.0.0/16 or fd00:ec2::/64 (the
/// link-local services): one 16-bit load and comparison, which every other packet fails.
#[inline(always)]
pub fn headers(ctx: &SkBuffContext, to_service: bool) -> Option<Headers> {
    const V4_LEN: usize = 20 + 4;
    const V6_LEN: usize = IPV6_HEADER_LEN + 4;
    let start = ctx.data();
    if start + V4_LEN > ctx.data_end() {
        return None;
    }
    let at = |off: usize| unsafe { *((start + off) as *const u8) };
    // Bytes as they lie in the packet (network order), compared with constants in that order.
    let u16_at = |off: usize| unsafe { *((start + off) as *const u16) };
    let port_at = |l4: usize| u16::from_be(u16_at(if to_service { l4 + 2 } else { l4 }));
    let first = at(0);
    match first >> 4 {
        4 if first & 0x0f == 5 => {
            let proto = at(9);
            let link_local = to_service && u16_at(16) == u16::from_ne_bytes(V4_PREFIX);
            (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
                .then(|| (proto, 20, true, port_at(20), link_local))
        }
        6 => {
            if start + V6_LEN > ctx.data_end() {
                return None;
            }
            let proto = at(6);
            // fd00:ec2::/64: the first two bytes rule out nearly all other traffic.
            let link_local = to_service
                && u16_at(24) == u16::from_ne_bytes([V6_PREFIX[0], V6_PREFIX[1]])
                && u16_at(26) == u16::from_ne_bytes([V6_PREFIX[2], V6_PREFIX[3]])
                && u16_at(28) | u16_at(30) == 0;
            (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
                .then(|| (proto, IPV6_HEADER_LEN, false, port_at(IPV6_HEADER_LEN), link_local))
        }
        _ => None,
    }
}

/// Offset and length of the L4 payload (TCP: after the header's data offset; UDP: after 8 bytes).
#[inline(always)]
pub fn payload(ctx: &SkBuffContext, l4: &L4) -> Result<(u32, u32), i64> {
    if l4.proto == IPPROTO_TCP {
        tcp_payload(ctx, l4.l4_off)
    } else {
        let off = l4.l4_off as u32 + UDP_HEADER_LEN;
        Ok((off, ctx.len().saturating_sub(off)))
    }
}

#[inline(always)]
pub fn tcp_payload(ctx: &SkBuffContext, l4_off: usize) -> Result<(u32, u32), i64> {
    let data_off = ((ctx.load::<u8>(l4_off + 12)? >> 4) as usize) * 4;
    let off = (l4_off + data_off) as u32;
    Ok((off, ctx.len().saturating_sub(off)))
}

#[inline(always)]
pub fn socket_cookie(ctx: &SkBuffContext) -> u64 {
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

#[inline(always)]
pub fn cgroup_id(ctx: &SkBuffContext) -> u64 {
    unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) }
}
