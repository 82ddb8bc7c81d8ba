//! DNS through the real programs: queries on egress, responses on ingress, over UDP and TCP.
use agent_common::{
    counter,
    dns::{
        DnsEvent, EVENT_RESPONSE, FLAG_TCP, FLAG_TRUNCATED, LATENCY_BOUNDS_NS, LATENCY_SLOTS,
        NAME_MAX, RCODE_OTHER_SLOT, RCODE_SLOTS, latency_slot,
    },
};

use crate::{
    harness::{DNS_PORT, Kernel, Miss, Outcome, kernel},
    packets::{
        Ip, Rng, TCP_PSH_ACK, dns_message, dns_query, tcp_egress, tcp_framed, tcp_ingress,
        udp_egress, udp_ingress, wire_name,
    },
};

const QR: u16 = 0x8000;
const TC: u16 = 0x0200;
const A: u16 = 1;
const AAAA: u16 = 28;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Udp,
    Tcp,
}

fn query(k: &mut Kernel, t: Transport, message: &[u8]) -> Result<Outcome, Miss> {
    match t {
        Transport::Udp => k.egress(&udp_egress(DNS_PORT, message)),
        Transport::Tcp => {
            k.egress(&tcp_egress(Ip::V4, DNS_PORT, 1, TCP_PSH_ACK, &tcp_framed(message)))
        }
    }
}

fn answer(k: &mut Kernel, t: Transport, message: &[u8]) -> Result<Outcome, Miss> {
    match t {
        Transport::Udp => k.ingress(&udp_ingress(DNS_PORT, message)),
        Transport::Tcp => {
            k.ingress(&tcp_ingress(Ip::V4, DNS_PORT, 1, TCP_PSH_ACK, &tcp_framed(message)))
        }
    }
}

/// A response to `id` with the given flags (QR added) and answer count.
fn response(id: u16, flags: u16, ancount: u16, body: &[u8]) -> Vec<u8> {
    dns_message(id, QR | flags, 1, ancount, body)
}

/// The query was recorded and nothing else happened: no counter, no event (queries send none),
/// one pending entry with its id, type and cgroup.
fn assert_query_recorded(k: &mut Kernel, out: &Outcome, id: u16, qtype: u16) {
    assert!(out.counters.is_empty(), "{:?}", out.named_counters());
    assert!(out.events.is_empty());
    assert!(out.dns_events.is_empty(), "queries send no event");
    let pending = k.pending_queries();
    assert!(
        pending.iter().any(|(i, p)| *i == id && p.qtype == qtype && p.cgroup_id == k.cgroup_id),
        "pending: {pending:?}"
    );
}

/// The statistics hold exactly `n` answers of `qtype` (as keyed: a known type or 0), all with
/// `rcode`, `truncated` of them truncated, in this process's cgroup.
fn assert_counted(k: &mut Kernel, qtype: u16, rcode: u8, n: u64, truncated: u64) {
    let stats = k.dns_stats();
    let Some((key, s)) = stats.iter().find(|(key, _)| key.qtype == qtype) else {
        panic!("no statistics for qtype {qtype}: {stats:?}");
    };
    assert_eq!(key.cgroup_id, k.cgroup_id, "the query's cgroup");
    let mut want = [0; RCODE_SLOTS];
    want[usize::from(rcode).min(RCODE_OTHER_SLOT)] = n;
    assert_eq!(s.responses, want, "by rcode");
    assert_eq!(s.truncated, truncated);
    assert_eq!(s.latency.iter().sum::<u64>(), n, "one latency per answer");
    assert!(s.latency_sum_ns > 0 && s.latency_sum_ns < n * 10_000_000_000, "plausible latency");
}

