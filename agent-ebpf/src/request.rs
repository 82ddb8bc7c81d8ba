//! Requests to a metadata endpoint: method, path kind, role name and whether an IMDSv2 token
//! header is present. Only the first segment of a request (the one that starts with a method)
//! is parsed; the request line and the headers that matter fit in it in practice.
use agent_common::{
    CredentialSource, FLAG_IMDSV2_TOKEN, Flow, Method, PHASE_REQUEST_SENT, PHASE_RESPONDING,
    ROLE_MAX, RequestKind, SCRATCH_LEN, counter,
    dfa::{expiration, token_header},
};
use aya_ebpf::programs::SkBuffContext;

use crate::{
    maps::{CW_FLOWS, count},
    packet::Segment,
    scratch::{load_payload, run_dfa, wipe_scratch},
};

const MASK: usize = SCRATCH_LEN - 1;
/// The request line must end (at the space before `HTTP/`) within this many bytes.
const REQUEST_LINE_MAX: usize = 256;

const ROLE_PREFIX: &[u8] = b"/latest/meta-data/iam/security-credentials";
const TOKEN_PATH: &[u8] = b"/latest/api/token";
const POD_IDENTITY_PREFIX: &[u8] = b"/v1/credentials";
const ECS_PREFIX: &[u8] = b"/v2/credentials";

pub fn on_segment(ctx: &SkBuffContext, seg: &Segment) {
    if seg.payload_len == 0 {
        return;
    }
    if let Some(flow) = CW_FLOWS.get_ptr_mut(&seg.cookie) {
        let flow = unsafe { &mut *flow };
        if flow.phase == PHASE_REQUEST_SENT {
            if flow.request_seq == seg.seq {
                count(counter::RETRANSMIT);
                return;
            }
            // A later segment of the same request (long headers or a body): not a new request.
            if (seg.seq.wrapping_sub(flow.request_seq) as i32) > 0 {
                return;
            }
        } else if flow.phase == PHASE_RESPONDING && flow.scan < expiration::ACCEPT {
            // The previous credential document on this connection ended without "Expiration".
            count(counter::REJECT_NO_EXPIRATION);
            flow.scan = expiration::FINISHED;
        }
    }

    let Some((buf, n)) = load_payload(ctx, seg, 0) else {
        return;
    };
    // Before any parsing branch: the verifier then walks this 512-step loop on one path only.
    let imdsv2 = has_token_header(buf);
    let mut flow = Flow {
        cgroup_id: seg.cgroup_id,
        request_ns: seg.now_ns,
        expiration: 0,
        request_seq: seg.seq,
        response_next_seq: 0,
        phase: PHASE_REQUEST_SENT,
        endpoint: seg.endpoint_kind,
        kind: RequestKind::Metadata as u8,
        method: Method::Other as u8,
        source: CredentialSource::None as u8,
        flags: 0,
        scan: expiration::FINISHED,
        role_len: 0,
        _pad: [0; 8],
        role: [0; ROLE_MAX],
    };
    if imdsv2 {
        flow.flags |= FLAG_IMDSV2_TOKEN;
    }
    let parsed = parse(buf, n, &mut flow);
    wipe_scratch(buf);
    match parsed {
        Ok(()) => {
            if CW_FLOWS.insert(&seg.cookie, &flow, 0).is_err() {
                count(counter::LOST_FLOW_TABLE);
            }
        }
        Err(reason) => {
            count(reason);
            // Forget any earlier request on this socket so its response is not misattributed.
            let _ = CW_FLOWS.remove(&seg.cookie);
        }
    }
}

#[inline(always)]
fn at(buf: &[u8; SCRATCH_LEN], i: usize) -> u8 {
    buf[i & MASK]
}

