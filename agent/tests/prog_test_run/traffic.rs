//! Credential traffic as current SDKs and credential servers send it (issue 16): the extended
//! IMDS path, container credentials on any path (recognised by the document that comes back),
//! pipelined requests, chunked documents, a token header past the first 512 bytes, and requests
//! that get no response.
use agent_common::{
    CredentialSource, EVENT_EXPIRATION, EVENT_NO_RESPONSE, EVENT_RESPONSE, FLAG_CANDIDATE,
    FLAG_IMDSV2_TOKEN, FLAG_PIPELINED, MetadataEvent, Method, PHASE_LATE, ROLE_MAX, RequestKind,
    counter,
};

use crate::{
    harness::{IMDS_PORT, Kernel, Miss, Outcome, kernel},
    packets::{Ip, TCP_FIN, TCP_PSH_ACK, tcp_egress, tcp_ingress},
};

const REQUEST_SEQ: u32 = 5000;
const RESPONSE_SEQ: u32 = 0x7fff_fff0;
const PACKED: u64 = 20261128101500;
const TCP_RST: u8 = 0x04;
const BODY: &str = "{\"Code\":\"Success\",\"LastUpdated\":\"2026-11-28T10:00:00Z\",\
\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIACANARYKEY\",\"SecretAccessKey\":\"canary-secret\",\
\"Token\":\"canary-token-IQoJb3JpZ2luX2VjE\",\"AccountId\":\"123456789012\",\
\"Expiration\":\"2026-11-28T10:15:00Z\"}";

fn document() -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}", BODY.len()).into_bytes()
}

/// The document sent `Transfer-Encoding: chunked`, a chunk boundary at each of `cuts` (offsets
/// into the body).
fn chunked(cuts: &[usize]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let bounds: Vec<usize> =
        [0].into_iter().chain(cuts.iter().copied()).chain([BODY.len()]).collect();
    for w in bounds.windows(2) {
        out.extend_from_slice(format!("{:x}\r\n", w[1] - w[0]).as_bytes());
        out.extend_from_slice(&BODY.as_bytes()[w[0]..w[1]]);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: metadata\r\n{headers}\r\n").into_bytes()
}

fn request(k: &mut Kernel, ip: Ip, seq: u32, payload: &[u8]) -> Result<Outcome, Miss> {
    request_flags(k, ip, seq, TCP_PSH_ACK, payload)
}

fn request_flags(
    k: &mut Kernel,
    ip: Ip,
    seq: u32,
    flags: u8,
    bytes: &[u8],
) -> Result<Outcome, Miss> {
    k.egress(&tcp_egress(ip, IMDS_PORT, seq, flags, bytes))
}

fn response(k: &mut Kernel, ip: Ip, offset: usize, payload: &[u8]) -> Result<Outcome, Miss> {
    response_flags(k, ip, offset, TCP_PSH_ACK, payload)
}

fn response_flags(
    k: &mut Kernel,
    ip: Ip,
    offset: usize,
    flags: u8,
    bytes: &[u8],
) -> Result<Outcome, Miss> {
    let seq = RESPONSE_SEQ.wrapping_add(offset as u32);
    k.ingress(&tcp_ingress(ip, IMDS_PORT, seq, flags, bytes))
}

fn role(ev: &MetadataEvent) -> &[u8] {
    &ev.role[..usize::from(ev.role_len).min(ROLE_MAX)]
}

fn kinds(out: &Outcome) -> Vec<(u8, u8, u16)> {
    out.events.iter().map(|e| (e.event, e.kind, e.status)).collect()
}

const CREDENTIALS: u8 = RequestKind::Credentials as u8;
const METADATA: u8 = RequestKind::Metadata as u8;

#[test]
fn extended_imds_paths() {
    let Some(mut k) = kernel() else { return };
    let base = "/latest/meta-data/iam/security-credentials-extended/";
    k.case("extended role list", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &get(base, ""))?.assert_nothing("request");
        assert_eq!(k.flow().kind, RequestKind::RoleList as u8);
        let out = response(k, Ip::V4, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nmy-role")?;
        assert_eq!(kinds(&out), [(EVENT_RESPONSE, RequestKind::RoleList as u8, 200)]);
        Ok(())
    });
    k.case("extended credentials", |k| {
        let req = get(&format!("{base}my-role"), "X-aws-ec2-metadata-token: t\r\n");
        request(k, Ip::V4, REQUEST_SEQ, &req)?.assert_nothing("request");
        let out = response(k, Ip::V4, 0, &document())?;
        assert!(out.counters.is_empty(), "{:?}", out.named_counters());
        assert_eq!(
            kinds(&out),
            [(EVENT_RESPONSE, CREDENTIALS, 200), (EVENT_EXPIRATION, CREDENTIALS, 0)]
        );
        for ev in &out.events {
            assert_eq!(role(ev), b"my-role");
            assert_eq!(ev.source, CredentialSource::ImdsRole as u8);
            assert_eq!(ev.flags & FLAG_IMDSV2_TOKEN, FLAG_IMDSV2_TOKEN);
        }
        assert_eq!(out.events[1].expiration, PACKED);
        Ok(())
    });
    k.case("extended 404", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &get(&format!("{base}my-role"), ""))?;
        let out = response(k, Ip::V4, 0, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        assert_eq!(kinds(&out), [(EVENT_RESPONSE, CREDENTIALS, 404)]);
        Ok(())
    });
}

