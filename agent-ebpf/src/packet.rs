//! IP and TCP header parsing for `cgroup_skb` (data starts at the IP header) and the fast path:
//! a packet whose remote port is not a metadata port leaves after two loads and one array
//! lookup, which the verifier inlines.
use agent_common::{EndpointKey, PORT_FLAG_METADATA};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};

use crate::{
    maps::{CW_ENDPOINTS, CW_PORTS},
    request, response,
};

const IPPROTO_TCP: u8 = 6;
const IPV6_HEADER_LEN: usize = 40;
pub const TCP_FIN: u8 = 0x01;

/// Which side of the connection the metadata endpoint is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Egress: the endpoint is the destination.
    ToEndpoint,
    /// Ingress: the endpoint is the source.
    FromEndpoint,
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

pub fn egress(ctx: &SkBuffContext) -> Result<(), i64> {
    if let Some(seg) = metadata_segment(ctx, Direction::ToEndpoint)? {
        request::on_segment(ctx, &seg);
    }
    Ok(())
}

pub fn ingress(ctx: &SkBuffContext) -> Result<(), i64> {
    if let Some(seg) = metadata_segment(ctx, Direction::FromEndpoint)? {
        response::on_segment(ctx, &seg);
    }
    Ok(())
}

/// Returns the segment when it is TCP to (egress) or from (ingress) a configured endpoint.
#[inline(always)]
fn metadata_segment(ctx: &SkBuffContext, dir: Direction) -> Result<Option<Segment>, i64> {
    let first: u8 = ctx.load(0)?;
    let (l4_off, addr_off, v4) = match first >> 4 {
        4 => {
            if ctx.load::<u8>(9)? != IPPROTO_TCP {
                return Ok(None);
            }
            let ihl = ((first & 0x0f) as usize) * 4;
            (
                ihl,
                if dir == Direction::ToEndpoint { 16 } else { 12 },
                true,
            )
        }
        6 => {
            // Extension headers before TCP are not followed: metadata clients do not send them.
            if ctx.load::<u8>(6)? != IPPROTO_TCP {
                return Ok(None);
            }
            (
                IPV6_HEADER_LEN,
                if dir == Direction::ToEndpoint { 24 } else { 8 },
                false,
            )
        }
        _ => return Ok(None),
    };
    let port_off = if dir == Direction::ToEndpoint {
        l4_off + 2
    } else {
        l4_off
    };
    let port = u16::from_be(ctx.load::<u16>(port_off)?);
    match CW_PORTS.get(port as u32) {
        Some(flags) if *flags & PORT_FLAG_METADATA != 0 => {}
        _ => return Ok(None),
    }

    // Slow path: the port is a metadata port; is the address an endpoint?
    let key = if v4 {
        EndpointKey::v4(ctx.load::<[u8; 4]>(addr_off)?, port)
    } else {
        EndpointKey::new(ctx.load::<[u8; 16]>(addr_off)?, port)
    };
    let Some(endpoint) = (unsafe { CW_ENDPOINTS.get(&key) }) else {
        return Ok(None);
    };

    let seq = u32::from_be(ctx.load::<u32>(l4_off + 4)?);
    let data_off = ((ctx.load::<u8>(l4_off + 12)? >> 4) as usize) * 4;
    let tcp_flags: u8 = ctx.load(l4_off + 13)?;
    let payload_off = (l4_off + data_off) as u32;
    let len = ctx.len();
    let payload_len = len.saturating_sub(payload_off);
    let skb = ctx.as_ptr();
    Ok(Some(Segment {
        endpoint_kind: endpoint.kind,
        seq,
        tcp_flags,
        payload_off,
        payload_len,
        cookie: unsafe { bpf_get_socket_cookie(skb) },
        cgroup_id: unsafe { bpf_skb_cgroup_id(skb.cast()) },
        now_ns: unsafe { bpf_ktime_get_ns() },
    }))
}

/// Copies up to `SCRATCH_LEN` payload bytes starting `skip` bytes into the payload into the
/// per-CPU scratch buffer; returns the buffer and how many bytes it holds.
#[inline(always)]
pub fn load_payload(
    ctx: &SkBuffContext,
    seg: &Segment,
    skip: u32,
) -> Option<(&'static mut [u8; agent_common::SCRATCH_LEN], usize)> {
    use agent_common::SCRATCH_LEN;
    let buf = unsafe { &mut *crate::maps::CW_SCRATCH.get_ptr_mut(0)? };
    let remaining = seg.payload_len.checked_sub(skip)? as i64;
    let n = if remaining > SCRATCH_LEN as i64 {
        SCRATCH_LEN as i64
    } else {
        remaining
    };
    // bpf_skb_load_bytes needs a length the verifier can prove is in [1, SCRATCH_LEN].
    if !aya_ebpf::check_bounds_signed(n, 1, SCRATCH_LEN as i64) {
        return None;
    }
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            seg.payload_off + skip,
            buf.as_mut_ptr() as *mut _,
            n as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    Some((buf, n as usize))
}

/// Zeroes the scratch buffer, so payload bytes do not linger in kernel memory after parsing.
#[inline(always)]
pub fn wipe_scratch(buf: &mut [u8; agent_common::SCRATCH_LEN]) {
    let words = buf.as_mut_ptr() as *mut u64;
    for i in 0..agent_common::SCRATCH_LEN / 8 {
        unsafe { words.add(i).write_volatile(0) };
    }
}

/// Runs an automaton over the whole scratch buffer. The iteration count is a constant and the
/// body has no data-dependent branch, so the verifier walks it once per iteration without
/// queueing states; bytes past the loaded length are zero, which every state ignores.
#[inline(always)]
pub fn run_dfa(
    table: &[u16; agent_common::dfa::TABLE_LEN],
    buf: &[u8; agent_common::SCRATCH_LEN],
    mut state: u8,
    mut acc: u64,
) -> (u8, u64) {
    let mut i = 0;
    while i < agent_common::SCRATCH_LEN {
        (state, acc) = agent_common::dfa::step(table, state, acc, buf[i]);
        i += 1;
    }
    (state, acc)
}
