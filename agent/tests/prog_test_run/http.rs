//! Metadata HTTP through the real programs: requests on egress, responses on ingress.
use agent_common::{
    CredentialSource, EVENT_EXPIRATION, EVENT_RESPONSE, EndpointKind, FLAG_HEADERS_END,
    FLAG_IMDSV2_TOKEN, Flow, MetadataEvent, Method, PHASE_REQUEST_SENT, PHASE_RESPONDING, ROLE_MAX,
    RequestKind, counter, dfa::expiration,
};

use crate::{
    harness::{IMDS_PORT, Kernel, Miss, Outcome, kernel},
    packets::{Ip, Rng, TCP_FIN, TCP_PSH_ACK, tcp_egress, tcp_ingress},
};

const ROLE: &str = "my-role";
const REQUEST_SEQ: u32 = 1000;
const RESPONSE_SEQ: u32 = 0xffff_ff00; // close to wrapping: sequence arithmetic must wrap
const PACKED: u64 = 20261128101500;

/// A credential document as IMDS serves it: the secrets come before `Expiration`.
const DOC: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 313\r\n\r\n\
{\"Code\":\"Success\",\"LastUpdated\":\"2026-11-28T10:00:00Z\",\"Type\":\"AWS-HMAC\",\
\"AccessKeyId\":\"ASIACANARYKEY\",\"SecretAccessKey\":\"canary-secret\",\
\"Token\":\"canary-token-IQoJb3JpZ2luX2VjE\",\"Expiration\":\"2026-11-28T10:15:00Z\"}";

fn credentials_request(headers: &str) -> Vec<u8> {
    format!(
        "GET /latest/meta-data/iam/security-credentials/{ROLE} HTTP/1.1\r\nHost: metadata\r\n{headers}\r\n"
    )
    .into_bytes()
}

fn request(k: &mut Kernel, ip: Ip, seq: u32, payload: &[u8]) -> Result<Outcome, Miss> {
    k.egress(&tcp_egress(ip, IMDS_PORT, seq, TCP_PSH_ACK, payload))
}

/// Response bytes at `offset` into the response stream.
fn response(k: &mut Kernel, ip: Ip, offset: usize, payload: &[u8]) -> Result<Outcome, Miss> {
    response_flags(k, ip, offset, TCP_PSH_ACK, payload)
}

fn response_flags(
    k: &mut Kernel,
    ip: Ip,
    offset: usize,
    flags: u8,
    payload: &[u8],
) -> Result<Outcome, Miss> {
    let seq = RESPONSE_SEQ.wrapping_add(offset as u32);
    k.ingress(&tcp_ingress(ip, IMDS_PORT, seq, flags, payload))
}

fn endpoint(ip: Ip) -> EndpointKind {
    match ip {
        Ip::V4 => EndpointKind::Imds,
        Ip::V6 => EndpointKind::Custom,
    }
}

fn role(bytes: &[u8; ROLE_MAX], len: u8) -> &[u8] {
    &bytes[..usize::from(len).min(ROLE_MAX)]
}

/// The request for `ROLE` with an IMDSv2 token header has been recorded, nothing else happened.
fn assert_credentials_request(k: &mut Kernel, out: &Outcome, ip: Ip) {
    out.assert_nothing("credentials request");
    let flow = k.flow();
    assert_eq!(flow.phase, PHASE_REQUEST_SENT);
    assert_eq!(flow.kind, RequestKind::Credentials as u8);
    assert_eq!(flow.method, Method::Get as u8);
    assert_eq!(flow.source, CredentialSource::ImdsRole as u8);
    assert_eq!(flow.endpoint, endpoint(ip) as u8);
    assert_eq!(flow.flags, FLAG_IMDSV2_TOKEN | FLAG_HEADERS_END);
    assert_eq!(flow.request_seq, REQUEST_SEQ);
    assert_eq!(flow.cgroup_id, k.cgroup_id);
    assert_eq!(flow.scan, 0);
    assert_eq!(role(&flow.role, flow.role_len), ROLE.as_bytes());
}

fn assert_event(k: &Kernel, ev: &MetadataEvent, ip: Ip, event: u8, status: u16, packed: u64) {
    assert_eq!(ev.event, event);
    assert_eq!(ev.status, status);
    assert_eq!(ev.expiration, packed);
    assert_eq!(ev.cgroup_id, k.cgroup_id);
    assert_eq!(ev.endpoint, endpoint(ip) as u8);
    assert_eq!(ev.kind, RequestKind::Credentials as u8);
    assert_eq!(ev.method, Method::Get as u8);
    assert_eq!(ev.source, CredentialSource::ImdsRole as u8);
    assert_eq!(ev.flags & !FLAG_HEADERS_END, FLAG_IMDSV2_TOKEN);
    assert_eq!(role(&ev.role, ev.role_len), ROLE.as_bytes());
    assert!(ev.role[ev.role_len as usize..].iter().all(|&b| b == 0), "role padding is zero");
    assert_eq!(ev._pad, [0; 6]);
    assert!(ev.ktime_ns > 0 && ev.latency_ns < 10_000_000_000, "plausible times");
}

fn key_at() -> usize {
    DOC.windows(expiration::KEY.len()).position(|w| w == expiration::KEY).unwrap()
}

/// Where the timestamp's last digit ends: a segment ending here or later completes the match.
fn value_end() -> usize {
    key_at() + expiration::KEY.len() + 2 + expiration::VALUE_TEMPLATE.len()
}

#[test]
fn credential_document_in_one_segment_ipv4_and_ipv6() {
    let Some(mut k) = kernel() else { return };
    for ip in [Ip::V4, Ip::V6] {
        k.case("one segment", |k| {
            let out = request(
                k,
                ip,
                REQUEST_SEQ,
                &credentials_request("X-aws-ec2-metadata-token: AQAEAF\r\n"),
            )?;
            assert_credentials_request(k, &out, ip);
            let out = response(k, ip, 0, DOC)?;
            assert!(out.counters.is_empty(), "{:?}", out.named_counters());
            assert_eq!(out.events.len(), 2);
            assert_event(k, &out.events[0], ip, EVENT_RESPONSE, 200, 0);
            assert_event(k, &out.events[1], ip, EVENT_EXPIRATION, 0, PACKED);
            let flow = k.flow();
            assert_eq!((flow.phase, flow.scan), (PHASE_RESPONDING, expiration::FINISHED));
            // The connection closing afterwards changes nothing.
            response_flags(k, ip, DOC.len(), TCP_FIN, b"")?
                .assert_nothing("FIN after the document");
            Ok(())
        });
    }
}

/// Two segments with consecutive sequence numbers, split at every byte of the response.
#[test]
fn expiration_split_at_every_byte() {
    let Some(mut k) = kernel() else { return };
    let ip = Ip::V4;
    for split in 1..DOC.len() {
        k.case(&format!("split at {split}"), |k| {
            request(k, ip, REQUEST_SEQ, &credentials_request("X-aws-ec2-metadata-token: t\r\n"))?;
            let first = response(k, ip, 0, &DOC[..split])?;
            let second = response(k, ip, split, &DOC[split..])?;
            if split < 12 {
                // The status line is read from the first segment only (docs/metrics.md).
                first.assert_only_counter(counter::REJECT_BAD_STATUS, "short first segment");
                second.assert_nothing("after a bad status line");
                return Ok(());
            }
            for out in [&first, &second] {
                assert!(out.counters.is_empty(), "split {split}: {:?}", out.named_counters());
            }
            let events: Vec<_> = first.events.iter().chain(&second.events).collect();
            assert_eq!(events.len(), 2, "split {split}");
            assert_event(k, events[0], ip, EVENT_RESPONSE, 200, 0);
            assert_event(k, events[1], ip, EVENT_EXPIRATION, 0, PACKED);
            let in_first = usize::from(split >= value_end());
            assert_eq!(first.events.len(), 1 + in_first, "split {split}");
            Ok(())
        });
    }
}

/// A retransmission of the first segment while the key is incomplete: counted, nothing else.
#[test]
fn retransmitted_segment_changes_nothing() {
    let Some(mut k) = kernel() else { return };
    let ip = Ip::V6;
    for split in key_at()..value_end() {
        k.case(&format!("retransmit at {split}"), |k| {
            request(k, ip, REQUEST_SEQ, &credentials_request("X-aws-ec2-metadata-token: t\r\n"))?;
            let first = response(k, ip, 0, &DOC[..split])?;
            assert_eq!(first.events.len(), 1);
            let before = k.flow();
            response(k, ip, 0, &DOC[..split])?
                .assert_only_counter(counter::RETRANSMIT, "retransmit");
            assert_same_flow(&before, &k.flow());
            // A partial retransmission that ends before the next expected byte: same.
            if split > 20 {
                response(k, ip, 10, &DOC[10..split])?
                    .assert_only_counter(counter::RETRANSMIT, "partial retransmit");
                assert_same_flow(&before, &k.flow());
            }
            let second = response(k, ip, split, &DOC[split..])?;
            assert!(second.counters.is_empty(), "{:?}", second.named_counters());
            assert_eq!(second.events.len(), 1);
            assert_event(k, &second.events[0], ip, EVENT_EXPIRATION, 0, PACKED);
            Ok(())
        });
    }
}

/// Three segments, both splits inside `"Expiration":"…`: exactly one expiration in order; a
/// gap stops the search for that response (counted once), and the late segment changes nothing.
#[test]
fn three_segments_in_and_out_of_order() {
    let Some(mut k) = kernel() else { return };
    let ip = Ip::V4;
    let (start, end) = (key_at(), value_end());
    for i in start..end {
        for j in i + 1..=end {
            k.case(&format!("in order {i},{j}"), |k| {
                request(
                    k,
                    ip,
                    REQUEST_SEQ,
                    &credentials_request("X-aws-ec2-metadata-token: t\r\n"),
                )?;
                let mut events = Vec::new();
                for (offset, part) in [(0, &DOC[..i]), (i, &DOC[i..j]), (j, &DOC[j..])] {
                    let out = response(k, ip, offset, part)?;
                    assert!(out.counters.is_empty(), "{i},{j}: {:?}", out.named_counters());
                    events.extend(out.events);
                }
                assert_eq!(events.len(), 2, "{i},{j}");
                assert_event(k, &events[1], ip, EVENT_EXPIRATION, 0, PACKED);
                Ok(())
            });
            k.case(&format!("out of order {i},{j}"), |k| {
                request(
                    k,
                    ip,
                    REQUEST_SEQ,
                    &credentials_request("X-aws-ec2-metadata-token: t\r\n"),
                )?;
                assert_eq!(response(k, ip, 0, &DOC[..i])?.events.len(), 1);
                response(k, ip, j, &DOC[j..])?
                    .assert_only_counter(counter::REJECT_OUT_OF_ORDER, "segment after a gap");
                let after_gap = k.flow();
                assert_eq!(after_gap.scan, expiration::FINISHED);
                response(k, ip, i, &DOC[i..j])?.assert_nothing("late segment");
                assert_same_flow(&after_gap, &k.flow());
                response_flags(k, ip, DOC.len(), TCP_FIN, b"")?.assert_nothing("FIN");
                assert!(k.flows().is_empty(), "the connection's flow goes with it");
                Ok(())
            });
        }
    }
}

/// The second half arriving first is taken for the start of the response: not a status line.
#[test]
fn second_half_first() {
    let Some(mut k) = kernel() else { return };
    let split = key_at() + 5;
    k.case("second half first", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &credentials_request(""))?;
        response(k, Ip::V4, split, &DOC[split..])?
            .assert_only_counter(counter::REJECT_BAD_STATUS, "second half first");
        response(k, Ip::V4, 0, &DOC[..split])?.assert_nothing("first half late");
        Ok(())
    });
}

