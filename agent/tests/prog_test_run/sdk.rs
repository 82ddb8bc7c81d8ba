//! The client's SDK family from its `User-Agent` (issue 17): found anywhere in the header block,
//! in any case, across segments; hostile values (over-long, binary, cut short, missing) give
//! `other` or `none` and the request is still counted; only the id reaches the event.
use agent_common::{
    EVENT_EXPIRATION, EVENT_RESPONSE, FLAG_IMDSV2_TOKEN, MetadataEvent, RequestKind, sdk::Sdk,
};

use crate::{
    harness::{IMDS_PORT, Kernel, Miss, Outcome, assert_no_secret, kernel},
    packets::{Ip, TCP_PSH_ACK, tcp_egress, tcp_ingress},
};

const REQUEST_SEQ: u32 = 9000;
const RESPONSE_SEQ: u32 = 0x1234_0000;
const PATH: &str = "/latest/meta-data/iam/security-credentials/my-role";
const BODY: &str = "{\"Code\":\"Success\",\"AccessKeyId\":\"ASIACANARYKEY\",\
\"SecretAccessKey\":\"canary-secret\",\"Token\":\"canary-token\",\
\"Expiration\":\"2026-11-28T10:15:00Z\"}";
const JAVA_V1: &str = "aws-sdk-java/1.12.780 Linux/6.1.0 OpenJDK_64-Bit_Server_VM/17.0.10+7";

fn get(headers: &str) -> Vec<u8> {
    format!("GET {PATH} HTTP/1.1\r\nHost: metadata\r\n{headers}\r\n").into_bytes()
}

fn get_bytes(headers: &[u8]) -> Vec<u8> {
    let mut req = format!("GET {PATH} HTTP/1.1\r\nHost: metadata\r\n").into_bytes();
    req.extend_from_slice(headers);
    req.extend_from_slice(b"\r\n");
    req
}

fn document() -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}", BODY.len()).into_bytes()
}

/// Sends `req` in the pieces `cuts` make of it (offsets), then the document; returns the
/// events of the response, after checking that it is counted (a response and its expiration).
fn exchange(k: &mut Kernel, req: &[u8], cuts: &[usize]) -> Result<Vec<MetadataEvent>, Miss> {
    let bounds: Vec<usize> =
        [0].into_iter().chain(cuts.iter().copied()).chain([req.len()]).collect();
    for w in bounds.windows(2) {
        let seq = REQUEST_SEQ.wrapping_add(w[0] as u32);
        let out = k.egress(&tcp_egress(Ip::V4, IMDS_PORT, seq, TCP_PSH_ACK, &req[w[0]..w[1]]))?;
        out.assert_nothing("request segment");
    }
    let out: Outcome =
        k.ingress(&tcp_ingress(Ip::V4, IMDS_PORT, RESPONSE_SEQ, TCP_PSH_ACK, &document()))?;
    assert!(out.counters.is_empty(), "{:?}", out.named_counters());
    let kinds: Vec<(u8, u8)> = out.events.iter().map(|e| (e.event, e.kind)).collect();
    let credentials = RequestKind::Credentials as u8;
    assert_eq!(kinds, [(EVENT_RESPONSE, credentials), (EVENT_EXPIRATION, credentials)]);
    for ev in &out.events {
        let bytes = unsafe {
            core::slice::from_raw_parts(
                ev as *const MetadataEvent as *const u8,
                size_of::<MetadataEvent>(),
            )
        };
        assert_no_secret(bytes, "metadata event");
        assert!(ev._pad.iter().all(|&b| b == 0), "padding is zero");
    }
    Ok(out.events)
}

/// The SDK id both events of the exchange carry.
fn sdk_of(k: &mut Kernel, req: &[u8], cuts: &[usize]) -> Result<Sdk, Miss> {
    let events = exchange(k, req, cuts)?;
    assert_eq!(events[0].sdk, events[1].sdk, "response and expiration agree");
    assert!(usize::from(events[0].sdk) < Sdk::ALL.len(), "id {} out of range", events[0].sdk);
    Ok(Sdk::from_u8(events[0].sdk))
}

