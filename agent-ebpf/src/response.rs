//! Responses from a metadata endpoint: status code and time to first byte, then, for credential
//! documents, a byte-at-a-time search for `"Expiration":"YYYY-MM-DDThh:mm:ss` that survives any
//! split across TCP segments (its progress lives in the flow, per socket). Only the digits of the
//! timestamp leave the kernel; the secrets before it are read and forgotten.
use agent_common::{
    EVENT_EXPIRATION, EVENT_RESPONSE, Flow, MetadataEvent, PHASE_REQUEST_SENT, PHASE_RESPONDING,
    ROLE_MAX, SCAN_MAX_BYTES, SCRATCH_LEN, counter, dfa::expiration,
};
use aya_ebpf::programs::SkBuffContext;

use crate::{
    maps::{CW_EVENTS, CW_FLOWS, NO_WAKEUP, count},
    packet::{Segment, TCP_FIN},
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
    if seg.tcp_flags & TCP_FIN != 0
        && flow.phase == PHASE_RESPONDING
        && flow.scan < expiration::ACCEPT
    {
        count(counter::REJECT_NO_EXPIRATION);
        flow.scan = expiration::FINISHED;
    }
}

fn first_segment(ctx: &SkBuffContext, seg: &Segment, flow: &mut Flow) {
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
    emit(flow, EVENT_RESPONSE, status, seg.now_ns);
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
        (*ev)._pad = [0; 7];
        (*ev).role = [0; ROLE_MAX];
        let mut k = 0;
        while k < ROLE_MAX {
            (*ev).role[k] = flow.role[k];
            k += 1;
        }
    }
    entry.submit(NO_WAKEUP);
}