/// A named event: the answer's header fields and its question section, raw.
#[allow(clippy::too_many_arguments)]
fn assert_named_event(
    k: &Kernel,
    ev: &DnsEvent,
    id: u16,
    qtype: u16,
    rcode: u8,
    ancount: u16,
    flags: u8,
    question: &[u8],
) {
    assert_eq!((ev.event, ev.id, ev.qtype), (EVENT_RESPONSE, id, qtype));
    assert_eq!((ev.rcode, ev.ancount, ev.flags), (rcode, ancount, flags));
    assert_eq!(ev.cgroup_id, k.cgroup_id, "the query's cgroup");
    assert!(ev.latency_ns > 0 && ev.latency_ns < 10_000_000_000, "plausible latency");
    let n = question.len().min(NAME_MAX);
    assert_eq!(usize::from(ev.name_len), n);
    assert_eq!(&ev.name[..n], &question[..n]);
    assert!(ev.name[n..].iter().all(|&b| b == 0), "nothing after the question");
}

fn question(name: &str, qtype: u16) -> Vec<u8> {
    [&wire_name(name)[..], &qtype.to_be_bytes(), &[0, 1]].concat()
}

#[test]
fn query_and_response_over_udp_and_tcp() {
    let Some(mut k) = kernel() else { return };
    for t in [Transport::Udp, Transport::Tcp] {
        let tcp = if t == Transport::Tcp { FLAG_TCP } else { 0 };
        k.case("query and response", |k| {
            let wire = wire_name("api.example.com");
            let out = query(k, t, &dns_query(0x1234, &wire, A))?;
            assert_query_recorded(k, &out, 0x1234, A);
            assert_eq!(k.pending_queries().len(), 1);

            let out = answer(k, t, &response(0x1234, 0, 2, &question("api.example.com", A)))?;
            out.assert_nothing("a NOERROR answer is counted in the kernel, not sent");
            assert_counted(k, A, 0, 1, 0);
            assert!(k.pending_queries().is_empty(), "answered queries are forgotten");
            // The same response again has nothing to match.
            answer(k, t, &response(0x1234, 0, 2, &[]))?
                .assert_only_counter(counter::DNS_UNMATCHED_RESPONSE, "duplicate response");
            assert_counted(k, A, 0, 1, 0);
            Ok(())
        });
        k.case("NXDOMAIN, truncated: sent by name", |k| {
            let wire = wire_name("db.default.svc.cluster.local");
            query(k, t, &dns_query(7, &wire, AAAA))?;
            let q = question("db.default.svc.cluster.local", AAAA);
            let out = answer(k, t, &response(7, TC | 3, 0, &q))?;
            assert!(out.counters.is_empty(), "{:?}", out.named_counters());
            assert_eq!(out.dns_events.len(), 1);
            let flags = tcp | FLAG_TRUNCATED;
            assert_named_event(k, &out.dns_events[0], 7, AAAA, 3, 0, flags, &q);
            assert_counted(k, AAAA, 3, 1, 1);
            Ok(())
        });
        k.case("every answer by name (--dns-top-names)", |k| {
            k.set_all_names(true);
            query(k, t, &dns_query(8, &wire_name("example.com"), A))?;
            let q = question("example.com", A);
            let out = answer(k, t, &response(8, 0, 1, &q))?;
            assert_eq!(out.dns_events.len(), 1);
            assert_named_event(k, &out.dns_events[0], 8, A, 0, 1, tcp, &q);
            assert_counted(k, A, 0, 1, 0);
            Ok(())
        });
    }
}

/// glibc's parallel A and AAAA from one socket: two pending queries, matched by id.
#[test]
fn two_queries_on_one_socket() {
    let Some(mut k) = kernel() else { return };
    k.case("A and AAAA", |k| {
        let wire = wire_name("example.com");
        query(k, Transport::Udp, &dns_query(1, &wire, A))?;
        query(k, Transport::Udp, &dns_query(2, &wire, AAAA))?;
        assert_eq!(k.pending_queries().len(), 2);
        answer(k, Transport::Udp, &response(2, 0, 1, &[]))?.assert_nothing("AAAA answer");
        assert_eq!(k.pending_queries().len(), 1);
        answer(k, Transport::Udp, &response(1, 0, 1, &[]))?.assert_nothing("A answer");
        assert_counted(k, A, 0, 1, 0);
        assert_counted(k, AAAA, 0, 1, 0);
        assert!(k.pending_queries().is_empty());
        Ok(())
    });
}