/// A retransmitted request is counted and changes nothing; a later segment of the same request
/// (the rest of its headers) is not a new request; a request sent after a complete one, before
/// its response, is pipelining (counted, not matched to a response).
#[test]
fn retransmitted_and_continued_requests() {
    let Some(mut k) = kernel() else { return };
    k.case("retransmitted request", |k| {
        let req = credentials_request("X-aws-ec2-metadata-token: t\r\n");
        request(k, Ip::V4, REQUEST_SEQ, &req)?;
        let before = k.flow();
        request(k, Ip::V4, REQUEST_SEQ, &req)?
            .assert_only_counter(counter::RETRANSMIT, "retransmit");
        assert_same_flow(&before, &k.flow());
        let next = REQUEST_SEQ + req.len() as u32;
        request(k, Ip::V4, next, b"GET /not/a/request/line HTTP/1.1\r\n\r\n")?
            .assert_only_counter(counter::REJECT_PIPELINED, "pipelined");
        assert_same_flow(&before, &k.flow());
        Ok(())
    });
    k.case("continued header block", |k| {
        let req = credentials_request("X-aws-ec2-metadata-token: t\r\n");
        // Cut inside the token header's name: found across the two segments.
        let cut = req.len() - 20;
        request(k, Ip::V4, REQUEST_SEQ, &req[..cut])?.assert_nothing("first part");
        assert_eq!(k.flow().flags, 0);
        request(k, Ip::V4, REQUEST_SEQ + cut as u32, &req[cut..])?.assert_nothing("the rest");
        let flow = k.flow();
        assert_eq!(flow.flags, FLAG_IMDSV2_TOKEN | FLAG_HEADERS_END);
        assert_eq!(flow.request_next_seq, REQUEST_SEQ + req.len() as u32);
        assert_eq!(flow.request_seq, REQUEST_SEQ);
        Ok(())
    });
}

