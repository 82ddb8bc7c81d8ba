//! DNS over UDP and TCP: queries (id, question name, qtype) on egress to a DNS port, responses
//! (rcode, truncation) on ingress from one, matched to their query by socket cookie and
//! transaction id so that latency is measured here, between the two packets. Answered queries
//! are counted here, per cgroup and query type (`CW_DNS_STATS`, read by userspace once a
//! second); only NXDOMAIN answers, which the search-list analysis needs by name, become events.
//!
//! The question name is validated while it is walked (labels ≤ 63 bytes, name ≤ 255, no
//! compression pointer: a query's question has nothing earlier to point to), with a constant loop
//! bound the verifier accepts; malformed messages are counted by reason and otherwise ignored.
use agent_common::{
    SCRATCH_LEN, counter,
    dns::{
        DnsEvent, DnsPendingSlot, DnsStats, DnsStatsKey, EVENT_RESPONSE, FLAG_TCP, FLAG_TRUNCATED,
        HEADER_LEN, KNOWN_QTYPES, LABELS_MAX, LATENCY_BOUNDS_NS, LATENCY_SLOTS, NAME_BUF, NAME_MAX,
        PENDING_WAYS, RCODE_NXDOMAIN, RCODE_OTHER_SLOT, RCODE_SLOTS, pending_bucket,
    },
    names::config,
};
use aya_ebpf::{EbpfContext as _, helpers::bpf_ktime_get_ns, programs::SkBuffContext};

use crate::{
    ancestry::remember_parent,
    maps::{CW_DNS_EVENTS, CW_DNS_PENDING, CW_DNS_STATS, CW_DNS_STATS_CPU, config, count},
    opaque::opaque,
    packet::{IPPROTO_TCP, L4, cgroup_id, payload, socket_cookie},
    scratch::{load_scratch, wipe_scratch_first},
    stats,
};

const MASK: usize = SCRATCH_LEN - 1;
/// Header, name, then qtype and qclass.
const MESSAGE_MAX: u32 = (HEADER_LEN + NAME_MAX + 4) as u32;

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
    query(ctx, off, len)?;
    // glibc's TCP fallback writes the A and AAAA queries in one segment, each length-prefixed.
    if let Some((off, len)) = second_tcp_message(ctx, off, len, flags)? {
        query(ctx, off, len)?;
    }
    Ok(())
}