/// Ip::V6's endpoint is `custom`: any GET there is a candidate, decided by its response.
#[test]
fn container_credentials_on_any_path() {
    let Some(mut k) = kernel() else { return };
    for path in ["/creds", "/role/my-role", "/", "/v3/anything?x=1"] {
        k.case(path, |k| {
            request(k, Ip::V6, REQUEST_SEQ, &get(path, ""))?.assert_nothing("request");
            let flow = k.flow();
            assert_eq!((flow.kind, flow.flags & FLAG_CANDIDATE), (METADATA, FLAG_CANDIDATE));
            let doc = document();
            // The headers alone: nothing yet, the event waits for the body.
            let head = doc.len() - BODY.len();
            response(k, Ip::V6, 0, &doc[..head])?.assert_nothing("headers");
            let out = response(k, Ip::V6, head, &doc[head..])?;
            assert!(out.counters.is_empty(), "{:?}", out.named_counters());
            assert_eq!(
                kinds(&out),
                [(EVENT_RESPONSE, CREDENTIALS, 200), (EVENT_EXPIRATION, CREDENTIALS, 0)]
            );
            assert_eq!(out.events[0].source, CredentialSource::EcsTask as u8);
            assert_eq!(out.events[1].expiration, PACKED);
            // Timed at the first byte of the response, which came before the body.
            assert!(out.events[0].ktime_ns < out.events[1].ktime_ns);
            response_flags(k, Ip::V6, doc.len(), TCP_FIN, b"")?.assert_nothing("FIN");
            Ok(())
        });
    }
    k.case("not a credential document", |k| {
        request(k, Ip::V6, REQUEST_SEQ, &get("/latest/meta-data/instance-id", ""))?;
        response(k, Ip::V6, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ni-12345678")?
            .assert_nothing("waits for the end of the document");
        let out = response_flags(k, Ip::V6, 49, TCP_FIN, b"")?;
        assert!(out.counters.is_empty(), "no reject: {:?}", out.named_counters());
        assert_eq!(kinds(&out), [(EVENT_RESPONSE, METADATA, 200)]);
        Ok(())
    });
    k.case("not a credential document, then the next request", |k| {
        let req = get("/latest/meta-data/instance-id", "");
        request(k, Ip::V6, REQUEST_SEQ, &req)?;
        response(k, Ip::V6, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")?;
        let out = request(k, Ip::V6, REQUEST_SEQ + req.len() as u32, &get("/creds", ""))?;
        assert_eq!(kinds(&out), [(EVENT_RESPONSE, METADATA, 200)]);
        Ok(())
    });
    k.case("a 404 is reported at once", |k| {
        request(k, Ip::V6, REQUEST_SEQ, &get("/creds", ""))?;
        let out = response(k, Ip::V6, 0, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        assert_eq!(kinds(&out), [(EVENT_RESPONSE, METADATA, 404)]);
        Ok(())
    });
    k.case("IMDS is not a container endpoint", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &get("/creds", ""))?;
        assert_eq!(k.flow().flags & FLAG_CANDIDATE, 0);
        let out = response(k, Ip::V4, 0, &document())?;
        assert_eq!(kinds(&out), [(EVENT_RESPONSE, METADATA, 200)]);
        Ok(())
    });
    k.case("PUT is not a credential fetch", |k| {
        request(k, Ip::V6, REQUEST_SEQ, b"PUT /creds HTTP/1.1\r\n\r\n")?;
        assert_eq!(k.flow().flags & FLAG_CANDIDATE, 0);
        Ok(())
    });
}

#[test]
fn pipelined_pair_in_one_segment() {
    let Some(mut k) = kernel() else { return };
    let first = get(
        "/latest/meta-data/iam/security-credentials/my-role",
        "X-aws-ec2-metadata-token: t\r\n",
    );
    let second = get("/latest/meta-data/iam/security-credentials/other", "");
    k.case("pipelined", |k| {
        let both = [first.as_slice(), &second].concat();
        request(k, Ip::V4, REQUEST_SEQ, &both)?
            .assert_only_counter(counter::REJECT_PIPELINED, "the second request");
        let flow = k.flow();
        assert_eq!(flow.flags & FLAG_PIPELINED, FLAG_PIPELINED);
        // The first is matched to the first response, with its own role.
        let out = response(k, Ip::V4, 0, &document())?;
        assert_eq!(
            kinds(&out),
            [(EVENT_RESPONSE, CREDENTIALS, 200), (EVENT_EXPIRATION, CREDENTIALS, 0)]
        );
        assert_eq!(role(&out.events[0]), b"my-role");
        // The second response is not attributed to anything.
        response(k, Ip::V4, document().len(), &document())?.assert_nothing("second response");
        Ok(())
    });
    k.case("pipelined in its own segment", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &first)?.assert_nothing("first");
        request(k, Ip::V4, REQUEST_SEQ + first.len() as u32, &second)?
            .assert_only_counter(counter::REJECT_PIPELINED, "second");
        assert_eq!(role_of_flow(k), b"my-role");
        Ok(())
    });
}