/// What each kind of request is recorded as (requests send no events; the flow holds it).
#[test]
fn request_kinds() {
    let Some(mut k) = kernel() else { return };
    let cases: &[(&str, RequestKind, Method, CredentialSource, &str)] = &[
        (
            "GET /latest/meta-data/iam/security-credentials/my-role HTTP/1.1",
            RequestKind::Credentials,
            Method::Get,
            CredentialSource::ImdsRole,
            "my-role",
        ),
        (
            "GET /latest/meta-data/iam/security-credentials/my-role/ HTTP/1.1",
            RequestKind::Credentials,
            Method::Get,
            CredentialSource::ImdsRole,
            "my-role",
        ),
        (
            "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1",
            RequestKind::RoleList,
            Method::Get,
            CredentialSource::None,
            "",
        ),
        (
            "GET /latest/meta-data/iam/security-credentials HTTP/1.1",
            RequestKind::RoleList,
            Method::Get,
            CredentialSource::None,
            "",
        ),
        (
            "PUT /latest/api/token HTTP/1.1",
            RequestKind::Token,
            Method::Put,
            CredentialSource::None,
            "",
        ),
        (
            "GET /v2/credentials/0b1c2d3e-ecs-credential-id HTTP/1.1",
            RequestKind::Credentials,
            Method::Get,
            CredentialSource::EcsTask,
            "",
        ),
        (
            "GET /v1/credentials HTTP/1.1",
            RequestKind::Credentials,
            Method::Get,
            CredentialSource::PodIdentity,
            "",
        ),
        (
            "GET /latest/meta-data/instance-id HTTP/1.1",
            RequestKind::Metadata,
            Method::Get,
            CredentialSource::None,
            "",
        ),
        (
            "HEAD /latest/api/token HTTP/1.0",
            RequestKind::Token,
            Method::Other,
            CredentialSource::None,
            "",
        ),
        ("OPTIONS / HTTP/1.1", RequestKind::Metadata, Method::Other, CredentialSource::None, ""),
    ];
    let long_role = "r".repeat(ROLE_MAX);
    let long = format!("GET /latest/meta-data/iam/security-credentials/{long_role} HTTP/1.1");
    let all = cases.iter().copied().chain([(
        long.as_str(),
        RequestKind::Credentials,
        Method::Get,
        CredentialSource::ImdsRole,
        long_role.as_str(),
    )]);
    for (line, kind, method, source, role_name) in all {
        k.case(line, |k| {
            let req = format!("{line}\r\nHost: metadata\r\n\r\n");
            request(k, Ip::V4, REQUEST_SEQ, req.as_bytes())?.assert_nothing(line);
            let flow = k.flow();
            assert_eq!(flow.kind, kind as u8, "{line}");
            assert_eq!(flow.method, method as u8, "{line}");
            assert_eq!(flow.source, source as u8, "{line}");
            assert_eq!(flow.flags, FLAG_HEADERS_END, "{line}");
            assert_eq!(role(&flow.role, flow.role_len), role_name.as_bytes(), "{line}");
            let scans = kind == RequestKind::Credentials;
            assert_eq!(flow.scan == 0, scans, "{line}: only credential documents are scanned");
            Ok(())
        });
    }
}

