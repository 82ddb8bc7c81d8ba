//! A value LLVM cannot reason about, for the verifier-shaped arithmetic of the parsers.

/// Returns `v` unchanged through an instruction LLVM cannot see through (a self-move, so that the
/// program still has an instruction at that line for the kernel's line info).
#[inline(always)]
pub fn opaque(mut v: u64) -> u64 {
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) v) };
    v
}
