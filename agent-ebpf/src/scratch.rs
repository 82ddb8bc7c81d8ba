//! The per-CPU scratch buffer (`CW_SCRATCH`): payload bytes copied out of a packet for parsing,
//! wiped as soon as a parser is done, and the automaton runner that scans them.
use agent_common::{SCRATCH_LEN, dfa};
use aya_ebpf::{EbpfContext as _, programs::SkBuffContext};

use crate::{maps::CW_SCRATCH, opaque::opaque, packet::Segment};

/// `v`, with everything the verifier knew about it forgotten: written to the scratch buffer and
/// read back (then wiped). `opaque` hides a value from LLVM only; the verifier follows moves.
#[inline(always)]
pub fn forget(v: u64) -> Result<u64, i64> {
    let word = unsafe { &mut *CW_SCRATCH.get_ptr_mut(0).ok_or(0i64)? }.as_mut_ptr() as *mut u64;
    unsafe {
        word.write_volatile(v);
        let v = word.read_volatile();
        word.write_volatile(0);
        Ok(v)
    }
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
    table: &[u16; dfa::LARGE_TABLE_LEN],
    buf: &[u8; SCRATCH_LEN],
    mut state: u8,
    mut acc: u64,
) -> (u8, u64) {
    let mut i = 0;
    while i < SCRATCH_LEN {
        (state, acc) = dfa::step_large(table, state, acc, buf[i]);
        i += 1;
    }
    (state, acc)
}