#[inline(always)]
fn starts_with(buf: &[u8; SCRATCH_LEN], n: usize, off: usize, prefix: &[u8]) -> bool {
    if off + prefix.len() > n {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if at(buf, off + i) != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Fills `flow` from the request in `buf[..n]`, or returns the reject counter to bump.
///
/// Shaped for the verifier: every loop whose exit position varies is the last step on its path
/// (only the `HTTP/` check follows), so the number of paths stays linear in the loop bounds.
#[inline(always)]
fn parse(buf: &[u8; SCRATCH_LEN], n: usize, flow: &mut Flow) -> Result<(), u32> {
    let path = if starts_with(buf, n, 0, b"GET /") {
        flow.method = Method::Get as u8;
        4
    } else if starts_with(buf, n, 0, b"PUT /") {
        flow.method = Method::Put as u8;
        4
    } else {
        flow.method = Method::Other as u8;
        other_method_path(buf, n)?
    };

    if starts_with(buf, n, path, TOKEN_PATH) && at(buf, path + TOKEN_PATH.len()) == b' ' {
        flow.kind = RequestKind::Token as u8;
        return expect_protocol(buf, n, path + TOKEN_PATH.len());
    }
    if starts_with(buf, n, path, ROLE_PREFIX) {
        let rest = path + ROLE_PREFIX.len();
        let c = at(buf, rest);
        if c == b' ' {
            flow.kind = RequestKind::RoleList as u8;
            return expect_protocol(buf, n, rest);
        }
        if c == b'/' {
            if at(buf, rest + 1) == b' ' {
                flow.kind = RequestKind::RoleList as u8;
                return expect_protocol(buf, n, rest + 1);
            }
            flow.kind = RequestKind::Credentials as u8;
            flow.source = CredentialSource::ImdsRole as u8;
            flow.scan = 0;
            return copy_role(buf, n, rest + 1, flow);
        }
    }
    if starts_with(buf, n, path, POD_IDENTITY_PREFIX) {
        flow.kind = RequestKind::Credentials as u8;
        flow.source = CredentialSource::PodIdentity as u8;
        flow.scan = 0;
    } else if starts_with(buf, n, path, ECS_PREFIX) {
        flow.kind = RequestKind::Credentials as u8;
        flow.source = CredentialSource::EcsTask as u8;
        flow.scan = 0;
    }
    end_of_path(buf, n, path)
}

/// Methods other than GET and PUT: an upper-case token of at most 7 letters, a space and `/`.
#[inline(always)]
fn other_method_path(buf: &[u8; SCRATCH_LEN], n: usize) -> Result<usize, u32> {
    let mut i = 0;
    while i < 8 {
        let c = at(buf, i);
        if c == b' ' && i >= 3 && i + 1 < n && at(buf, i + 1) == b'/' {
            return Ok(i + 1);
        }
        if i >= n || !c.is_ascii_uppercase() {
            break;
        }
        i += 1;
    }
    Err(counter::REJECT_NOT_HTTP)
}

/// Finds the space that ends the path and checks the protocol after it.
#[inline(always)]
fn end_of_path(buf: &[u8; SCRATCH_LEN], n: usize, path: usize) -> Result<(), u32> {
    let mut j = path;
    while j < REQUEST_LINE_MAX {
        if j >= n {
            break;
        }
        let c = at(buf, j);
        if c == b' ' {
            return expect_protocol(buf, n, j);
        }
        if c == b'\r' || c == b'\n' {
            break;
        }
        j += 1;
    }
    Err(counter::REJECT_REQUEST_LINE)
}

/// `space` is the position of the space after the path: ` HTTP/` must follow.
#[inline(always)]
fn expect_protocol(buf: &[u8; SCRATCH_LEN], n: usize, space: usize) -> Result<(), u32> {
    if starts_with(buf, n, space, b" HTTP/") { Ok(()) } else { Err(counter::REJECT_REQUEST_LINE) }
}

/// Copies the role name up to the space that ends the path, accepting only the IAM role-name
/// alphabet (`[A-Za-z0-9+=,.@_-]`) and an optional trailing `/`, so that no other byte of the
/// request can ever reach userspace.
///
/// The byte is copied and the loop goes on only from the bottom of the body: written with the
/// end-of-role test first, LLVM placed the copy-and-advance block before the loop's header,
/// entered by falling through, which Linux 6.1's verifier rejects ("back-edge from insn N to
/// N+1"; agent/tests/old_kernel_cfg.rs replays that check).
#[inline(always)]
fn copy_role(buf: &[u8; SCRATCH_LEN], n: usize, start: usize, flow: &mut Flow) -> Result<(), u32> {
    let mut k = 0;
    while k < ROLE_MAX && start + k < n {
        let c = at(buf, start + k);
        let role_byte = c.is_ascii_alphanumeric()
            || matches!(c, b'+' | b'=' | b',' | b'.' | b'@' | b'_' | b'-');
        if !role_byte {
            break;
        }
        flow.role[k] = c;
        k += 1;
    }
    // The first byte that is not part of the name ends it: a space, or `/` and a space.
    let c = at(buf, start + k);
    let space = if c == b' ' {
        start + k
    } else if c == b'/' && at(buf, start + k + 1) == b' ' {
        start + k + 1
    } else {
        return Err(counter::REJECT_BAD_ROLE);
    };
    flow.role_len = k as u8;
    expect_protocol(buf, n, space)
}

/// True when a header line `X-aws-ec2-metadata-token:` (any case) is in the parsed bytes.
#[inline(always)]
fn has_token_header(buf: &[u8; SCRATCH_LEN]) -> bool {
    let (state, _) = run_dfa(&token_header::TABLE, buf, 0, 0);
    state == token_header::ACCEPT
}