/// Malformed requests: each bumps exactly its reject reason, records nothing, and forgets an
/// earlier request on the same connection so that its response is not misattributed.
#[test]
fn malformed_requests() {
    let Some(mut k) = kernel() else { return };
    let mut rng = Rng::new(0x5eed_0001);
    let mut cases: Vec<(String, Vec<u8>, u32)> = vec![
        (
            "TLS hello".into(),
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
            counter::REJECT_NOT_HTTP,
        ),
        ("zeros".into(), vec![0; 64], counter::REJECT_NOT_HTTP),
        ("0xff".into(), vec![0xff; 600], counter::REJECT_NOT_HTTP),
        ("one byte".into(), b"G".to_vec(), counter::REJECT_NOT_HTTP),
        ("method only".into(), b"GET".to_vec(), counter::REJECT_NOT_HTTP),
        ("lower-case method".into(), b"get / HTTP/1.1\r\n\r\n".to_vec(), counter::REJECT_NOT_HTTP),
        (
            "method too long".into(),
            b"PROPPATCH / HTTP/1.1\r\n\r\n".to_vec(),
            counter::REJECT_NOT_HTTP,
        ),
        ("no path".into(), b"GET  HTTP/1.1\r\n\r\n".to_vec(), counter::REJECT_NOT_HTTP),
        ("path cut short".into(), b"GET /".to_vec(), counter::REJECT_REQUEST_LINE),
        (
            "no protocol".into(),
            b"GET /latest/meta-data/\r\n\r\n".to_vec(),
            counter::REJECT_REQUEST_LINE,
        ),
        (
            "bad protocol".into(),
            b"GET /latest/meta-data/ HTTX/1.1\r\n\r\n".to_vec(),
            counter::REJECT_REQUEST_LINE,
        ),
        (
            "request line of 600".into(),
            format!("GET /latest/meta-data/{} HTTP/1.1\r\n\r\n", "a".repeat(600)).into_bytes(),
            counter::REJECT_REQUEST_LINE,
        ),
        (
            "request line of 2000".into(),
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000)).into_bytes(),
            counter::REJECT_REQUEST_LINE,
        ),
        (
            "role with %".into(),
            b"GET /latest/meta-data/iam/security-credentials/ro%20le HTTP/1.1\r\n\r\n".to_vec(),
            counter::REJECT_BAD_ROLE,
        ),
        (
            "role with NUL".into(),
            b"GET /latest/meta-data/iam/security-credentials/ro\0le HTTP/1.1\r\n\r\n".to_vec(),
            counter::REJECT_BAD_ROLE,
        ),
        (
            "role of 65".into(),
            format!(
                "GET /latest/meta-data/iam/security-credentials/{} HTTP/1.1\r\n\r\n",
                "r".repeat(65)
            )
            .into_bytes(),
            counter::REJECT_BAD_ROLE,
        ),
        (
            "role cut short".into(),
            b"GET /latest/meta-data/iam/security-credentials/my-ro".to_vec(),
            counter::REJECT_BAD_ROLE,
        ),
        (
            "role then junk".into(),
            b"GET /latest/meta-data/iam/security-credentials/my-role junk\r\n\r\n".to_vec(),
            counter::REJECT_REQUEST_LINE,
        ),
    ];
    for n in 0..40 {
        // Binary garbage that does not start with an upper-case letter.
        let mut garbage = rng.some_bytes(1400);
        if garbage[0].is_ascii_uppercase() {
            garbage[0] = 0x80;
        }
        cases.push((format!("garbage {n}"), garbage, counter::REJECT_NOT_HTTP));
        // A real method and path start, then binary bytes without space or line end.
        let mut tail: Vec<u8> = rng.some_bytes(700);
        tail.retain(|&b| !matches!(b, b' ' | b'\r' | b'\n'));
        cases.push((
            format!("GET garbage {n}"),
            [b"GET /".as_slice(), &tail].concat(),
            counter::REJECT_REQUEST_LINE,
        ));
    }
    for (what, payload, reason) in &cases {
        k.case(what, |k| {
            request(k, Ip::V4, REQUEST_SEQ, payload)?.assert_only_counter(*reason, what);
            assert!(k.flows().is_empty(), "{what}: nothing recorded");
            Ok(())
        });
        // On a keep-alive connection, after a complete exchange.
        k.case(what, |k| {
            let req = credentials_request("");
            request(k, Ip::V4, REQUEST_SEQ, &req)?;
            assert_eq!(response(k, Ip::V4, 0, DOC)?.events.len(), 2);
            let next = REQUEST_SEQ + req.len() as u32;
            request(k, Ip::V4, next, payload)?.assert_only_counter(*reason, what);
            assert!(k.flows().is_empty(), "{what}: the earlier request is forgotten");
            response(k, Ip::V4, DOC.len(), DOC)?
                .assert_only_counter(counter::REJECT_NO_REQUEST, "response after it");
            Ok(())
        });
    }
}