pub fn on_response(ctx: &SkBuffContext, l4: &L4) -> Result<(), i64> {
    let Some((off, len, flags)) = message(ctx, l4)? else {
        return Ok(());
    };
    response(ctx, off, len, flags)?;
    if let Some((off, len)) = second_tcp_message(ctx, off, len, flags)? {
        response(ctx, off, len, flags)?;
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
fn query(ctx: &SkBuffContext, off: u32, len: u32) -> Result<(), i64> {
    // Header and question in one copy (one helper call, not two).
    let avail = if len > MESSAGE_MAX { MESSAGE_MAX } else { len };
    let Some((buf, n)) = load_scratch(ctx, off, avail) else {
        count(counter::DNS_MALFORMED_NAME);
        return Ok(());
    };
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let qdcount = u16::from_be_bytes([buf[4], buf[5]]);
    if buf[2] & 0x80 != 0 || qdcount != 1 {
        count(counter::DNS_MALFORMED_QDCOUNT);
    } else {
        match walk_name(buf, n) {
            Ok(name_end) => {
                // Each exit of the label walk has its own constant length; hiding it from the
                // verifier lets the paths below merge instead of being walked once per exit.
                let name_end = opaque(name_end as u64) as usize;
                let qtype_at = name_end + 1;
                if name_end >= HEADER_LEN + NAME_MAX || qtype_at + 4 > n {
                    count(counter::DNS_MALFORMED_NAME);
                } else {
                    let qtype =
                        u16::from_be_bytes([buf[qtype_at & MASK], buf[(qtype_at + 1) & MASK]]);
                    record_query(ctx, id, qtype);
                }
            }
            Err(reason) => count(reason),
        }
    }
    // load_scratch copied at most MESSAGE_MAX bytes.
    wipe_scratch_first::<{ (MESSAGE_MAX as usize).next_multiple_of(8) }>(buf);
    Ok(())
}

/// Labels walked before checking whether the name goes on.
const FIRST_LABELS: usize = 16;

/// `LABELS` steps of the label walk from `pos`: a constant iteration count and no
/// data-dependent branch, so the verifier walks it once.
#[inline(always)]
fn walk_labels<const LABELS: usize>(
    buf: &[u8; SCRATCH_LEN],
    mut pos: u64,
    mut walking: u64,
) -> (u64, u64) {
    let mut labels = 0;
    while labels < LABELS {
        let len = buf[pos as usize & MASK] as u64;
        // stop = 1 when len == 0 or len > 63, computed without a compare (a compare is a
        // branch on BPF). `opaque` keeps LLVM from turning the arithmetic back into compares.
        let zero = opaque(len.wrapping_sub(1)) >> 63;
        let over = (opaque(len >> 6) + 3) >> 2;
        walking &= !(zero | over);
        pos += (len + 1) * walking;
        labels += 1;
    }
    (pos, walking)
}

/// Validates the wire-format name after the header in `buf[..n]`; returns where its root label
/// is, or the malformed-reason counter.
#[inline(always)]
fn walk_name(buf: &[u8; SCRATCH_LEN], n: usize) -> Result<usize, u32> {
    let mut pos = HEADER_LEN as u64;
    // 1 while walking, 0 once stopped.
    let mut walking = 1u64;
    // Names have a handful of labels. The walk itself is branch-free, so its cost is its
    // iteration count, paid in full on every query whatever the name's length (figures in
    // docs/benchmarks.md, "Figures behind design choices"): two labels at a time while the name
    // goes on, up to 16, and the rest (up to the 127 a valid name can have) only for longer names.
    let mut chunk = 0;
    while chunk < FIRST_LABELS / 2 {
        if walking == 0 {
            break;
        }
        (pos, walking) = walk_labels::<2>(buf, pos, walking);
        chunk += 1;
    }
    if walking != 0 {
        (pos, walking) = walk_labels::<{ LABELS_MAX - FIRST_LABELS }>(buf, pos, walking);
    }
    // Both ways here look alike to the verifier, so it walks what follows once.
    let (pos, walking) = (opaque(pos), opaque(walking));
    let pos = pos as usize;
    if walking != 0 || pos >= HEADER_LEN + NAME_MAX || pos >= n {
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
fn record_query(ctx: &SkBuffContext, id: u16, qtype: u16) {
    let cookie = socket_cookie(ctx);
    let bucket = pending_bucket(cookie, id);
    // The slot this query already has (sent again with the same id: it is timed from the last
    // send, and counted once), else the first free one.
    let mut target: Option<*mut DnsPendingSlot> = None;
    let mut way = 0;
    while way < PENDING_WAYS {
        if let Some(slot) = CW_DNS_PENDING.get_ptr_mut(bucket + way) {
            let query_ns = unsafe { (&raw const (*slot).query_ns).read_volatile() };
            if query_ns == 0 {
                if target.is_none() {
                    target = Some(slot);
                }
            } else if unsafe { (*slot).cookie == cookie && (*slot).id == id } {
                target = Some(slot);
                break;
            }
        }
        way += 1;
    }
    // Every slot of the bucket held by another query: refused and counted, never evicted.
    let Some(slot) = target else {
        count(counter::LOST_DNS_PENDING_TABLE);
        return;
    };
    // query_ns last: it is what marks the slot taken (see DnsPendingSlot).
    unsafe {
        (&raw mut (*slot).cookie).write_volatile(cookie);
        (&raw mut (*slot).cgroup_id).write_volatile(cgroup_id(ctx));
        (&raw mut (*slot).id).write_volatile(id);
        (&raw mut (*slot).qtype).write_volatile(qtype);
        (&raw mut (*slot).query_ns).write_volatile(bpf_ktime_get_ns());
    }
}

/// The slot holding the query (cookie, id), if one does.
#[inline(always)]
fn pending_slot(cookie: u64, id: u16) -> Option<*mut DnsPendingSlot> {
    let bucket = pending_bucket(cookie, id);
    let mut way = 0;
    while way < PENDING_WAYS {
        if let Some(slot) = CW_DNS_PENDING.get_ptr_mut(bucket + way) {
            let query_ns = unsafe { (&raw const (*slot).query_ns).read_volatile() };
            if query_ns != 0 && unsafe { (*slot).cookie == cookie && (*slot).id == id } {
                return Some(slot);
            }
        }
        way += 1;
    }
    None
}

#[inline(never)]
fn response(ctx: &SkBuffContext, off: u32, len: u32, flags: u8) -> Result<(), i64> {
    let header: [u8; HEADER_LEN] = ctx.load(off as usize)?;
    if header[2] & 0x80 == 0 {
        count(counter::DNS_MALFORMED_QDCOUNT);
        return Ok(());
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    let cookie = socket_cookie(ctx);
    let Some(slot) = pending_slot(cookie, id) else {
        count(counter::DNS_UNMATCHED_RESPONSE);
        return Ok(());
    };
    let pending = unsafe { *slot };
    let now = unsafe { bpf_ktime_get_ns() };
    let latency_ns = now.wrapping_sub(pending.query_ns);
    // Past the timeout the query is userspace's to count (as a timeout), and to free: counting
    // the answer too would count the query twice.
    let timeout_ns = dns_timeout_ns();
    if timeout_ns != 0 && latency_ns > timeout_ns {
        count(counter::DNS_UNMATCHED_RESPONSE);
        return Ok(());
    }
    unsafe { (&raw mut (*slot).query_ns).write_volatile(0) };
    let rcode = header[3] & 0x0f;
    let truncated = (header[2] >> 1) & 1;
    if record_stats(pending.cgroup_id, pending.qtype, rcode, truncated, latency_ns) {
        // First answer of the key on this CPU (a new cgroup's first, among others): not on
        // every query, where the table lookup would cost about a tenth of the programs' time.
        remember_parent(ctx, pending.cgroup_id);
    }
    if rcode == RCODE_NXDOMAIN || all_names() {
        let flags = flags | (truncated * FLAG_TRUNCATED);
        named_event(ctx, off, len, &pending, &header, latency_ns, now, flags);
    }
    Ok(())
}

static STATS: stats::Tables<DnsStatsKey, DnsStats> = stats::Tables {
    cache: &CW_DNS_STATS_CPU,
    table: &CW_DNS_STATS,
    epoch_index: config::DNS_STATS_EPOCH,
    lost: counter::LOST_DNS_STATS_TABLE,
    zero: &DnsStats::ZERO,
};

/// Counts an answered query under its (cgroup, query type): in this CPU's cache slot when it
/// can, else in the shared table (see `stats`). True: the key was counted for the first time on
/// this CPU.
#[inline(always)]
fn record_stats(cgroup_id: u64, qtype: u16, rcode: u8, truncated: u8, latency_ns: u64) -> bool {
    let key = DnsStatsKey { cgroup_id, qtype: known_qtype(qtype), _pad: [0; 6] };
    // Branch-free slot arithmetic (see walk_name): rcodes above REFUSED share the "other" slot.
    let rcode = u64::from(rcode);
    let over = opaque((RCODE_OTHER_SLOT as u64 - 1).wrapping_sub(rcode)) >> 63;
    let rcode_slot = (rcode * (1 - over) + RCODE_OTHER_SLOT as u64 * over) as usize;
    let mut bucket = 0u64;
    let mut i = 0;
    while i < LATENCY_BOUNDS_NS.len() {
        // 1 when latency_ns > bound (both below 2^63).
        bucket += opaque(LATENCY_BOUNDS_NS[i].wrapping_sub(latency_ns & (u64::MAX >> 1))) >> 63;
        i += 1;
    }
    let (rcode_slot, bucket) =
        (rcode_slot & (RCODE_SLOTS - 1), bucket as usize & (LATENCY_SLOTS - 1));
    // The shared entry's size does not grow with the number of CPUs, as a per-CPU value's would
    // (208 bytes an entry, not 208 per CPU).
    let first = stats::count(&STATS, &key, |s, shared| unsafe {
        stats::add(&raw mut (*s).responses[rcode_slot], 1, shared);
        stats::add(&raw mut (*s).truncated, u64::from(truncated), shared);
        stats::add(&raw mut (*s).latency_sum_ns, latency_ns, shared);
        stats::add(&raw mut (*s).latency[bucket], 1, shared);
    });
    first == Some(true)
}

/// `qtype` when it is one of the named types, else [`QTYPE_OTHER`], without a branch per type.
#[inline(always)]
fn known_qtype(qtype: u16) -> u16 {
    let q = u64::from(qtype);
    let mut known = 0u64;
    let mut i = 0;
    while i < KNOWN_QTYPES.len() {
        // 1 when equal: x ^ x = 0, and 0 - 1 has the top bit set.
        known |= opaque((q ^ u64::from(KNOWN_QTYPES[i])).wrapping_sub(1)) >> 63;
        i += 1;
    }
    (q * known) as u16
}

#[inline(always)]
fn all_names() -> bool {
    config(config::DNS_ALL_NAMES) != 0
}

#[inline(always)]
fn dns_timeout_ns() -> u64 {
    u64::from(config(config::DNS_TIMEOUT_MS)) * 1_000_000
}

/// An event carrying the response's question section raw (its name is the query's name), for
/// the search-list analysis and --dns-top-names; userspace validates the name.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn named_event(
    ctx: &SkBuffContext,
    off: u32,
    len: u32,
    pending: &DnsPendingSlot,
    header: &[u8; HEADER_LEN],
    latency_ns: u64,
    now: u64,
    flags: u8,
) {
    let Some(mut entry) = CW_DNS_EVENTS.reserve::<DnsEvent>(0) else {
        count(counter::LOST_DNS_RINGBUF_FULL);
        return;
    };
    let question = len.saturating_sub(HEADER_LEN as u32);
    let avail = if question > NAME_MAX as u32 { NAME_MAX as u32 } else { question };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).cookie = pending.cookie;
        (*ev).cgroup_id = pending.cgroup_id;
        (*ev).latency_ns = latency_ns;
        (*ev).ktime_ns = now;
        (*ev).id = pending.id;
        (*ev).qtype = pending.qtype;
        (*ev).ancount = u16::from_be_bytes([header[6], header[7]]);
        (*ev).event = EVENT_RESPONSE;
        (*ev).flags = flags;
        (*ev).rcode = header[3] & 0x0f;
        (*ev).name_len = 0;
        (*ev)._pad = [0; 6];
        (*ev).name = [0; NAME_BUF];
        if avail != 0 {
            // One helper call, size proven in [1, NAME_BUF] by arithmetic (see load_scratch);
            // avail ≤ NAME_MAX, so the size is exactly avail. On failure the helper zeroes the
            // destination, which then fails to decode in userspace and is counted.
            let size = (opaque(u64::from(avail)).wrapping_sub(1) & (NAME_BUF as u64 - 1)) + 1;
            if aya_ebpf::helpers::bpf_skb_load_bytes(
                ctx.as_ptr() as *const _,
                off + HEADER_LEN as u32,
                (*ev).name.as_mut_ptr() as *mut _,
                size as u32,
            ) == 0
            {
                (*ev).name_len = size as u8;
            }
        }
    }
    // Woken: userspace reads these as they come (see the pipeline), and they are few.
    entry.submit(0);
}