/// A resolver re-sending a query (same socket, same id) has one query waiting, answered once.
#[test]
fn resent_query_is_one_query() {
    let Some(mut k) = kernel() else { return };
    k.case("resent", |k| {
        let packet = udp_egress(DNS_PORT, &dns_query(4, &wire_name("example.com"), A));
        k.egress_repeated(&packet, 3)?.assert_nothing("three sends");
        assert_eq!(k.pending_queries().len(), 1);
        answer(k, Transport::Udp, &response(4, 0, 1, &[]))?.assert_nothing("the answer");
        assert_counted(k, A, 0, 1, 0);
        Ok(())
    });
}

/// Response codes beyond REFUSED share one slot; query types outside the named ones are keyed 0,
/// so a workload cannot make more than a handful of entries.
#[test]
fn rcodes_and_query_types_are_bounded() {
    let Some(mut k) = kernel() else { return };
    let wire = wire_name("example.com");
    for rcode in 0..16u8 {
        k.case(&format!("rcode {rcode}"), |k| {
            query(k, Transport::Udp, &dns_query(5, &wire, A))?;
            answer(k, Transport::Udp, &response(5, u16::from(rcode), 0, &[]))?;
            assert_counted(k, A, rcode, 1, 0);
            Ok(())
        });
    }
    for (qtype, keyed) in [(1, 1), (28, 28), (65, 65), (255, 255), (3, 0), (99, 0), (257, 0)] {
        k.case(&format!("qtype {qtype}"), |k| {
            query(k, Transport::Udp, &dns_query(5, &wire, qtype))?;
            answer(k, Transport::Udp, &response(5, 0, 0, &[]))?;
            assert_eq!(k.dns_stats().len(), 1);
            assert_counted(k, keyed, 0, 1, 0);
            Ok(())
        });
    }
}

/// Latency lands in the histogram slot Prometheus' `le` semantics say: the query is aged by
/// just over a bucket's lower bound, so only the real delay between the runs is added (if that
/// delay pushes it into the next slot, the case is run again).
#[test]
fn latency_buckets() {
    let Some(mut k) = kernel() else { return };
    let wire = wire_name("example.com");
    for slot in 1..=LATENCY_BOUNDS_NS.len() {
        k.case(&format!("slot {slot}"), |k| {
            query(k, Transport::Udp, &dns_query(6, &wire, A))?;
            k.age_pending(6, LATENCY_BOUNDS_NS[slot - 1] + 1);
            answer(k, Transport::Udp, &response(6, 0, 0, &[]))?;
            let stats = k.dns_stats();
            let s = &stats[0].1;
            // Whatever the real delay between the runs added, the kernel's slot must be the
            // reference's for the latency it measured.
            let measured = latency_slot(s.latency_sum_ns);
            let mut want = [0; LATENCY_SLOTS];
            want[measured] = 1;
            assert_eq!(s.latency, want, "latency {} ns", s.latency_sum_ns);
            assert!(s.latency_sum_ns > LATENCY_BOUNDS_NS[slot - 1], "aged");
            // A delay that pushed it past the slot under test (a loaded machine): run it again,
            // so that every slot is covered.
            if measured != slot {
                return Err(Miss);
            }
            Ok(())
        });
    }
}