/// Responses that are not a credential document, or that break off.
#[test]
fn unusual_responses() {
    let Some(mut k) = kernel() else { return };
    k.case("response without request", |k| {
        response(k, Ip::V4, 0, DOC)?.assert_only_counter(counter::REJECT_NO_REQUEST, "no request");
        response_flags(k, Ip::V4, DOC.len(), TCP_FIN, b"")?.assert_nothing("bare FIN");
        Ok(())
    });
    k.case("404", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &credentials_request("X-aws-ec2-metadata-token: t\r\n"))?;
        let out = response(k, Ip::V4, 0, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        assert!(out.counters.is_empty());
        assert_eq!(out.events.len(), 1);
        assert_event(k, &out.events[0], Ip::V4, EVENT_RESPONSE, 404, 0);
        // A 404 body is not scanned, even when it contains the key.
        response(k, Ip::V4, 46, &DOC[60..])?.assert_nothing("404 body");
        response_flags(k, Ip::V4, 46 + DOC.len() - 60, TCP_FIN, b"")?.assert_nothing("FIN");
        Ok(())
    });
    for (what, status_line) in [
        ("not HTTP", &b"SSH-2.0-OpenSSH_9.2\r\n"[..]),
        ("letters for a code", b"HTTP/1.1 2OO OK\r\n\r\n"),
        ("no space", b"HTTP/1.1_200 OK\r\n\r\n"),
        ("eleven bytes", b"HTTP/1.1 20"),
        ("binary", b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d"),
    ] {
        k.case(what, |k| {
            request(k, Ip::V4, REQUEST_SEQ, &credentials_request(""))?;
            response(k, Ip::V4, 0, status_line)?
                .assert_only_counter(counter::REJECT_BAD_STATUS, what);
            response(k, Ip::V4, status_line.len(), &DOC[60..])?.assert_nothing("after it");
            Ok(())
        });
    }
    k.case("document without Expiration", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &credentials_request(""))?;
        let doc = b"HTTP/1.1 200 OK\r\n\r\n{\"Code\":\"Success\",\"Expirations\":\"2026-11-28T10:15:00Z\",\"Token\":\"x\"}";
        let out = response(k, Ip::V4, 0, doc)?;
        assert!(out.counters.is_empty());
        assert_eq!(out.events.len(), 1);
        response_flags(k, Ip::V4, doc.len(), TCP_FIN, b"")?
            .assert_only_counter(counter::REJECT_NO_EXPIRATION, "FIN without Expiration");
        response_flags(k, Ip::V4, doc.len() + 1, TCP_FIN, b"")?.assert_nothing("second FIN");
        Ok(())
    });
    for bad in ["\"2026/11/28T10:15:00Z\"", "1795860900", "\"2026-11-28 10:15:00Z\"", "\"\u{ff}\""]
    {
        k.case(bad, |k| {
            request(k, Ip::V4, REQUEST_SEQ, &credentials_request(""))?;
            let doc = format!("HTTP/1.1 200 OK\r\n\r\n{{\"Token\":\"x\",\"Expiration\":{bad}}}");
            let out = response(k, Ip::V4, 0, doc.as_bytes())?;
            assert_eq!(out.named_counters(), [("REJECT_BAD_TIMESTAMP", 1)].into(), "{bad}");
            assert_eq!(out.events.len(), 1, "{bad}: only the response event");
            Ok(())
        });
    }
    k.case("next request while a document is unfinished", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &credentials_request(""))?;
        response(k, Ip::V4, 0, &DOC[..key_at()])?;
        let next = REQUEST_SEQ + 100;
        request(k, Ip::V4, next, &credentials_request(""))?
            .assert_only_counter(counter::REJECT_NO_EXPIRATION, "keep-alive request");
        assert_eq!(k.flow().request_seq, next);
        Ok(())
    });
}

