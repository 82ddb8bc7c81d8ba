//! DNS over UDP and TCP: queries (id, question name, qtype) on egress to a DNS port, responses
//! (rcode, answer count, truncation) on ingress from one, matched to their query by socket
//! cookie and transaction id so that latency is measured here, between the two packets.
//!
//! The question name is validated while it is walked (labels ≤ 63 bytes, name ≤ 255, no
//! compression pointer: a query's question has nothing earlier to point to), with a constant loop
//! bound the verifier accepts; malformed messages are counted by reason and otherwise ignored.
use agent_common::{
    SCRATCH_LEN, counter,
    dns::{
        DnsEvent, DnsPending, DnsPendingKey, EVENT_QUERY, EVENT_RESPONSE, FLAG_TCP, FLAG_TRUNCATED,
        HEADER_LEN, LABELS_MAX, NAME_BUF, NAME_MAX,
    },
};
use aya_ebpf::{EbpfContext as _, helpers::bpf_ktime_get_ns, programs::SkBuffContext};

use crate::{
    maps::{CW_DNS_EVENTS, CW_DNS_PENDING, count},
    packet::{
        IPPROTO_TCP, L4, cgroup_id, load_scratch, opaque, payload, socket_cookie, wipe_scratch,
    },
};

const MASK: usize = SCRATCH_LEN - 1;
/// Name, then qtype and qclass.
const QUESTION_MAX: u32 = NAME_MAX as u32 + 4;

/// Where the DNS message starts and how long it is (TCP: after the 2-byte length prefix).
#[inline(always)]
fn message(ctx: &SkBuffContext, l4: &L4) -> Result<Option<(u32, u32, u8)>, i64> {
    let (off, len) = payload(ctx, l4)?;
    if len == 0 {
        return Ok(None); // TCP handshake, ACKs and FINs
    }
    let (off, len, flags) = if l4.proto == IPPROTO_TCP {
        (off + 2, len.saturating_sub(2), FLAG_TCP)
    } else {
        (off, len, 0)
    };
    if (len as usize) < HEADER_LEN {
        count(counter::DNS_MALFORMED_HEADER);
        return Ok(None);
    }
    Ok(Some((off, len, flags)))
}

pub fn on_query(ctx: &SkBuffContext, l4: &L4) -> Result<(), i64> {
    let Some((off, len, flags)) = message(ctx, l4)? else {
        return Ok(());
    };
    query(ctx, off, len, flags)?;
    // glibc's TCP fallback writes the A and AAAA queries in one segment, each length-prefixed.
    if let Some((off, len)) = second_tcp_message(ctx, off, len, flags)? {
        query(ctx, off, len, flags)?;
    }
    Ok(())
}

pub fn on_response(ctx: &SkBuffContext, l4: &L4) -> Result<(), i64> {
    let Some((off, len, flags)) = message(ctx, l4)? else {
        return Ok(());
    };
    response(ctx, off, flags)?;
    if let Some((off, _)) = second_tcp_message(ctx, off, len, flags)? {
        response(ctx, off, flags)?;
    }
    Ok(())
}

/// The second message of a TCP segment, when a whole header of it is there.
#[inline(always)]
fn second_tcp_message(
    ctx: &SkBuffContext,
    off: u32,
    len: u32,
    flags: u8,
) -> Result<Option<(u32, u32)>, i64> {
    if flags & FLAG_TCP == 0 {
        return Ok(None);
    }
    let first = u32::from(u16::from_be(ctx.load::<u16>(off as usize - 2)?));
    if first + 2 + HEADER_LEN as u32 > len {
        return Ok(None);
    }
    Ok(Some((off + first + 2, len - first - 2)))
}

/// One query message; not inlined, so each call site is a BPF-to-BPF call.
#[inline(never)]
fn query(ctx: &SkBuffContext, off: u32, len: u32, flags: u8) -> Result<(), i64> {
    let header: [u8; HEADER_LEN] = ctx.load(off as usize)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    if header[2] & 0x80 != 0 || qdcount != 1 {
        count(counter::DNS_MALFORMED_QDCOUNT);
        return Ok(());
    }
    let question = len - HEADER_LEN as u32;
    let avail = if question > QUESTION_MAX { QUESTION_MAX } else { question };
    let Some((buf, n)) = load_scratch(ctx, off + HEADER_LEN as u32, avail) else {
        count(counter::DNS_MALFORMED_NAME);
        return Ok(());
    };
    match walk_name(buf, n) {
        Ok(name_len) => {
            // Each exit of the label walk has its own constant length; hiding it from the
            // verifier lets the paths below merge instead of being walked once per exit.
            let name_len = opaque(name_len as u64) as usize;
            let qtype_at = name_len + 1;
            if name_len >= NAME_MAX || qtype_at + 4 > n {
                count(counter::DNS_MALFORMED_NAME);
            } else {
                let qtype = u16::from_be_bytes([buf[qtype_at & MASK], buf[(qtype_at + 1) & MASK]]);
                record_query(ctx, off + HEADER_LEN as u32, id, name_len, qtype, flags);
            }
        }
        Err(reason) => count(reason),
    }
    wipe_scratch(buf);
    Ok(())
}

