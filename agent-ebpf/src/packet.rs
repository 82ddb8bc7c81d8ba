//! IP and L4 header parsing for `cgroup_skb` (data starts at the IP header) and the fast path:
//! a packet whose remote port carries no flag leaves after two or three loads and one array
//! lookup, which the verifier inlines.
use agent_common::{EndpointKey, PORT_FLAG_DNS, PORT_FLAG_METADATA, SCRATCH_LEN, dfa};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};

use crate::{
    dns,
    maps::{CW_ENDPOINTS, CW_PORTS, CW_SCRATCH},
    request, response,
};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: u32 = 8;
pub const TCP_FIN: u8 = 0x01;

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

pub fn egress(ctx: &SkBuffContext) -> Result<(), i64> {
    let Some(l4) = l4(ctx, Direction::ToService)? else {
        return Ok(());
    };
    if l4.port_flags & PORT_FLAG_METADATA != 0
        && l4.proto == IPPROTO_TCP
        && let Some(seg) = metadata_segment(ctx, &l4)?
    {
        request::on_segment(ctx, &seg);
    } else if l4.port_flags & PORT_FLAG_DNS != 0 {
        dns::on_query(ctx, &l4)?;
    }
    Ok(())
}

pub fn ingress(ctx: &SkBuffContext) -> Result<(), i64> {
    let Some(l4) = l4(ctx, Direction::FromService)? else {
        return Ok(());
    };
    if l4.port_flags & PORT_FLAG_METADATA != 0
        && l4.proto == IPPROTO_TCP
        && let Some(seg) = metadata_segment(ctx, &l4)?
    {
        response::on_segment(ctx, &seg);
    } else if l4.port_flags & PORT_FLAG_DNS != 0 {
        dns::on_response(ctx, &l4)?;
    }
    Ok(())
}

/// The fast path: TCP or UDP whose service-side port has a flag, else None.
#[inline(always)]
fn l4(ctx: &SkBuffContext, dir: Direction) -> Result<Option<L4>, i64> {
    let to_service = dir == Direction::ToService;
    // One way of reading the headers only: a second (helper-based) path for rare packets would
    // double every path below for the verifier.
    let Some((proto, l4_off, v4, port)) = headers(ctx, to_service) else {
        return Ok(None);
    };
    let port_flags = match CW_PORTS.get(port as u32) {
        Some(flags) if *flags != 0 => *flags,
        _ => return Ok(None),
    };
    // The header reads above leave the verifier one path per IP version and protocol, each with
    // its own constants (offset 20 or 40, protocol 6 or 17). Linux 6.1 keeps them apart through
    // everything below (the ingress program cost it 814k of its 1M-instruction budget instead of
    // 392k); 6.8 and later merge them. Passed through map memory, which no verifier tracks, they
    // become one path. Only packets for a watched port get here.
    let packed = forget(l4_off as u64 | (u64::from(v4) << 8) | (u64::from(proto) << 16))?;
    let (l4_off, v4, proto) = ((packed & 0xff) as usize, packed & 0x100 != 0, (packed >> 16) as u8);
    Ok(Some(L4 { proto, v4, l4_off, port, port_flags, dir }))
}

/// `v`, with everything the verifier knew about it forgotten: written to the scratch buffer and
/// read back (then wiped). `opaque` hides a value from LLVM only; the verifier follows moves.
#[inline(always)]
fn forget(v: u64) -> Result<u64, i64> {
    let word = unsafe { &mut *CW_SCRATCH.get_ptr_mut(0).ok_or(0i64)? }.as_mut_ptr() as *mut u64;
    unsafe {
        word.write_volatile(v);
        let v = word.read_volatile();
        word.write_volatile(0);
        Ok(v)
    }
}

/// (protocol, L4 offset, IPv4?, service-side port)
type Headers = (u8, usize, bool, u16);

