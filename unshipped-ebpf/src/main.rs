//! Kernel programs that are not shipped: built only into `credwatch-loadgen` (loadgen/build.rs),
//! for the benchmarks and tests, never into the `credwatch` binary. Their names are declared in
//! loadgen/src/baseline.rs, whose test checks this object against them.
//!
//! Observe-only like the shipped ones: every program returns the allow verdict.
#![no_std]
#![no_main]
// The entry points aya's macros generate take the kernel's raw context pointer.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock_addr, sock_ops},
    programs::{SkBuffContext, SockAddrContext, SockOpsContext},
};

/// Verdict that lets the packet (cgroup_skb) or the connect() (sock_addr) through.
const ALLOW: i32 = 1;

/// Does nothing: the baseline `cargo xtask bench fastpath` compares the packet programs against,
/// attached at the same place (`credwatch-loadgen baseline`, both directions).
#[cgroup_skb]
pub fn cw_bench_empty(_ctx: SkBuffContext) -> i32 {
    ALLOW
}

/// Does nothing, at connect4: with the two below (`credwatch-loadgen baseline --all-hooks`), what
/// an agent that observes at credwatch's hooks costs before it does any work (the floor of
/// `cargo xtask bench tcp`, `dns` and `e2e`).
#[cgroup_sock_addr(connect4)]
pub fn cw_bench_empty_connect4(_ctx: SockAddrContext) -> i32 {
    ALLOW
}

/// Does nothing, at connect6.
#[cgroup_sock_addr(connect6)]
pub fn cw_bench_empty_connect6(_ctx: SockAddrContext) -> i32 {
    ALLOW
}

/// Does nothing, at sock_ops (so the kernel makes only the callbacks it always makes).
#[sock_ops]
pub fn cw_bench_empty_sock_ops(_ctx: SockOpsContext) -> u32 {
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