/// Label and name limits at their boundaries (RFC 1035: labels ≤ 63, names ≤ 255 bytes).
#[test]
fn label_and_name_limits() {
    let Some(mut k) = kernel() else { return };
    let label = |n: usize| {
        let mut l = vec![n as u8];
        l.extend(std::iter::repeat_n(b'a', n));
        l
    };
    let name = |labels: &[Vec<u8>]| {
        let mut w = labels.concat();
        w.push(0);
        w
    };
    let ok: Vec<(String, Vec<u8>)> = vec![
        ("label of 63".into(), name(&[label(63), label(3)])),
        // 3 × 64 + 62 + the root label = 255 bytes.
        ("name of 255".into(), name(&[label(63), label(63), label(63), label(61)])),
        ("127 labels".into(), name(&vec![label(1); 127])),
        ("root".into(), vec![0]),
    ];
    for (what, wire) in &ok {
        k.case(what, |k| {
            let out = query(k, Transport::Udp, &dns_query(9, wire, A))?;
            assert_query_recorded(k, &out, 9, A);
            Ok(())
        });
    }
    let mut bad: Vec<(String, Vec<u8>, u32)> = vec![
        (
            "name of 256".into(),
            name(&[label(63), label(63), label(63), label(62)]),
            counter::DNS_MALFORMED_NAME,
        ),
        ("128 labels".into(), name(&vec![label(1); 128]), counter::DNS_MALFORMED_NAME),
        ("five labels of 63".into(), name(&vec![label(63); 5]), counter::DNS_MALFORMED_NAME),
        ("pointer".into(), [&label(3)[..], &[0xc0, 0x0c]].concat(), counter::DNS_MALFORMED_POINTER),
        ("pointer to itself".into(), vec![0xc0, 0x0c], counter::DNS_MALFORMED_POINTER),
        ("pointer loop pair".into(), vec![0xc0, 0x0e, 0xc0, 0x0c], counter::DNS_MALFORMED_POINTER),
    ];
    // 0x40..=0xbf: the reserved label types (01 and 10 in the top bits) are not pointers; as
    // lengths they are over 63.
    for len in [64u8, 65, 0x7f, 0x80, 0xbf] {
        let mut wire = vec![len];
        wire.extend(std::iter::repeat_n(b'a', 200));
        wire.push(0);
        bad.push((format!("label length {len:#x}"), wire, counter::DNS_MALFORMED_LABEL));
    }
    for len in [0xc0u8, 0xff] {
        bad.push((
            format!("label length {len:#x}"),
            vec![len, 0x0c, 0],
            counter::DNS_MALFORMED_POINTER,
        ));
    }
    for (what, wire, reason) in &bad {
        k.case(what, |k| {
            query(k, Transport::Udp, &dns_query(9, wire, A))?.assert_only_counter(*reason, what);
            assert!(k.pending_queries().is_empty(), "{what}: nothing pending");
            Ok(())
        });
    }
}

/// Headers and question counts.
#[test]
fn malformed_messages() {
    let Some(mut k) = kernel() else { return };
    let wire = wire_name("example.com");
    let question = [&wire[..], &[0, 1, 0, 1]].concat();
    let cases: Vec<(&str, Vec<u8>, Option<u32>)> = vec![
        ("empty", vec![], None),
        ("one byte", vec![0x12], Some(counter::DNS_MALFORMED_HEADER)),
        ("eleven bytes", vec![0; 11], Some(counter::DNS_MALFORMED_HEADER)),
        ("header only", dns_message(5, 0x0100, 1, 0, &[]), Some(counter::DNS_MALFORMED_NAME)),
        (
            "qdcount 0",
            dns_message(5, 0x0100, 0, 0, &question),
            Some(counter::DNS_MALFORMED_QDCOUNT),
        ),
        (
            "qdcount 2",
            dns_message(5, 0x0100, 2, 0, &[&question[..], &question].concat()),
            Some(counter::DNS_MALFORMED_QDCOUNT),
        ),
        (
            "qdcount 65535",
            dns_message(5, 0x0100, 0xffff, 0, &question),
            Some(counter::DNS_MALFORMED_QDCOUNT),
        ),
        (
            "a response sent as a query",
            dns_message(5, QR, 1, 0, &question),
            Some(counter::DNS_MALFORMED_QDCOUNT),
        ),
        (
            "name runs past the end",
            dns_message(5, 0x0100, 1, 0, &wire[..6]),
            Some(counter::DNS_MALFORMED_NAME),
        ),
        (
            "no root label",
            dns_message(5, 0x0100, 1, 0, &wire[..wire.len() - 1]),
            Some(counter::DNS_MALFORMED_NAME),
        ),
        (
            "qtype cut short",
            dns_message(5, 0x0100, 1, 0, &question[..question.len() - 1]),
            Some(counter::DNS_MALFORMED_NAME),
        ),
    ];
    for t in [Transport::Udp, Transport::Tcp] {
        for (what, message, reason) in &cases {
            k.case(what, |k| {
                let out = query(k, t, message)?;
                match (reason, t, message.len()) {
                    // Over TCP an empty message still has its length prefix: too short a header.
                    (None, Transport::Tcp, 0) => {
                        out.assert_only_counter(counter::DNS_MALFORMED_HEADER, what)
                    }
                    (None, _, _) => out.assert_nothing(what),
                    (Some(reason), _, _) => out.assert_only_counter(*reason, what),
                }
                assert!(k.pending_queries().is_empty());
                Ok(())
            });
        }
    }
    // TCP segments with no payload (handshake, ACKs) and a lone length prefix.
    k.case("TCP without payload", |k| {
        k.egress(&tcp_egress(Ip::V4, DNS_PORT, 1, 0x10, b""))?.assert_nothing("bare ACK");
        k.egress(&tcp_egress(Ip::V4, DNS_PORT, 1, TCP_PSH_ACK, &[0, 29]))?
            .assert_only_counter(counter::DNS_MALFORMED_HEADER, "length prefix alone");
        Ok(())
    });
}

