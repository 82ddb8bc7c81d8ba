//! Loss: a full ring buffer and full tables. Nothing may crash or block, and every lost event is
//! counted exactly.
use agent_common::{
    Flow, PHASE_REQUEST_SENT, ROLE_MAX, counter,
    dfa::expiration,
    dns::{DnsEvent, PENDING_WAYS},
};

use crate::{
    harness::{DNS_PORT, FILLER_COOKIE, IMDS_PORT, Kernel, kernel},
    packets::{
        Ip, TCP_PSH_ACK, dns_query, tcp_egress, tcp_ingress, udp_egress, udp_ingress, wire_name,
    },
};

/// Bytes a ring-buffer record takes: the 8-byte header plus the payload, rounded up to 8.
fn record_bytes<T>() -> u32 {
    (8 + size_of::<T>() as u32).next_multiple_of(8)
}

/// NXDOMAIN answers (each to its own query) past the DNS ring's capacity with nobody reading:
/// the ring holds exactly what fits, every other event is counted as lost, and every answer is
/// still counted in the statistics.
#[test]
fn full_dns_ring_counts_every_lost_event() {
    let Some(mut k) = kernel() else { return };
    let capacity = agent_common::dns::EVENT_RING_BYTES / record_bytes::<DnsEvent>();
    let n = capacity + 500;
    let nxdomain = |id: u16| {
        let mut m = dns_query(id, &wire_name("example.com"), 1);
        m[2] |= 0x80;
        m[3] = 3;
        udp_ingress(DNS_PORT, &m)
    };
    k.case("ring overflow", |k| {
        let out = k.answers_unread(n, nxdomain)?;
        assert_eq!(out.dns_events.len() as u32, capacity, "the ring holds what fits");
        assert_eq!(out.named_counters(), [("LOST_DNS_RINGBUF_FULL", 500)].into());
        let stats = k.dns_stats();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].1.responses[3], u64::from(n), "every answer counted");
        // Read out, the ring takes events again.
        let out = k.answers_unread(1, nxdomain)?;
        assert_eq!((out.dns_events.len(), out.counters.len()), (1, 0));
        Ok(())
    });
}

/// The DNS tables are plain hash tables: full, a new query or a new cgroup's answers are
/// refused and counted, never silently evicted; once entries are reclaimed (answered or timed
/// out queries, idle statistics) they are recorded again.
#[test]
fn full_dns_tables_refuse_counted_and_recover() {
    let Some(mut k) = kernel() else { return };
    let query = |id| udp_egress(DNS_PORT, &dns_query(id, &wire_name("example.com"), 1));
    let answer = |id| {
        let mut m = dns_query(id, &wire_name("example.com"), 1);
        m[2] |= 0x80;
        udp_ingress(DNS_PORT, &m)
    };
    k.case("pending table", |k| {
        k.egress_after(&query(0x43), |k, cookie| {
            k.fill_pending_bucket(cookie, 0x43, PENDING_WAYS)
        })?
        .assert_only_counter(counter::LOST_DNS_PENDING_TABLE, "a query into a full bucket");
        assert!(k.pending_queries().is_empty(), "refused, and nothing evicted for it");
        k.ingress(&answer(0x43))?
            .assert_only_counter(counter::DNS_UNMATCHED_RESPONSE, "its answer has no query");
        k.clear_pending_fillers();
        k.egress(&query(0x43))?.assert_nothing("recorded once its bucket has room");
        k.ingress(&answer(0x43))?.assert_nothing("and its answer counted");
        let last_way =
            |k: &mut Kernel, cookie| k.fill_pending_bucket(cookie, 0x42, PENDING_WAYS - 1);
        k.egress_after(&query(0x42), last_way)?.assert_nothing("the bucket's last free slot");
        assert_eq!(k.pending_queries().len(), 1);
        k.ingress(&answer(0x42))?.assert_nothing("answered: its slot is free again");
        assert!(k.pending_queries().is_empty());
        Ok(())
    });
    k.case("statistics cache", |k| {
        // Every cache slot held by another cgroup that counted in epoch 5: in epoch 6 it is still
        // held (userspace may not have read its last counts), so the answer goes to the table.
        k.fill_stats_cache(FILLER_COOKIE, 5);
        k.set_stats_epoch(6);
        k.egress(&query(0x46))?.assert_nothing("query");
        k.ingress(&answer(0x46))?.assert_nothing("counted in the shared table");
        assert_eq!(k.shared_dns_stats().len(), 1);
        assert!(k.cached_dns_stats().is_empty(), "the held slot is left alone");
        // Epoch 7: idle since the epoch before last, so the slot is taken, from zero.
        k.set_stats_epoch(7);
        k.egress(&query(0x47))?.assert_nothing("query");
        k.ingress(&answer(0x47))?.assert_nothing("counted in this CPU's cache");
        let cached = k.cached_dns_stats();
        assert_eq!(cached.len(), 1, "{cached:?}");
        assert_eq!(
            (cached[0].0.cgroup_id, cached[0].1.latency.iter().sum::<u64>()),
            (k.cgroup_id, 1)
        );
        assert_eq!(k.shared_dns_stats().len(), 1, "the table's count stays");
        Ok(())
    });
    k.case("statistics table", |k| {
        let filler = k.fill_stats_table();
        k.egress(&query(0x44))?.assert_nothing("query");
        k.ingress(&answer(0x44))?
            .assert_only_counter(counter::LOST_DNS_STATS_TABLE, "an answer for a new cgroup");
        assert!(k.dns_stats().is_empty());
        k.remove_stats_entry(&filler);
        k.egress(&query(0x45))?.assert_nothing("query");
        k.ingress(&answer(0x45))?.assert_nothing("counted again");
        assert_eq!(k.dns_stats().len(), 1);
        Ok(())
    });
}

/// The flow table is LRU: when full, the oldest entry gives way, so a new request is still
/// recorded and its response still matched. (An insert into an LRU table does not fail for lack
/// of room; `flow_table_full` counts only allocation failures. What a full table costs shows as
/// responses without a request for the evicted entries.)
#[test]
fn full_flow_table_makes_room_for_new_requests() {
    let Some(mut k) = kernel() else { return };
    let filler_flow = Flow {
        cgroup_id: 1,
        request_ns: 1,
        response_ns: 0,
        expiration: 0,
        request_seq: 0,
        request_next_seq: 0,
        response_next_seq: 0,
        status: 0,
        phase: PHASE_REQUEST_SENT,
        endpoint: 0,
        kind: 0,
        method: 0,
        source: 0,
        flags: 0,
        scan: expiration::FINISHED,
        role_len: 0,
        header: 0,
        sdk: 0,
        role: [0; ROLE_MAX],
    };
    let request = b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\n\r\n";
    k.case("full flow table", |k| {
        k.fill_flows(&filler_flow);
        // An LRU table may start evicting a little before max_entries (the kernel keeps per-CPU
        // free lists), so "full" is: at most the capacity, and nearly all of it.
        let flows = k.flow_table_size();
        assert!(flows <= agent_common::FLOW_TABLE_SIZE as usize && flows > 15_000, "{flows}");

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
        assert!(k.flow_table_size() as u32 <= agent_common::FLOW_TABLE_SIZE);
        Ok(())
    });
}