/// Reads protocol and service-side port straight from the packet: a bounds check against a
/// constant, then plain loads (a helper call per field is several times dearer; this is what keeps
/// the fast path close to an empty program). An IPv4 header without options and the ports take 24
/// bytes, an IPv6 header and the ports 44: every TCP or UDP packet has them. IPv4 options and
/// IPv6 extension headers are not followed (these clients send neither).
#[inline(always)]
fn headers(ctx: &SkBuffContext, to_service: bool) -> Option<Headers> {
    const V4_LEN: usize = 20 + 4;
    const V6_LEN: usize = IPV6_HEADER_LEN + 4;
    let start = ctx.data();
    if start + V4_LEN > ctx.data_end() {
        return None;
    }
    let at = |off: usize| unsafe { *((start + off) as *const u8) };
    let port_at = |l4: usize| {
        let off = if to_service { l4 + 2 } else { l4 };
        u16::from_be_bytes([at(off), at(off + 1)])
    };
    let first = at(0);
    match first >> 4 {
        4 if first & 0x0f == 5 => {
            let proto = at(9);
            (proto == IPPROTO_TCP || proto == IPPROTO_UDP).then(|| (proto, 20, true, port_at(20)))
        }
        6 => {
            if start + V6_LEN > ctx.data_end() {
                return None;
            }
            let proto = at(6);
            (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
                .then(|| (proto, IPV6_HEADER_LEN, false, port_at(IPV6_HEADER_LEN)))
        }
        _ => None,
    }
}

/// The TCP segment when its service-side address is a configured metadata endpoint.
#[inline(always)]
fn metadata_segment(ctx: &SkBuffContext, l4: &L4) -> Result<Option<Segment>, i64> {
    let to_service = l4.dir == Direction::ToService;
    let key = if l4.v4 {
        EndpointKey::v4(ctx.load::<[u8; 4]>(if to_service { 16 } else { 12 })?, l4.port)
    } else {
        EndpointKey::new(ctx.load::<[u8; 16]>(if to_service { 24 } else { 8 })?, l4.port)
    };
    let Some(endpoint) = (unsafe { CW_ENDPOINTS.get(&key) }) else {
        return Ok(None);
    };
    let (payload_off, payload_len) = tcp_payload(ctx, l4.l4_off)?;
    Ok(Some(Segment {
        endpoint_kind: endpoint.kind,
        seq: u32::from_be(ctx.load::<u32>(l4.l4_off + 4)?),
        tcp_flags: ctx.load(l4.l4_off + 13)?,
        payload_off,
        payload_len,
        cookie: socket_cookie(ctx),
        cgroup_id: cgroup_id(ctx),
        now_ns: unsafe { bpf_ktime_get_ns() },
    }))
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
fn tcp_payload(ctx: &SkBuffContext, l4_off: usize) -> Result<(u32, u32), i64> {
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

/// Copies up to `SCRATCH_LEN` bytes from `off` (at most `avail` exist) into the per-CPU scratch
/// buffer; returns the buffer and how many bytes it holds.
#[inline(always)]
pub fn load_scratch(
    ctx: &SkBuffContext,
    off: u32,
    avail: u32,
) -> Option<(&'static mut [u8; SCRATCH_LEN], usize)> {
    let buf = unsafe { &mut *CW_SCRATCH.get_ptr_mut(0)? };
    if avail == 0 {
        return None;
    }
    // bpf_skb_load_bytes needs its size proven in [1, SCRATCH_LEN] in the very register it is
    // passed in. A compare does not do it everywhere: `if n == 0` teaches Linux 6.1's verifier
    // nothing about the other branch, and LLVM turns `n >= 1 && n <= N` into one compare on a
    // copy (`n - 1 < N`) that older verifiers do not carry back to `n`. Arithmetic does: for n in
    // [1, SCRATCH_LEN] this is n, and every verifier sees the result in [1, SCRATCH_LEN].
    // `opaque` keeps LLVM from simplifying it away (aya issue #1207 is the same family).
    let n = if avail as usize > SCRATCH_LEN { SCRATCH_LEN as u64 } else { avail as u64 };
    let n = (opaque(n).wrapping_sub(1) & (SCRATCH_LEN as u64 - 1)) + 1;
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            off,
            buf.as_mut_ptr() as *mut _,
            n as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    Some((buf, n as usize))
}

/// Returns `v` unchanged through an instruction LLVM cannot see through (a self-move, so that the
/// program still has an instruction at that line for the kernel's line info).
#[inline(always)]
pub fn opaque(mut v: u64) -> u64 {
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) v) };
    v
}

/// [`load_scratch`] for the metadata parsers: `skip` bytes into the segment's payload.
#[inline(always)]
pub fn load_payload(
    ctx: &SkBuffContext,
    seg: &Segment,
    skip: u32,
) -> Option<(&'static mut [u8; SCRATCH_LEN], usize)> {
    load_scratch(ctx, seg.payload_off + skip, seg.payload_len.checked_sub(skip)?)
}

/// Zeroes the scratch buffer, so payload bytes do not linger in kernel memory after parsing.
#[inline(always)]
pub fn wipe_scratch(buf: &mut [u8; SCRATCH_LEN]) {
    wipe_scratch_first::<SCRATCH_LEN>(buf);
}

/// Zeroes the first `BYTES` bytes of the scratch buffer: enough after a copy known to be
/// shorter (a DNS question), and half the stores of a full wipe.
#[inline(always)]
pub fn wipe_scratch_first<const BYTES: usize>(buf: &mut [u8; SCRATCH_LEN]) {
    const { assert!(BYTES <= SCRATCH_LEN && BYTES.is_multiple_of(8)) };
    let words = buf.as_mut_ptr() as *mut u64;
    for i in 0..BYTES / 8 {
        unsafe { words.add(i).write_volatile(0) };
    }
}

/// Runs an automaton over the whole scratch buffer. The iteration count is a constant and the
/// body has no data-dependent branch, so the verifier walks it once per iteration without
/// queueing states; bytes past the loaded length are zero, which every state ignores.
#[inline(always)]
pub fn run_dfa(
    table: &[u16; dfa::TABLE_LEN],
    buf: &[u8; SCRATCH_LEN],
    mut state: u8,
    mut acc: u64,
) -> (u8, u64) {
    let mut i = 0;
    while i < SCRATCH_LEN {
        (state, acc) = dfa::step(table, state, acc, buf[i]);
        i += 1;
    }
    (state, acc)
}
