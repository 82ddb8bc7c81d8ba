//! Requests to a metadata endpoint: method, path kind and IAM role from the request line, and
//! the header block (is there an IMDSv2 token header, which SDK family its `User-Agent` names,
//! where does it end, does another request follow it) wherever it lies: past the first 512
//! bytes, in later segments. Each request on a connection is recorded once, in the socket's
//! flow, and its response is matched to it there.
//!
//! Both scans are table automata (`agent_common::dfa`): a constant number of steps with no
//! data-dependent branch, so the verifier's work does not grow with what the bytes are.
use agent_common::{
    CredentialSource, EndpointKind, FLAG_CANDIDATE, FLAG_PIPELINED, Flow, Method, PHASE_LATE,
    PHASE_REQUEST_SENT, ROLE_MAX, RequestKind, SCAN_MAX_BYTES, SCRATCH_LEN, counter,
    dfa::{
        expiration, headers,
        request_line::{self, Scan, Verdict},
    },
    sdk::Sdk,
};
use aya_ebpf::programs::SkBuffContext;

use crate::{
    ancestry::remember_parent,
    maps::{CW_FLOWS, count},
    opaque::opaque,
    packet::{Segment, TCP_RST},
    response,
    scratch::{forget, load_payload, wipe_scratch},
};

const MASK: usize = SCRATCH_LEN - 1;
const SCAN_CHUNKS: u32 = (SCAN_MAX_BYTES / SCRATCH_LEN) as u32;

pub fn on_segment(ctx: &SkBuffContext, seg: &Segment) {
    if seg.payload_len > 0 {
        let _ = on_payload(ctx, seg);
    }
    if seg.tcp_flags & TCP_RST != 0 {
        // The client aborted the connection (a FIN alone is a half-close: the answer may come).
        response::connection_ended(seg);
    }
}

/// What a segment with payload is to the connection's flow.
const RETRANSMIT: u64 = 0;
/// The next bytes of a header block that has not ended.
const HEADERS: u64 = 1;
/// After an unanswered request's header block: its body, or a pipelined request.
const AFTER_UNANSWERED: u64 = 2;
/// A new request (the connection's first, or the next one on a kept-alive connection).
const NEW: u64 = 3;

#[inline(always)]
fn role_of(flow: &Flow, seg: &Segment) -> u64 {
    // Bytes before the next expected one were seen already, whatever the phase (a request
    // retransmitted after its answer began is not a new request).
    if (seg.seq.wrapping_sub(flow.request_seq) as i32) <= 0
        || (seg.seq.wrapping_sub(flow.request_next_seq) as i32) < 0
    {
        return RETRANSMIT;
    }
    if flow.phase != PHASE_REQUEST_SENT && flow.phase != PHASE_LATE {
        NEW
    } else if seg.seq == flow.request_next_seq && flow.header < headers::END {
        HEADERS
    } else {
        AFTER_UNANSWERED
    }
}

/// Shaped for the verifier: both scans (request line, header block) run first, on one path
/// whatever the segment is, and every decision comes after them. Decided first, each kind of
/// segment would walk the loops again (the egress program went past 1M instructions).
fn on_payload(ctx: &SkBuffContext, seg: &Segment) -> Result<(), i64> {
    let (role, header) = match CW_FLOWS.get_ptr_mut(&seg.cookie) {
        Some(flow) => {
            let flow = unsafe { &*flow };
            let scan = headers::Scan { state: flow.header, flags: flow.flags, sdk: flow.sdk };
            (role_of(flow, seg), scan)
        }
        None => (NEW, headers::Scan::default()),
    };
    if role == RETRANSMIT {
        count(counter::RETRANSMIT);
        return Ok(());
    }
    // A continued header block goes on from where the flow's stopped; any other segment is
    // read as the start of a request.
    let continued = role == HEADERS;
    let start = if continued {
        u64::from(header.state) | (u64::from(header.flags) << 8) | (u64::from(header.sdk) << 16)
    } else {
        0
    };
    let packed = forget(start | (role << 24))?;
    let role = packed >> 24;
    let header = headers::Scan {
        state: packed as u8,
        flags: (packed >> 8) as u8,
        sdk: (packed >> 16) as u8,
    };

    let (buf, _) = load_payload(ctx, seg, 0).ok_or(0i64)?;
    let line = scan_request_line(buf);
    let mut role_name = [0u8; ROLE_MAX];
    copy_role(&line, buf, &mut role_name);
    let header = scan_headers(ctx, seg, buf, header);

    if role == HEADERS {
        if let Some(flow) = CW_FLOWS.get_ptr_mut(&seg.cookie) {
            update_headers(seg, unsafe { &mut *flow }, header);
        }
    } else if role == AFTER_UNANSWERED {
        if line.state == request_line::ACCEPT {
            // Sent before the previous request was answered: not matched to a response.
            count(counter::REJECT_PIPELINED);
        }
    } else {
        if let Some(flow) = CW_FLOWS.get_ptr_mut(&seg.cookie) {
            response::finish(unsafe { &mut *flow });
        }
        if let Some(mut flow) = record(seg, &line, &role_name) {
            update_headers(seg, &mut flow, header);
            if CW_FLOWS.insert(&seg.cookie, &flow, 0).is_err() {
                count(counter::LOST_FLOW_TABLE);
            }
            // Requests are few (a table lookup each is nothing next to the parsing above), and
            // a short-lived client may be gone before its event is read.
            remember_parent(ctx, seg.cgroup_id);
        }
    }
    Ok(())
}