/// Responses are matched by their header only: whatever follows (pointer loops, garbage, a
/// truncated body) is never parsed in the kernel; by name, the question section is copied raw
/// (at most NAME_MAX bytes) for userspace to validate.
#[test]
fn responses() {
    let Some(mut k) = kernel() else { return };
    let wire = wire_name("example.com");
    let loop_answer =
        [&[0xc0u8, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4][..], &[0xc0, 0x1c, 0xc0, 0x1a]].concat();
    for (what, body) in
        [("pointer loop", loop_answer), ("garbage", vec![0xff; 300]), ("nothing", vec![])]
    {
        k.case(what, |k| {
            query(k, Transport::Udp, &dns_query(3, &wire, A))?;
            let out = answer(k, Transport::Udp, &response(3, 0, 1, &body))?;
            out.assert_nothing(what);
            assert_counted(k, A, 0, 1, 0);
            Ok(())
        });
        k.case(&format!("{what}, by name"), |k| {
            k.set_all_names(true);
            query(k, Transport::Udp, &dns_query(3, &wire, A))?;
            let out = answer(k, Transport::Udp, &response(3, 3, 1, &body))?;
            assert!(out.counters.is_empty(), "{what}: {:?}", out.named_counters());
            assert_eq!(out.dns_events.len(), 1);
            assert_named_event(k, &out.dns_events[0], 3, A, 3, 1, 0, &body);
            Ok(())
        });
    }
    k.case("answered after the timeout", |k| {
        k.set_dns_timeout_ms(1000);
        query(k, Transport::Udp, &dns_query(3, &wire, A))?;
        k.age_pending(3, 2_000_000_000);
        answer(k, Transport::Udp, &response(3, 0, 1, &[]))?.assert_only_counter(
            counter::DNS_UNMATCHED_RESPONSE,
            "late: userspace counts a timeout",
        );
        assert_eq!(k.pending_queries().len(), 1, "the slot is left for userspace to free");
        assert!(k.dns_stats().is_empty(), "not counted as answered");
        Ok(())
    });
    k.case("unmatched id", |k| {
        query(k, Transport::Udp, &dns_query(3, &wire, A))?;
        answer(k, Transport::Udp, &response(4, 0, 1, &[]))?
            .assert_only_counter(counter::DNS_UNMATCHED_RESPONSE, "other id");
        assert_eq!(k.pending_queries().len(), 1, "the query still waits");
        Ok(())
    });
    for (what, message, reason) in [
        ("short", vec![0x80; 5], counter::DNS_MALFORMED_HEADER),
        ("QR clear", dns_message(3, 0, 1, 1, &[]), counter::DNS_MALFORMED_QDCOUNT),
    ] {
        k.case(what, |k| {
            query(k, Transport::Udp, &dns_query(3, &wire, A))?;
            answer(k, Transport::Udp, &message)?.assert_only_counter(reason, what);
            assert_eq!(k.pending_queries().len(), 1);
            Ok(())
        });
    }
    k.case("empty UDP", |k| {
        answer(k, Transport::Udp, &[])?.assert_nothing("empty datagram");
        Ok(())
    });
}

