//! Loss: a full ring buffer and full tables. Nothing may crash or block, and every lost event is
//! counted exactly.
use agent_common::{
    Flow, PHASE_REQUEST_SENT, ROLE_MAX,
    dfa::expiration,
    dns::{DnsEvent, DnsPending},
};

use crate::{
    harness::{DNS_PORT, IMDS_PORT, kernel},
    packets::{
        Ip, TCP_PSH_ACK, dns_query, tcp_egress, tcp_ingress, udp_egress, udp_ingress, wire_name,
    },
};

/// Bytes a ring-buffer record takes: the 8-byte header plus the payload, rounded up to 8.
fn record_bytes<T>() -> u32 {
    (8 + size_of::<T>() as u32).next_multiple_of(8)
}

/// Queries from one socket, repeated past the DNS ring's capacity with nobody reading: the ring
/// holds exactly what fits, and every other event is counted as lost.
#[test]
fn full_dns_ring_counts_every_lost_event() {
    let Some(mut k) = kernel() else { return };
    let capacity = agent_common::dns::EVENT_RING_BYTES / record_bytes::<DnsEvent>();
    let repeat = capacity + 500;
    let query = udp_egress(DNS_PORT, &dns_query(0x77, &wire_name("example.com"), 1));
    k.case("ring overflow", |k| {
        let out = k.egress_repeated(&query, repeat)?;
        assert_eq!(out.dns_events.len() as u32, capacity, "the ring holds what fits");
        assert_eq!(out.named_counters(), [("LOST_DNS_RINGBUF_FULL", 500)].into());
        // Read out, the ring takes events again.
        let out = k.egress_repeated(&query, 1)?;
        assert_eq!((out.dns_events.len(), out.counters.len()), (1, 0));
        Ok(())
    });
}

/// The flow and pending-query tables are LRU: when full, the oldest entry gives way, so a new
/// request or query is still recorded and its response still matched. (An insert into an LRU
/// table does not fail for lack of room; `*_table_full` counts only allocation failures. What a
/// full table costs shows as unmatched responses for the evicted entries.)
#[test]
fn full_tables_make_room_for_new_traffic() {
    let Some(mut k) = kernel() else { return };
    let filler_flow = Flow {
        cgroup_id: 1,
        request_ns: 1,
        expiration: 0,
        request_seq: 0,
        response_next_seq: 0,
        phase: PHASE_REQUEST_SENT,
        endpoint: 0,
        kind: 0,
        method: 0,
        source: 0,
        flags: 0,
        scan: expiration::FINISHED,
        role_len: 0,
        _pad: [0; 8],
        role: [0; ROLE_MAX],
    };
    let filler_query = DnsPending { query_ns: 1, cgroup_id: 1, qtype: 1, _pad: [0; 6] };
    let request = b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\n\r\n";
    let query = dns_query(0x42, &wire_name("example.com"), 1);
    let mut response = query.clone();
    response[2] |= 0x80;
    k.case("full tables", |k| {
        k.fill_tables(&filler_flow, &filler_query);
        // An LRU table may start evicting a little before max_entries (the kernel keeps per-CPU
        // free lists), so "full" is: at most the capacity, and nearly all of it.
        let (flows, pending) = k.table_sizes();
        assert!(flows <= agent_common::FLOW_TABLE_SIZE as usize && flows > 15_000, "{flows}");
        assert!(pending <= agent_common::dns::PENDING_TABLE_SIZE as usize && pending > 15_000);

        k.egress(&tcp_egress(Ip::V4, IMDS_PORT, 1, TCP_PSH_ACK, request))?
            .assert_nothing("request");
        assert_eq!(k.flows().len(), 1, "recorded despite the full table");
        let out = k.ingress(&tcp_ingress(
            Ip::V4,
            IMDS_PORT,
            1,
            TCP_PSH_ACK,
            b"HTTP/1.1 200 OK\r\n\r\nrole",
        ))?;
        assert_eq!((out.events.len(), out.counters.len()), (1, 0));

        let out = k.egress(&udp_egress(DNS_PORT, &query))?;
        assert_eq!((out.dns_events.len(), out.counters.len()), (1, 0));
        let out = k.ingress(&udp_ingress(DNS_PORT, &response))?;
        assert_eq!(
            (out.dns_events.len(), out.counters.len()),
            (1, 0),
            "{:?}",
            out.named_counters()
        );

        let (flows, pending) = k.table_sizes();
        assert!(flows as u32 <= agent_common::FLOW_TABLE_SIZE);
        assert!(pending as u32 <= agent_common::dns::PENDING_TABLE_SIZE);
        Ok(())
    });
}
