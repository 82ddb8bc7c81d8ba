//! credwatch kernel programs. Observe-only: every program returns [`ALLOW`] on every path,
//! errors included, so a bug here can cost a measurement but never a packet.
//!
//! Modules in layers, each importing only from the layers below it (`cargo xtask test` checks
//! that no module imports one that imports it back, see xtask/src/imports.rs):
//! - entry points (this file): one per hook; each ignores what the layers below return;
//! - [`router`]: where a `cgroup_skb` packet goes (the fast path ends most packets there);
//! - parsers: [`request`] and [`response`] (metadata HTTP), [`dns`], [`linklocal`] (packets to
//!   link-local services), [`tcp`] (connect, sock_ops);
//! - helpers: [`ancestry`] (each cgroup's parent), [`packet`] (IP/L4 headers), [`scratch`] (the
//!   payload buffer, automata), [`stats`] (counting per cgroup and key), [`opaque`], [`maps`].
#![no_std]
#![no_main]
// Inline asm on the BPF target (opaque::opaque, stats::atomic_add); this crate builds on the pinned nightly.
#![feature(asm_experimental_arch)]
// The entry points aya's #[cgroup_skb] generates take the kernel's raw context pointer.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod router;

mod dns;
mod linklocal;
mod request;
mod response;
mod tcp;

mod ancestry;
mod maps;
mod opaque;
mod packet;
mod scratch;
mod stats;

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock_addr, sock_ops},
    programs::{SkBuffContext, SockAddrContext, SockOpsContext},
};

/// Verdict that lets the packet (cgroup_skb) or the connect() (sock_addr) through.
const ALLOW: i32 = 1;

/// Packets leaving a workload: requests to metadata endpoints, DNS queries.
#[cgroup_skb(egress)]
pub fn cw_skb_egress(ctx: SkBuffContext) -> i32 {
    let _ = router::egress(&ctx);
    ALLOW
}

/// Packets arriving at a workload: responses from metadata endpoints and DNS servers.
#[cgroup_skb(ingress)]
pub fn cw_skb_ingress(ctx: SkBuffContext) -> i32 {
    let _ = router::ingress(&ctx);
    ALLOW
}

/// connect() on IPv4 TCP sockets: the destination as the application asked for it.
#[cgroup_sock_addr(connect4)]
pub fn cw_connect4(ctx: SockAddrContext) -> i32 {
    tcp::connect4(&ctx);
    ALLOW
}

/// connect() on IPv6 TCP sockets.
#[cgroup_sock_addr(connect6)]
pub fn cw_connect6(ctx: SockAddrContext) -> i32 {
    tcp::connect6(&ctx);
    ALLOW
}

/// TCP socket events: handshake outcome, listen and accept. The return value of a sock_ops
/// program is not a verdict (the reply field is), and this program sets no reply.
#[sock_ops]
pub fn cw_sock_ops(ctx: SockOpsContext) -> u32 {
    tcp::sock_ops(&ctx);
    1
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
