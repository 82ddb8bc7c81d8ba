//! Where a `cgroup_skb` packet goes: the fast path, then the parser its port and address call
//! for. A packet whose remote port carries no flag (and, leaving, whose destination is not
//! link-local) leaves after a few loads and one array lookup, which the verifier inlines. Packets
//! leaving for a link-local service are counted (`linklocal`) before any parser sees them.
use agent_common::{EndpointKey, PORT_FLAG_DNS, PORT_FLAG_LINKLOCAL, PORT_FLAG_METADATA};
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::SkBuffContext};

use crate::{
    dns, linklocal,
    maps::{CW_ENDPOINTS, port_flags},
    packet::{Direction, IPPROTO_TCP, L4, Segment, cgroup_id, headers, socket_cookie, tcp_payload},
    request, response,
    scratch::forget,
};

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
    let Some((proto, l4_off, v4, port, link_local)) = headers(ctx, to_service) else {
        if to_service {
            let _ = linklocal::on_unrouted(ctx);
        }
        return Ok(None);
    };
    let flags = if link_local {
        // Off the fast path: every other packet has left the comparison above on its first
        // branch, so the port lookup and the test below are what they were without link-local
        // counting. Counted before any parser runs, so whatever a parser makes of the packet, it
        // is counted once.
        let _ = linklocal::on_packet(ctx, v4, port, true);
        port_flags(port)
    } else {
        let flags = port_flags(port);
        if flags == 0 {
            return Ok(None);
        }
        if to_service && flags & PORT_FLAG_LINKLOCAL != 0 {
            // A stand-in for a link-local service (a configured endpoint on loopback).
            let _ = linklocal::on_packet(ctx, v4, port, false);
        }
        flags
    };
    let port_flags = flags & (PORT_FLAG_METADATA | PORT_FLAG_DNS);
    if port_flags == 0 {
        return Ok(None);
    }
    // The header reads above leave the verifier one path per IP version and protocol, each with
    // its own constants (offset 20 or 40, protocol 6 or 17). Linux 6.1 keeps them apart through
    // everything below, walking the parsers once per path (twice the instructions, near the
    // 1M-instruction limit for the ingress program; docs/old-kernels.md); 6.8 and later merge
    // them. Passed through map memory, which no verifier tracks, they become one path. Only
    // packets for a watched port get here.
    let packed = forget(l4_off as u64 | (u64::from(v4) << 8) | (u64::from(proto) << 16))?;
    let (l4_off, v4, proto) = ((packed & 0xff) as usize, packed & 0x100 != 0, (packed >> 16) as u8);
    Ok(Some(L4 { proto, v4, l4_off, port, port_flags, dir }))
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
