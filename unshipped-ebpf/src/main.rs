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

/// Where `cw_test_redirect_connect4` sends connects to `CW_REDIRECT_FROM_*`: set at load time
/// (`credwatch-loadgen redirect`), read volatile so that the built zeros are not folded in.
/// Address and port in network order, as `bpf_sock_addr` holds them.
#[unsafe(no_mangle)]
static CW_REDIRECT_FROM_ADDR: u32 = 0;
#[unsafe(no_mangle)]
static CW_REDIRECT_FROM_PORT: u32 = 0;
#[unsafe(no_mangle)]
static CW_REDIRECT_TO_ADDR: u32 = 0;
#[unsafe(no_mangle)]
static CW_REDIRECT_TO_PORT: u32 = 0;

/// For tests only: rewrites the destination of an IPv4 connect() to FROM into TO inside the
/// connect() call, before any packet exists, as Cilium's socket-level load balancing does (a
/// LocalRedirectPolicy sending 169.254.169.254 to a node-local credential agent). Attached before
/// credwatch's connect4, as Cilium's is, it shows what credwatch sees of such traffic.
#[cgroup_sock_addr(connect4)]
pub fn cw_test_redirect_connect4(ctx: SockAddrContext) -> i32 {
    let read = |v: &u32| unsafe { core::ptr::read_volatile(v) };
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.user_ip4 == read(&CW_REDIRECT_FROM_ADDR) && sa.user_port == read(&CW_REDIRECT_FROM_PORT) {
        sa.user_ip4 = read(&CW_REDIRECT_TO_ADDR);
        sa.user_port = read(&CW_REDIRECT_TO_PORT);
    }
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
