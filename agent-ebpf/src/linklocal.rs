//! Packets to link-local services (the EC2 allowance of 1024 a second per interface): counted per
//! (cgroup, service) and per second by service. Only packets the router found addressed to a
//! link-local prefix, or to a port with `PORT_FLAG_LINKLOCAL`, get here: the traffic is low-rate
//! by definition (beyond 1024 packets a second the services drop it), so plain map lookups are
//! affordable, and the fast path pays one load and comparison of the destination's first two
//! bytes (`packet::headers`).
use agent_common::{
    EndpointKey, counter,
    linklocal::{
        NS_PER_SECOND, PacketsKey, SERVICE_NOT_COUNTED, Service, V4_PREFIX, V6_PREFIX, second_slot,
    },
};
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, programs::SkBuffContext};

use crate::{
    maps::{CW_LINKLOCAL_PACKETS, CW_LINKLOCAL_SECONDS, CW_LINKLOCAL_SERVICES, count},
    packet::cgroup_id,
};

/// Offsets of the destination address from the start of the IP header.
const V4_DST: usize = 16;
const V6_DST: usize = 24;

/// A TCP or UDP packet from the router: `port` is its destination port, `link_local` whether its
/// destination is in 169.254.0.0/16 or fd00:ec2::/64 (else its port carries the stand-in flag).
/// Not inlined: one copy for both IP versions and both callers, off the fast path's code.
#[inline(never)]
pub fn on_packet(ctx: &SkBuffContext, v4: bool, port: u16, link_local: bool) -> Result<(), i64> {
    let mut key = destination(ctx, v4, port)?;
    let service = match unsafe { CW_LINKLOCAL_SERVICES.get(&key) } {
        Some(v) => v.service,
        None if link_local => {
            key.port = 0;
            match unsafe { CW_LINKLOCAL_SERVICES.get(&key) } {
                Some(v) => v.service,
                None => Service::Other as u8,
            }
        }
        // A stand-in's port, but another address: not a link-local service.
        None => return Ok(()),
    };
    if service != SERVICE_NOT_COUNTED {
        add(ctx, service);
    }
    Ok(())
}

/// A packet the router's header read does not cover (neither TCP nor UDP, IPv4 options, IPv6
/// extension headers): counted by its address alone (port 0), when that is link-local.
#[inline(never)]
pub fn on_unrouted(ctx: &SkBuffContext) -> Result<(), i64> {
    let version = ctx.load::<u8>(0)? >> 4;
    let link_local = match version {
        4 => ctx.load::<[u8; 2]>(V4_DST)? == V4_PREFIX,
        6 => ctx.load::<[u8; 8]>(V6_DST)? == V6_PREFIX,
        _ => false,
    };
    if link_local { on_packet(ctx, version == 4, 0, true) } else { Ok(()) }
}

#[inline(always)]
fn destination(ctx: &SkBuffContext, v4: bool, port: u16) -> Result<EndpointKey, i64> {
    Ok(if v4 {
        EndpointKey::v4(ctx.load::<[u8; 4]>(V4_DST)?, port)
    } else {
        EndpointKey::new(ctx.load::<[u8; 16]>(V6_DST)?, port)
    })
}

#[inline(always)]
fn add(ctx: &SkBuffContext, service: u8) {
    // Per-CPU slot of this second: no other writer, plain adds are exact.
    let second = unsafe { bpf_ktime_get_ns() } / NS_PER_SECOND;
    if let Some(slot) = CW_LINKLOCAL_SECONDS.get_ptr_mut(second_slot(second)) {
        let slot = unsafe { &mut *slot };
        if slot.second != second {
            // A second this CPU has not counted in yet: what the slot held is SECOND_SLOTS
            // seconds old, read by userspace long ago (or lost, which userspace counts).
            slot.second = second;
            slot.packets = [0; 8];
        }
        slot.packets[(service & 7) as usize] += 1;
    }
    let key = PacketsKey::new(cgroup_id(ctx), service);
    if let Some(p) = CW_LINKLOCAL_PACKETS.get_ptr_mut(&key) {
        unsafe { *p += 1 };
    } else if CW_LINKLOCAL_PACKETS.insert(&key, &1, u64::from(BPF_NOEXIST)).is_err() {
        // Either another CPU created the entry in between (then it exists now, with this CPU's
        // value at 0) or the table is full.
        match CW_LINKLOCAL_PACKETS.get_ptr_mut(&key) {
            Some(p) => unsafe { *p += 1 },
            None => count(counter::LOST_LINKLOCAL_TABLE),
        }
    }
}
