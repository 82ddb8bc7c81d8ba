//! Responses from a metadata endpoint: status code and time to first byte, then, for credential
//! documents, a byte-at-a-time search for `"Expiration":"YYYY-MM-DDThh:mm:ss` that survives any
//! split across TCP segments and any `Transfer-Encoding: chunked` boundary (its progress lives in
//! the flow, per socket). Only the digits of the timestamp leave the kernel; the secrets before it
//! are read and forgotten.
//!
//! A request is counted exactly once: by its response's event, by a no-response event when its
//! connection ends first (the server closes or resets it, the client resets it), or, when neither
//! comes within `--metadata-timeout`, by userspace, which reads the flow table. The kernel then
//! leaves such a flow alone: a response that starts after the timeout is not reported.
use agent_common::{
    EVENT_EXPIRATION, EVENT_NO_RESPONSE, EVENT_RESPONSE, FLAG_CANDIDATE, FLAG_PIPELINED, Flow,
    MetadataEvent, PHASE_LATE, PHASE_REQUEST_SENT, PHASE_RESPONDING, ROLE_MAX, RequestKind,
    SCAN_MAX_BYTES, SCRATCH_LEN, counter, dfa::expiration, names,
};
use aya_ebpf::programs::SkBuffContext;

use crate::{
    maps::{CW_EVENTS, CW_FLOWS, NO_WAKEUP, config, count},
    packet::{Segment, TCP_FIN, TCP_RST},
    scratch::{load_payload, run_dfa, wipe_scratch},
};

const SCAN_CHUNKS: u32 = (SCAN_MAX_BYTES / SCRATCH_LEN) as u32;

pub fn on_segment(ctx: &SkBuffContext, seg: &Segment) {
    let Some(flow) = CW_FLOWS.get_ptr_mut(&seg.cookie) else {
        if seg.payload_len > 0 {
            count(counter::REJECT_NO_REQUEST);
        }
        return;
    };
    let flow = unsafe { &mut *flow };
    if seg.payload_len > 0 {
        if flow.phase == PHASE_REQUEST_SENT {
            first_segment(ctx, seg, flow);
        } else if flow.phase == PHASE_RESPONDING && flow.scan < expiration::ACCEPT {
            next_segment(ctx, seg, flow);
        }
    }
    if seg.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        connection_ended(seg);
    }
}

/// The connection ended (the server's FIN or RST, or the client's RST): an unanswered request is
/// counted as such, a response whose event waits is reported, and the flow goes.
pub fn connection_ended(seg: &Segment) {
    let Some(flow) = CW_FLOWS.get_ptr_mut(&seg.cookie) else {
        return;
    };
    let flow = unsafe { &mut *flow };
    if flow.phase == PHASE_REQUEST_SENT {
        if !in_time(flow, seg.now_ns) {
            return; // userspace counts it (see the module comment)
        }
        emit(flow, EVENT_NO_RESPONSE, 0, seg.now_ns);
    } else if flow.phase == PHASE_RESPONDING {
        finish(flow);
    } else {
        return; // PHASE_LATE: userspace counts it
    }
    let _ = CW_FLOWS.remove(&seg.cookie);
}

/// The response on this flow is over (the connection ended, or the next request began): a
/// candidate's event that waited for `"Expiration"` goes out as a metadata response, and a
/// credential document that never showed one is counted.
pub fn finish(flow: &mut Flow) {
    if flow.phase != PHASE_RESPONDING {
        return;
    }
    if waiting(flow) {
        report_waiting(flow, RequestKind::Metadata);
    } else if flow.kind == RequestKind::Credentials as u8 && flow.scan < expiration::ACCEPT {
        count(counter::REJECT_NO_EXPIRATION);
    }
    flow.scan = expiration::FINISHED;
}

/// Whether a response to this flow's request can still be reported (`--metadata-timeout`).
#[inline(always)]
fn in_time(flow: &Flow, now_ns: u64) -> bool {
    let limit_ns = u64::from(config(names::config::METADATA_TIMEOUT_MS)) * 1_000_000;
    limit_ns == 0 || now_ns.wrapping_sub(flow.request_ns) <= limit_ns
}

/// A candidate's 200 response, whose event waits for the document to show what it is.
#[inline(always)]
fn waiting(flow: &Flow) -> bool {
    flow.flags & FLAG_CANDIDATE != 0 && flow.status != 0
}

/// Sends the event of a response that waited, as `kind`, timed at its first byte.
fn report_waiting(flow: &mut Flow, kind: RequestKind) {
    flow.kind = kind as u8;
    let (status, at) = (flow.status, flow.response_ns);
    flow.flags &= !FLAG_CANDIDATE;
    flow.status = 0;
    emit(flow, EVENT_RESPONSE, status, at);
}