#[test]
fn user_agent_names_the_family_wherever_it_is() {
    let Some(mut k) = kernel() else { return };
    let filler = format!("Cookie: {}\r\n", "c".repeat(1200));
    let cases: Vec<(&str, String, Sdk)> = vec![
        ("first header", format!("User-Agent: {JAVA_V1}\r\nAccept: */*\r\n"), Sdk::JavaV1),
        ("lower case", format!("user-agent: {JAVA_V1}\r\n"), Sdk::JavaV1),
        (
            "mixed case, upper value",
            "uSeR-aGeNt:   BOTOCORE/1.44.8 Python/3.11\r\n".into(),
            Sdk::Botocore,
        ),
        (
            "after the token header",
            "X-aws-ec2-metadata-token: AQAEAF\r\nUser-Agent: aws-sdk-go-v2/1.30.3 ua/2.1\r\n"
                .into(),
            Sdk::GoV2,
        ),
        ("past 1 KiB", format!("{filler}User-Agent: aws-sdk-rust/1.3.3 os/linux\r\n"), Sdk::Rust),
        ("java v2", "User-Agent: aws-sdk-java/2.25.60 Linux/6.1\r\n".into(), Sdk::JavaV2),
        ("http library", "User-Agent: python-urllib3/2.2.2\r\n".into(), Sdk::PythonHttp),
        ("curl", "User-Agent: curl/7.88.1\r\n".into(), Sdk::Curl),
        ("missing", "Accept: */*\r\n".into(), Sdk::None),
        ("look-alike name", "X-User-Agent: Botocore/1.0\r\n".into(), Sdk::None),
        ("unknown product", "User-Agent: Mozilla/5.0 (X11)\r\n".into(), Sdk::Other),
        ("empty value", "User-Agent:\r\n".into(), Sdk::Other),
        ("token cut short", "User-Agent: aws-sdk-java/\r\n".into(), Sdk::Other),
        (
            "second header ignored",
            format!("User-Agent: curl/8\r\nUser-Agent: {JAVA_V1}\r\n"),
            Sdk::Curl,
        ),
    ];
    for (what, headers, want) in &cases {
        k.case(what, |k| {
            assert_eq!(sdk_of(k, &get(headers), &[])?, *want, "{what}");
            Ok(())
        });
    }
}

#[test]
fn user_agent_split_across_segments() {
    let Some(mut k) = kernel() else { return };
    let req =
        get(&format!("X-aws-ec2-metadata-token: t\r\nAccept: */*\r\nUser-Agent: {JAVA_V1}\r\n"));
    let at = req.windows(10).position(|w| w == b"User-Agent").unwrap();
    // Inside the name, at its colon, inside the product token, right after the token.
    for cut in [at + 1, at + 5, at + 10, at + 11, at + 14, at + 25, at + 27] {
        k.case(&format!("cut at {cut}"), |k| {
            assert_eq!(sdk_of(k, &req, &[cut])?, Sdk::JavaV1, "cut at {cut}");
            Ok(())
        });
    }
    k.case("one byte a segment through the header", |k| {
        let cuts: Vec<usize> = (at..at + 30).collect();
        assert_eq!(sdk_of(k, &req, &cuts)?, Sdk::JavaV1);
        Ok(())
    });
}

#[test]
fn hostile_user_agents_are_other_or_none_and_still_counted() {
    let Some(mut k) = kernel() else { return };
    let mut rng = 0x1717_5eed_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Binary values: any byte but CR/LF (a line end) and NUL (the kernel's padding), not
    // starting with a letter (which could start a product token).
    let mut binary = Vec::new();
    for len in [1usize, 17, 300, 2900] {
        let mut value: Vec<u8> = (0..len)
            .map(|_| (next() % 253) as u8 + 3)
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        if value[0].is_ascii_alphabetic() {
            value[0] = 0xff;
        }
        let mut headers = b"User-Agent: ".to_vec();
        headers.extend_from_slice(&value);
        headers.extend_from_slice(b"\r\nX-aws-ec2-metadata-token: t\r\n");
        binary.push(headers);
    }
    for (i, headers) in binary.iter().enumerate() {
        k.case(&format!("binary value {i}"), |k| {
            let events = exchange(k, &get_bytes(headers), &[])?;
            assert_eq!(Sdk::from_u8(events[0].sdk), Sdk::Other, "binary value {i}");
            // The token header after it was still found: the value did not derail the scan.
            assert_eq!(events[0].flags & FLAG_IMDSV2_TOKEN, FLAG_IMDSV2_TOKEN, "binary value {i}");
            Ok(())
        });
    }
    k.case("over-long value across three segments", |k| {
        let value = format!("Mozilla/5.0 {}", "x".repeat(6000));
        let req = get(&format!("User-Agent: {value}\r\nAccept: */*\r\n"));
        assert_eq!(sdk_of(k, &req, &[2000, 4000])?, Sdk::Other);
        Ok(())
    });
    k.case("known token, then kilobytes of binary", |k| {
        let mut headers = format!("User-Agent: {JAVA_V1} ").into_bytes();
        headers.extend((0..3000).map(|i| 0x80 | (i % 0x7f) as u8));
        headers.extend_from_slice(b"\r\n");
        assert_eq!(sdk_of(k, &get_bytes(&headers), &[])?, Sdk::JavaV1);
        Ok(())
    });
    k.case("NUL bytes inside the value", |k| {
        let req = get_bytes(b"User-Agent: aws\0\0-sdk-java/1.12\r\n");
        assert_eq!(sdk_of(k, &req, &[])?, Sdk::JavaV1, "NUL is the kernel's padding: ignored");
        Ok(())
    });
    k.case("a User-Agent in the body is not a header", |k| {
        let mut req = get("Content-Length: 24\r\n");
        req.extend_from_slice(b"User-Agent: Botocore/1.0");
        assert_eq!(sdk_of(k, &req, &[])?, Sdk::None);
        Ok(())
    });
}
