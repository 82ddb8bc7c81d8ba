//! credwatch kernel programs. Observe-only: every program returns [`ALLOW`] on every path,
//! errors included, so a bug here can cost a measurement but never a packet.
#![no_std]
#![no_main]
// Inline asm on the BPF target (see packet::load_scratch); this crate builds on the pinned nightly.
#![feature(asm_experimental_arch)]
// The entry points aya's #[cgroup_skb] generates take the kernel's raw context pointer.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod dns;
mod maps;
mod packet;
mod request;
mod response;

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

/// `cgroup_skb` verdict that lets the packet through.
const ALLOW: i32 = 1;

/// Packets leaving a workload: requests to metadata endpoints, DNS queries.
#[cgroup_skb(egress)]
pub fn cw_skb_egress(ctx: SkBuffContext) -> i32 {
    let _ = packet::egress(&ctx);
    ALLOW
}

/// Packets arriving at a workload: responses from metadata endpoints and DNS servers.
#[cgroup_skb(ingress)]
pub fn cw_skb_ingress(ctx: SkBuffContext) -> i32 {
    let _ = packet::ingress(&ctx);
    ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