/// Packets too short for their own headers, to and from the endpoint: nothing happens. (The
/// kernel refuses test runs shorter than an Ethernet plus a fixed IP header, so the cuts start
/// there; shorter packets never reach a `cgroup_skb` program from a socket either.)
#[test]
fn truncated_headers() {
    let Some(mut k) = kernel() else { return };
    let full = tcp_egress(Ip::V4, IMDS_PORT, REQUEST_SEQ, TCP_PSH_ACK, &credentials_request(""));
    let full6 = tcp_ingress(Ip::V6, IMDS_PORT, RESPONSE_SEQ, TCP_PSH_ACK, DOC);
    // Cut right after the IP header, inside the TCP header, and right after it.
    for cut in [34, 40, 47, 53, 54] {
        k.case(&format!("IPv4 cut at {cut}"), |k| {
            k.egress(&full[..cut])?.assert_nothing("truncated IPv4");
            Ok(())
        });
    }
    for cut in [54, 60, 70, 73, 74] {
        k.case(&format!("IPv6 cut at {cut}"), |k| {
            request(k, Ip::V6, REQUEST_SEQ, &credentials_request(""))?;
            k.ingress(&full6[..cut])?.assert_nothing("truncated IPv6");
            Ok(())
        });
    }
    // An IPv4 header length pointing past the packet.
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x4f;
    k.case("IHL 15", |k| {
        k.egress(&bad_ihl[..14 + 50])?.assert_nothing("IHL past the end");
        Ok(())
    });
    // A version nibble that disagrees with the Ethernet type, and one that is neither.
    for first in [0x65, 0x00, 0xff] {
        let mut wrong = full.clone();
        wrong[14] = first;
        k.case("version nibble", |k| {
            k.egress(&wrong)?.assert_nothing("wrong IP version");
            Ok(())
        });
    }
    // A TCP data offset past the packet: the payload is empty.
    let mut bad_doff = tcp_egress(Ip::V4, IMDS_PORT, REQUEST_SEQ, TCP_PSH_ACK, b"GET");
    bad_doff[14 + 20 + 12] = 0xf0;
    k.case("data offset 60", |k| {
        k.egress(&bad_doff)?.assert_nothing("data offset past the end");
        Ok(())
    });
}

fn assert_same_flow(a: &Flow, b: &Flow) {
    let bytes = |f: &Flow| {
        // SAFETY: Flow is plain old data with explicit padding.
        unsafe { std::slice::from_raw_parts((f as *const Flow).cast::<u8>(), size_of::<Flow>()) }
            .to_vec()
    };
    assert_eq!(bytes(a), bytes(b), "the flow must not change");
}