fn role_of_flow(k: &mut Kernel) -> Vec<u8> {
    let flow = k.flow();
    flow.role[..usize::from(flow.role_len)].to_vec()
}

#[test]
fn chunk_boundary_inside_the_key_and_the_timestamp() {
    let Some(mut k) = kernel() else { return };
    let key = BODY.find("\"Expiration\"").unwrap();
    for cuts in [vec![key + 6], vec![key + 27], vec![key + 3, key + 20, key + 30], vec![key]] {
        for ip in [Ip::V4, Ip::V6] {
            k.case(&format!("chunked at {cuts:?}"), |k| {
                let path = if ip == Ip::V4 {
                    "/latest/meta-data/iam/security-credentials/r"
                } else {
                    "/creds"
                };
                request(k, ip, REQUEST_SEQ, &get(path, ""))?;
                let doc = chunked(&cuts);
                // Also split into two segments inside the first chunk boundary.
                let split = doc.windows(2).skip(60).position(|w| w == b"\r\n").unwrap() + 61;
                let mut out = response(k, ip, 0, &doc[..split])?;
                let rest = response(k, ip, split, &doc[split..])?;
                out.events.extend(rest.events);
                assert!(out.counters.is_empty() && rest.counters.is_empty());
                assert_eq!(
                    kinds(&out),
                    [(EVENT_RESPONSE, CREDENTIALS, 200), (EVENT_EXPIRATION, CREDENTIALS, 0)]
                );
                assert_eq!(out.events[1].expiration, PACKED);
                Ok(())
            });
        }
    }
}