#[inline(always)]
fn scan_request_line(buf: &[u8; SCRATCH_LEN]) -> Scan {
    let mut scan = Scan::default();
    let mut i = 0;
    while i < SCRATCH_LEN {
        request_line::step(&mut scan, buf[i]);
        i += 1;
    }
    scan
}

/// The request as a flow; None (and the reason counted, any earlier request on the socket
/// forgotten so that its response is not misattributed) when it is not one.
#[inline(always)]
fn record(seg: &Segment, scan: &Scan, role: &[u8; ROLE_MAX]) -> Option<Flow> {
    let reason = match request_line::verdict(scan.state) {
        Verdict::Accept if scan.role_len as usize <= ROLE_MAX => None,
        Verdict::Accept | Verdict::BadRole => Some(counter::REJECT_BAD_ROLE),
        Verdict::NotHttp => Some(counter::REJECT_NOT_HTTP),
        Verdict::BadLine => Some(counter::REJECT_REQUEST_LINE),
    };
    if let Some(reason) = reason {
        count(reason);
        let _ = CW_FLOWS.remove(&seg.cookie);
        return None;
    }
    let mut flow = Flow {
        cgroup_id: seg.cgroup_id,
        request_ns: seg.now_ns,
        response_ns: 0,
        expiration: 0,
        request_seq: seg.seq,
        request_next_seq: seg.seq,
        response_next_seq: 0,
        status: 0,
        phase: PHASE_REQUEST_SENT,
        endpoint: seg.endpoint_kind,
        kind: RequestKind::Metadata as u8,
        method: match scan.method() {
            request_line::METHOD_GET => Method::Get as u8,
            request_line::METHOD_PUT => Method::Put as u8,
            _ => Method::Other as u8,
        },
        source: CredentialSource::None as u8,
        flags: 0,
        scan: expiration::FINISHED,
        role_len: if scan.kind() == request_line::KIND_IMDS_ROLE { scan.role_len as u8 } else { 0 },
        header: headers::IN_LINE,
        sdk: Sdk::None as u8,
        role: *role,
    };
    let (kind, source) = match scan.kind() {
        request_line::KIND_TOKEN => (RequestKind::Token, CredentialSource::None),
        request_line::KIND_ROLE_LIST => (RequestKind::RoleList, CredentialSource::None),
        request_line::KIND_IMDS_ROLE => (RequestKind::Credentials, CredentialSource::ImdsRole),
        request_line::KIND_ECS => (RequestKind::Credentials, CredentialSource::EcsTask),
        request_line::KIND_POD_IDENTITY => {
            (RequestKind::Credentials, CredentialSource::PodIdentity)
        }
        _ => (RequestKind::Metadata, candidate_source(seg.endpoint_kind)),
    };
    flow.kind = kind as u8;
    flow.source = source as u8;
    if kind == RequestKind::Credentials {
        flow.scan = 0;
    } else if source != CredentialSource::None && flow.method == Method::Get as u8 {
        // Any other path of a container endpoint: the response decides (see FLAG_CANDIDATE).
        flow.flags = FLAG_CANDIDATE;
        flow.scan = 0;
    } else {
        flow.source = CredentialSource::None as u8;
    }
    Some(flow)
}