/// What the kernel's query parser should do with a message, restated from RFC 1035 and the
/// documented limits (docs/architecture.md): the reference for the random inputs below.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Nothing,
    Counter(u32),
    Query { name: Vec<u8>, qtype: u16 },
}

fn model(message: &[u8]) -> Expect {
    if message.is_empty() {
        return Expect::Nothing;
    }
    if message.len() < 12 {
        return Expect::Counter(counter::DNS_MALFORMED_HEADER);
    }
    if message[2] & 0x80 != 0 || u16::from_be_bytes([message[4], message[5]]) != 1 {
        return Expect::Counter(counter::DNS_MALFORMED_QDCOUNT);
    }
    // The kernel reads at most the longest name plus qtype and qclass.
    let question = &message[12..message.len().min(12 + 255 + 4)];
    let mut pos = 0;
    loop {
        let Some(&len) = question.get(pos) else {
            return Expect::Counter(counter::DNS_MALFORMED_NAME);
        };
        if len == 0 {
            break;
        }
        if len & 0xc0 == 0xc0 {
            return Expect::Counter(counter::DNS_MALFORMED_POINTER);
        }
        if len > 63 {
            return Expect::Counter(counter::DNS_MALFORMED_LABEL);
        }
        pos += usize::from(len) + 1;
        if pos >= 255 {
            return Expect::Counter(counter::DNS_MALFORMED_NAME);
        }
    }
    if pos + 5 > question.len() {
        return Expect::Counter(counter::DNS_MALFORMED_NAME);
    }
    let qtype = u16::from_be_bytes([question[pos + 1], question[pos + 2]]);
    Expect::Query { name: question[..pos].to_vec(), qtype }
}

fn random_message(rng: &mut Rng) -> Vec<u8> {
    let mut m = rng.bytes(12);
    // Mostly plausible headers, so that the name walk is exercised.
    if rng.below(4) != 0 {
        m[2] &= 0x7f;
        m[4] = 0;
        m[5] = 1;
    }
    for _ in 0..rng.below(40) {
        match rng.below(10) {
            0 => m.extend_from_slice(&[0xc0 | rng.below(64) as u8, rng.below(256) as u8]),
            1 => m.push(64 + rng.below(192) as u8),
            2 => m.push(0),
            _ => {
                let n = 1 + rng.below(63);
                m.push(n as u8);
                m.extend(rng.bytes(n));
            }
        }
    }
    if rng.below(2) == 0 {
        m.push(0);
        m.extend(rng.bytes(4));
    }
    let keep = match rng.below(8) {
        0 => rng.below(12),
        1 | 2 => rng.below(m.len() + 1),
        _ => m.len(),
    };
    m.truncate(keep);
    m
}

/// Random messages: the kernel must agree with [`model`] on every one.
#[test]
fn random_queries_agree_with_the_model() {
    let Some(mut k) = kernel() else { return };
    let mut rng = Rng::new(0xd15_0001);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for n in 0..400 {
        let message = random_message(&mut rng);
        let want = model(&message);
        k.case(&format!("random {n}"), |k| {
            let out = query(k, Transport::Udp, &message)?;
            match &want {
                Expect::Nothing => out.assert_nothing("empty"),
                Expect::Counter(reason) => out.assert_only_counter(*reason, &format!("random {n}")),
                Expect::Query { qtype, .. } => {
                    let id = u16::from_be_bytes([message[0], message[1]]);
                    assert_query_recorded(k, &out, id, *qtype);
                }
            }
            Ok(())
        });
        let kind = match want {
            Expect::Nothing => "nothing".to_string(),
            Expect::Counter(c) => crate::harness::counter_name(c).to_string(),
            Expect::Query { .. } => "query".to_string(),
        };
        *seen.entry(kind).or_default() += 1;
    }
    // The generator must reach every outcome, or this test would prove less than it claims.
    for kind in [
        "query",
        "DNS_MALFORMED_HEADER",
        "DNS_MALFORMED_QDCOUNT",
        "DNS_MALFORMED_NAME",
        "DNS_MALFORMED_LABEL",
        "DNS_MALFORMED_POINTER",
    ] {
        assert!(seen.get(kind).copied().unwrap_or(0) >= 5, "{kind}: {seen:?}");
    }
}