fn first_segment(ctx: &SkBuffContext, seg: &Segment, flow: &mut Flow) {
    if !in_time(flow, seg.now_ns) {
        count(counter::REJECT_LATE_RESPONSE);
        flow.phase = PHASE_LATE;
        return;
    }
    flow.phase = PHASE_RESPONDING;
    flow.response_next_seq = seg.seq.wrapping_add(seg.payload_len);
    let status = match ctx.load::<[u8; 12]>(seg.payload_off as usize) {
        Ok(line) => parse_status(&line),
        Err(_) => None,
    };
    let Some(status) = status else {
        count(counter::REJECT_BAD_STATUS);
        flow.scan = expiration::FINISHED;
        return;
    };
    let candidate = flow.flags & FLAG_CANDIDATE != 0;
    if candidate && status == 200 && flow.flags & FLAG_PIPELINED == 0 {
        // Reported once the document shows whether it holds credentials.
        flow.status = status;
        flow.response_ns = seg.now_ns;
    } else {
        flow.flags &= !FLAG_CANDIDATE;
        if candidate {
            flow.scan = expiration::FINISHED;
        }
        emit(flow, EVENT_RESPONSE, status, seg.now_ns);
    }
    if status != 200 {
        flow.scan = expiration::FINISHED;
    } else if flow.scan < expiration::ACCEPT {
        scan_segment(ctx, seg, flow);
    }
}

fn next_segment(ctx: &SkBuffContext, seg: &Segment, flow: &mut Flow) {
    let ahead = seg.seq.wrapping_sub(flow.response_next_seq) as i32;
    if ahead < 0 {
        count(counter::RETRANSMIT);
        return;
    }
    if ahead > 0 {
        // A gap: the missing bytes may hold part of the key, so this response's search ends.
        count(counter::REJECT_OUT_OF_ORDER);
        if waiting(flow) {
            report_waiting(flow, RequestKind::Metadata);
        }
        flow.scan = expiration::FINISHED;
        return;
    }
    flow.response_next_seq = seg.seq.wrapping_add(seg.payload_len);
    scan_segment(ctx, seg, flow);
}

/// `HTTP/1.x NNN`: the status code, or None when the line has another shape.
#[inline(always)]
fn parse_status(line: &[u8; 12]) -> Option<u16> {
    if &line[..5] != b"HTTP/" || line[8] != b' ' {
        return None;
    }
    let mut status = 0u16;
    let mut i = 9;
    while i < 12 {
        let c = line[i];
        if !c.is_ascii_digit() {
            return None;
        }
        status = status * 10 + (c - b'0') as u16;
        i += 1;
    }
    Some(status)
}

fn scan_segment(ctx: &SkBuffContext, seg: &Segment, flow: &mut Flow) {
    let mut chunk = 0;
    while chunk < SCAN_CHUNKS {
        let skip = chunk * SCRATCH_LEN as u32;
        if skip >= seg.payload_len {
            break;
        }
        let Some((buf, _)) = load_payload(ctx, seg, skip) else {
            break;
        };
        let (state, acc) = run_dfa(&expiration::TABLE, buf, flow.scan, flow.expiration);
        wipe_scratch(buf);
        flow.scan = state;
        flow.expiration = acc;
        if state >= expiration::ACCEPT {
            break;
        }
        chunk += 1;
    }
    let found = flow.scan == expiration::ACCEPT || flow.scan == expiration::FAIL;
    if waiting(flow) && (found || seg.payload_len as usize > SCAN_MAX_BYTES) {
        // The key decides: a document with `"Expiration"` is a credential document.
        let kind = if found { RequestKind::Credentials } else { RequestKind::Metadata };
        report_waiting(flow, kind);
    }
    if flow.scan == expiration::ACCEPT {
        emit(flow, EVENT_EXPIRATION, 0, seg.now_ns);
        flow.scan = expiration::FINISHED;
    } else if flow.scan == expiration::FAIL {
        count(counter::REJECT_BAD_TIMESTAMP);
        flow.scan = expiration::FINISHED;
    } else if seg.payload_len as usize > SCAN_MAX_BYTES {
        // The rest of the segment is not scanned: the stream position is lost.
        count(counter::REJECT_SCAN_LIMIT);
        flow.scan = expiration::FINISHED;
    }
}

fn emit(flow: &Flow, event: u8, status: u16, now_ns: u64) {
    let Some(mut entry) = CW_EVENTS.reserve::<MetadataEvent>(0) else {
        count(counter::LOST_RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).cgroup_id = flow.cgroup_id;
        (*ev).latency_ns = now_ns.wrapping_sub(flow.request_ns);
        (*ev).expiration = if event == EVENT_EXPIRATION { flow.expiration } else { 0 };
        (*ev).ktime_ns = now_ns;
        (*ev).event = event;
        (*ev).endpoint = flow.endpoint;
        (*ev).kind = flow.kind;
        (*ev).method = flow.method;
        (*ev).source = flow.source;
        (*ev).flags = flow.flags;
        (*ev).status = status;
        (*ev).role_len = flow.role_len;
        (*ev).sdk = flow.sdk;
        (*ev)._pad = [0; 6];
        (*ev).role = [0; ROLE_MAX];
        let mut k = 0;
        while k < ROLE_MAX {
            (*ev).role[k] = flow.role[k];
            k += 1;
        }
    }
    entry.submit(NO_WAKEUP);
}