/// Whose credentials a container endpoint's document would be; None for IMDS, where only the
/// role paths deliver credentials.
#[inline(always)]
fn candidate_source(endpoint: u8) -> CredentialSource {
    match EndpointKind::from_u8(endpoint) {
        EndpointKind::Imds => CredentialSource::None,
        EndpointKind::PodIdentity => CredentialSource::PodIdentity,
        EndpointKind::Ecs | EndpointKind::Custom => CredentialSource::EcsTask,
    }
}

/// Copies the role the automaton delimited (every byte of it checked against the IAM role-name
/// alphabet, its length against ROLE_MAX by `record`): no other byte of the request can reach
/// userspace. Branch-free (the length is hidden from LLVM, which would turn the mask into a
/// compare, a branch on BPF), so that the 64 steps do not multiply the verifier's paths.
#[inline(always)]
fn copy_role(scan: &Scan, buf: &[u8; SCRATCH_LEN], role: &mut [u8; ROLE_MAX]) {
    let start = scan.role_start as usize;
    let present = u64::from(scan.kind() == request_line::KIND_IMDS_ROLE);
    let len = opaque(u64::from(scan.role_len) * present);
    let mut k = 0;
    while k < ROLE_MAX {
        // All ones while k < len, else 0.
        let inside = ((k as u64).wrapping_sub(len) >> 63) as u8;
        role[k] = buf[start.wrapping_add(k) & MASK] & 0u8.wrapping_sub(inside);
        k += 1;
    }
}

/// Runs the header automaton over this segment's payload from where `scan` stopped: over
/// `first`, the payload's first chunk (loaded already, for the request line), then over the
/// chunks after it. Wipes each.
#[inline(always)]
fn scan_headers(
    ctx: &SkBuffContext,
    seg: &Segment,
    first: &mut [u8; SCRATCH_LEN],
    mut scan: headers::Scan,
) -> headers::Scan {
    run_headers(first, &mut scan);
    wipe_scratch(first);
    let mut chunk = 1;
    while chunk < SCAN_CHUNKS {
        let skip = chunk * SCRATCH_LEN as u32;
        if skip >= seg.payload_len {
            break;
        }
        let Some((buf, _)) = load_payload(ctx, seg, skip) else {
            break;
        };
        run_headers(buf, &mut scan);
        wipe_scratch(buf);
        chunk += 1;
    }
    scan
}

/// The header automaton over the whole scratch buffer: a constant iteration count and no
/// data-dependent branch (bytes past the loaded length are zero, which every state ignores). The
/// flags and the SDK id travel in one accumulator the entries' actions are ORed into.
#[inline(always)]
fn run_headers(buf: &[u8; SCRATCH_LEN], scan: &mut headers::Scan) {
    let (mut state, mut acc) = (scan.state, scan.packed());
    let mut i = 0;
    while i < SCRATCH_LEN {
        (state, acc) = headers::step_packed(state, acc, buf[i]);
        i += 1;
    }
    scan.unpack(state, acc);
}

/// Stores what the header scan found in the flow.
#[inline(always)]
fn update_headers(seg: &Segment, flow: &mut Flow, mut scan: headers::Scan) {
    if seg.payload_len as usize > SCAN_MAX_BYTES && scan.state < headers::END {
        // The rest of the block was not read: stop looking rather than misread it. A
        // User-Agent may have been in it: the client is unknown, not "sent none".
        count(counter::REJECT_SCAN_LIMIT);
        scan.state = headers::BODY;
        if scan.sdk == Sdk::None as u8 {
            scan.sdk = Sdk::Other as u8;
        }
    }
    if scan.flags & FLAG_PIPELINED != 0 && flow.flags & FLAG_PIPELINED == 0 {
        count(counter::REJECT_PIPELINED);
    }
    flow.header = scan.state;
    flow.flags |= scan.flags;
    flow.sdk = scan.sdk;
    flow.request_next_seq = seg.seq.wrapping_add(seg.payload_len);
}