#[test]
fn token_header_at_byte_900_and_in_a_later_segment() {
    let Some(mut k) = kernel() else { return };
    let agent = format!("User-Agent: aws-sdk-java/2.31.0 {}\r\n", "md/x ".repeat(170));
    let req = get(
        "/latest/meta-data/iam/security-credentials/",
        &format!("{agent}X-aws-ec2-metadata-token: t\r\n"),
    );
    let at = req.windows(8).position(|w| w == b"X-aws-ec").unwrap();
    assert!(at >= 900, "the token header starts at {at}");
    k.case("one segment", |k| {
        request(k, Ip::V4, REQUEST_SEQ, &req)?.assert_nothing("request");
        assert_eq!(k.flow().flags & FLAG_IMDSV2_TOKEN, FLAG_IMDSV2_TOKEN);
        let out = response(k, Ip::V4, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nmy-role")?;
        assert_eq!(out.events[0].flags & FLAG_IMDSV2_TOKEN, FLAG_IMDSV2_TOKEN, "not IMDSv1");
        Ok(())
    });
    k.case("three segments", |k| {
        let (a, b) = (700, at + 10);
        request(k, Ip::V4, REQUEST_SEQ, &req[..a])?;
        request(k, Ip::V4, REQUEST_SEQ + a as u32, &req[a..b])?.assert_nothing("middle");
        assert_eq!(k.flow().flags & FLAG_IMDSV2_TOKEN, 0);
        request(k, Ip::V4, REQUEST_SEQ + b as u32, &req[b..])?.assert_nothing("last");
        assert_eq!(k.flow().flags & FLAG_IMDSV2_TOKEN, FLAG_IMDSV2_TOKEN);
        Ok(())
    });
    k.case("no token header", |k| {
        let plain = get("/latest/meta-data/iam/security-credentials/", &agent);
        request(k, Ip::V4, REQUEST_SEQ, &plain)?;
        assert_eq!(k.flow().flags & FLAG_IMDSV2_TOKEN, 0);
        Ok(())
    });
}

#[test]
fn requests_without_a_response() {
    let Some(mut k) = kernel() else { return };
    let token =
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n";
    for (what, ingress, flags) in [
        ("server reset", true, TCP_RST),
        ("server FIN", true, TCP_FIN),
        ("client reset", false, TCP_RST),
    ] {
        k.case(what, |k| {
            request(k, Ip::V4, REQUEST_SEQ, token)?.assert_nothing("request");
            let out = if ingress {
                response_flags(k, Ip::V4, 0, flags, b"")?
            } else {
                request_flags(k, Ip::V4, REQUEST_SEQ + token.len() as u32, flags, b"")?
            };
            assert!(out.counters.is_empty(), "{what}: {:?}", out.named_counters());
            let ev = kinds(&out);
            assert_eq!(ev, [(EVENT_NO_RESPONSE, RequestKind::Token as u8, 0)], "{what}");
            assert_eq!(out.events[0].method, Method::Put as u8);
            assert!(k.flows().is_empty(), "{what}: counted once, the flow is gone");
            Ok(())
        });
    }
    k.case("client half-close, then the answer", |k| {
        request(k, Ip::V4, REQUEST_SEQ, token)?;
        request_flags(k, Ip::V4, REQUEST_SEQ + token.len() as u32, TCP_FIN, b"")?
            .assert_nothing("a FIN from the client is a half-close");
        let out = response(k, Ip::V4, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntok")?;
        assert_eq!(kinds(&out), [(EVENT_RESPONSE, RequestKind::Token as u8, 200)]);
        Ok(())
    });
    k.case("reset after the response", |k| {
        request(k, Ip::V4, REQUEST_SEQ, token)?;
        response(k, Ip::V4, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntok")?;
        response_flags(k, Ip::V4, 41, TCP_RST, b"")?.assert_nothing("answered already");
        Ok(())
    });
    k.case("past the timeout", |k| {
        k.set_metadata_timeout_ms(1000);
        request(k, Ip::V4, REQUEST_SEQ, token)?;
        k.age_flow(2_000_000_000);
        // The kernel neither reports nor matches it: userspace counts it from the flow table.
        response(k, Ip::V4, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntok")?
            .assert_only_counter(counter::REJECT_LATE_RESPONSE, "late response");
        assert_eq!(k.flow().phase, PHASE_LATE);
        response(k, Ip::V4, 41, b"more")?.assert_nothing("rest of a late response");
        response_flags(k, Ip::V4, 45, TCP_FIN, b"")?.assert_nothing("FIN: userspace counts it");
        assert_eq!(k.flows().len(), 1, "left for userspace");
        Ok(())
    });
    k.case("within the timeout", |k| {
        k.set_metadata_timeout_ms(10_000);
        request(k, Ip::V4, REQUEST_SEQ, token)?;
        k.age_flow(2_000_000_000);
        let out = response(k, Ip::V4, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntok")?;
        assert_eq!(kinds(&out), [(EVENT_RESPONSE, RequestKind::Token as u8, 200)]);
        Ok(())
    });
}

/// A request retransmitted after its response began is not a second request.
#[test]
fn request_retransmitted_after_the_answer_began() {
    let Some(mut k) = kernel() else { return };
    k.case("late retransmission", |k| {
        let req = get("/latest/meta-data/iam/security-credentials/my-role", "");
        request(k, Ip::V4, REQUEST_SEQ, &req)?;
        assert_eq!(response(k, Ip::V4, 0, &document()[..40])?.events.len(), 1);
        request(k, Ip::V4, REQUEST_SEQ, &req)?
            .assert_only_counter(counter::RETRANSMIT, "the same request again");
        assert_eq!(k.flow().phase, agent_common::PHASE_RESPONDING);
        Ok(())
    });
}