/// Validates the wire-format name at the start of `buf[..n]`; returns its length without the
/// root label, or the malformed-reason counter.
#[inline(always)]
fn walk_name(buf: &[u8; SCRATCH_LEN], n: usize) -> Result<usize, u32> {
    let mut pos = 0u64;
    // 1 while walking, 0 once stopped.
    let mut walking = 1u64;
    let mut labels = 0;
    while labels < LABELS_MAX {
        let len = buf[pos as usize & MASK] as u64;
        // stop = 1 when len == 0 or len > 63, computed without a compare (a compare is a
        // branch on BPF). `opaque` keeps LLVM from turning the arithmetic back into compares.
        let zero = opaque(len.wrapping_sub(1)) >> 63;
        let over = (opaque(len >> 6) + 3) >> 2;
        walking &= !(zero | over);
        pos += (len + 1) * walking;
        labels += 1;
    }
    let pos = pos as usize;
    if walking != 0 || pos >= NAME_MAX || pos >= n {
        return Err(counter::DNS_MALFORMED_NAME);
    }
    let len = buf[pos & MASK];
    if len == 0 {
        Ok(pos)
    } else if len & 0xc0 == 0xc0 {
        Err(counter::DNS_MALFORMED_POINTER)
    } else {
        // 0b01 and 0b10 in the top bits are reserved label types (RFC 6891 retired the
        // extended label): as lengths, over 63.
        Err(counter::DNS_MALFORMED_LABEL)
    }
}

#[inline(always)]
fn record_query(
    ctx: &SkBuffContext,
    name_off: u32,
    id: u16,
    name_len: usize,
    qtype: u16,
    flags: u8,
) {
    let cookie = socket_cookie(ctx);
    let cgroup_id = cgroup_id(ctx);
    let now = unsafe { bpf_ktime_get_ns() };
    let key = DnsPendingKey { cookie, id, _pad: [0; 6] };
    let pending = DnsPending { query_ns: now, cgroup_id, qtype, _pad: [0; 6] };
    if CW_DNS_PENDING.insert(&key, &pending, 0).is_err() {
        count(counter::LOST_DNS_PENDING_TABLE);
    }
    let Some(mut entry) = CW_DNS_EVENTS.reserve::<DnsEvent>(0) else {
        count(counter::LOST_DNS_RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).cookie = cookie;
        (*ev).cgroup_id = cgroup_id;
        (*ev).latency_ns = 0;
        (*ev).ktime_ns = now;
        (*ev).id = id;
        (*ev).qtype = qtype;
        (*ev).ancount = 0;
        (*ev).event = EVENT_QUERY;
        (*ev).flags = flags;
        (*ev).rcode = 0;
        (*ev).name_len = name_len as u8;
        (*ev)._pad = [0; 6];
        (*ev).name = [0; NAME_BUF];
        // The validated name, straight from the packet into the record. One helper call rather
        // than a 256-step copy loop, which the verifier would walk again for every exit of the
        // label walk (it cost ~360k of its 1M-instruction budget). The size register must be
        // proven in [1, NAME_BUF]: by arithmetic, which every verifier follows (Linux 6.1's
        // does not carry a compare on a copy, `len - 1 < 256`, back to `len`, and LLVM emits
        // that). name_len is 1..=254 here, so the size is exactly name_len.
        if name_len != 0 {
            let size = (opaque(name_len as u64).wrapping_sub(1) & (NAME_BUF as u64 - 1)) + 1;
            // On failure the helper zeroes the destination; the name then fails to decode in
            // userspace and is counted as undecodable.
            let _ = aya_ebpf::helpers::bpf_skb_load_bytes(
                ctx.as_ptr() as *const _,
                name_off,
                (*ev).name.as_mut_ptr() as *mut _,
                size as u32,
            );
        }
    }
    entry.submit(0);
}

#[inline(never)]
fn response(ctx: &SkBuffContext, off: u32, flags: u8) -> Result<(), i64> {
    let header: [u8; HEADER_LEN] = ctx.load(off as usize)?;
    if header[2] & 0x80 == 0 {
        count(counter::DNS_MALFORMED_QDCOUNT);
        return Ok(());
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    let key = DnsPendingKey { cookie: socket_cookie(ctx), id, _pad: [0; 6] };
    let Some(pending) = (unsafe { CW_DNS_PENDING.get(&key) }).copied() else {
        count(counter::DNS_UNMATCHED_RESPONSE);
        return Ok(());
    };
    let _ = CW_DNS_PENDING.remove(&key);
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = CW_DNS_EVENTS.reserve::<DnsEvent>(0) else {
        count(counter::LOST_DNS_RINGBUF_FULL);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).cookie = key.cookie;
        (*ev).cgroup_id = pending.cgroup_id;
        (*ev).latency_ns = now.wrapping_sub(pending.query_ns);
        (*ev).ktime_ns = now;
        (*ev).id = id;
        (*ev).qtype = pending.qtype;
        (*ev).ancount = u16::from_be_bytes([header[6], header[7]]);
        (*ev).event = EVENT_RESPONSE;
        (*ev).flags = flags | if header[2] & 0x02 != 0 { FLAG_TRUNCATED } else { 0 };
        (*ev).rcode = header[3] & 0x0f;
        (*ev).name_len = 0;
        (*ev)._pad = [0; 6];
        (*ev).name = [0; NAME_BUF];
    }
    entry.submit(0);
    Ok(())
}
