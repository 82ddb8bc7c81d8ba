//! Packets to link-local services: each service class, IPv4 and IPv6, counted once for its
//! workload and in its second; every other packet not at all.
use agent_common::{
    EndpointKey, counter,
    linklocal::{SECOND_SLOTS, SecondSlot, Service, nitro_v6},
};

use crate::{
    harness::{self, DNS_PORT, IMDS_PORT, Kernel, NTP_STAND_IN, VPC_RESOLVER4, VPC_RESOLVER6},
    packets::{
        self, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, SERVER4, SERVER6, egress_to, ingress_from,
    },
};

const IPPROTO_ICMPV6: u8 = 58;
const HTTP_GET: &[u8] = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n";

fn v4(a: u8, b: u8, c: u8, d: u8) -> Vec<u8> {
    vec![a, b, c, d]
}

fn v6(addr: [u8; 16]) -> Vec<u8> {
    addr.to_vec()
}

/// The IPv4 (last 4 bytes) or IPv6 address of a configured key.
fn addr_of(key: &EndpointKey) -> Vec<u8> {
    if key.addr[..12] == EndpointKey::v4([0; 4], 0).addr[..12] {
        key.addr[12..].to_vec()
    } else {
        key.addr.to_vec()
    }
}

/// The IPv4 packet with a 4-byte options field (a no-op and end of options): header length 24.
fn with_ip_options(mut packet: Vec<u8>) -> Vec<u8> {
    const IP: usize = 14;
    packet[IP] = 0x46;
    let total = u16::from_be_bytes([packet[IP + 2], packet[IP + 3]]) + 4;
    packet[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
    packet.splice(IP + 20..IP + 20, [1, 1, 1, 0]);
    packet
}

fn dns_query() -> Vec<u8> {
    packets::dns_query(0x1234, &packets::wire_name("example.com"), 1)
}

/// CLOCK_MONOTONIC seconds, the clock `bpf_ktime_get_ns` reads.
fn monotonic_second() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    ts.tv_sec as u64
}

/// Packets by service counted in the seconds `from..=to`, over every CPU.
fn counted_in(k: &mut Kernel, from: u64, to: u64) -> [u64; 8] {
    let mut sum = [0u64; 8];
    for (second, packets) in k.linklocal_seconds() {
        if (from..=to).contains(&second) {
            for (s, n) in sum.iter_mut().zip(packets) {
                *s += u64::from(n);
            }
        }
    }
    sum
}

/// Runs `packet` through egress `repeat` times and checks that it was counted exactly that many
/// times, for this process's cgroup under `service` and in the seconds of the run, and nowhere
/// else.
fn assert_counted(what: &str, packet: &[u8], service: Service, repeat: u32) {
    let Some(mut k) = harness::kernel() else { return };
    k.case(what, |k| {
        let from = monotonic_second();
        let outcome = k.egress_repeated(packet, repeat)?;
        let to = monotonic_second();
        // (Repeats of a metadata request are retransmissions to its parser: counted as such.)
        let lost = outcome.counters.get(&counter::LOST_LINKLOCAL_TABLE);
        assert!(lost.is_none(), "{what}: counters {:?}", outcome.named_counters());
        let cgroup = k.cgroup_id;
        assert_eq!(
            k.linklocal_packets(),
            [((cgroup, service as u8), u64::from(repeat))].into(),
            "{what}: per-workload count"
        );
        let mut expected = [0u64; 8];
        expected[service as usize] = u64::from(repeat);
        assert_eq!(counted_in(k, from, to), expected, "{what}: per-second count");
        assert_eq!(counted_in(k, 0, u64::MAX), expected, "{what}: nothing in other seconds");
        Ok(())
    });
}

fn assert_not_counted(what: &str, packet: &[u8], ingress: bool) {
    let Some(mut k) = harness::kernel() else { return };
    k.case(what, |k| {
        if ingress {
            k.ingress(packet)?;
        } else {
            k.egress(packet)?;
        }
        assert!(k.linklocal_packets().is_empty(), "{what}: counted for a workload");
        assert_eq!(counted_in(k, 0, u64::MAX), [0; 8], "{what}: counted in a second");
        Ok(())
    });
}

/// Every service class, at its documented address over IPv4 and IPv6 and at its configured
/// stand-ins, in the protocol its clients use.
fn service_cases() -> Vec<(&'static str, Vec<u8>, Service)> {
    let tcp = |dst: Vec<u8>, port| egress_to(&dst, IPPROTO_TCP, port, HTTP_GET);
    let udp = |dst: Vec<u8>, port, payload: &[u8]| egress_to(&dst, IPPROTO_UDP, port, payload);
    let ntp_request = [0x23u8; 48];
    vec![
        ("IMDS, IPv4", tcp(v4(169, 254, 169, 254), 80), Service::Imds),
        ("IMDS, IPv6", tcp(v6(nitro_v6(0x254)), 80), Service::Imds),
        ("IMDS on another port", tcp(v4(169, 254, 169, 254), 8080), Service::Imds),
        (
            "IMDS stand-in (metadata endpoint imds=)",
            tcp(v4(127, 0, 0, 2), IMDS_PORT),
            Service::Imds,
        ),
        ("ECS agent", tcp(v4(169, 254, 170, 2), 80), Service::Ecs),
        ("Pod Identity agent, IPv4", tcp(v4(169, 254, 170, 23), 80), Service::PodIdentity),
        ("Pod Identity agent, IPv6", tcp(v6(nitro_v6(0x23)), 80), Service::PodIdentity),
        (
            "Amazon DNS, IPv4",
            udp(v4(169, 254, 169, 253), DNS_PORT, &dns_query()),
            Service::AmazonDns,
        ),
        ("Amazon DNS, IPv6", udp(v6(nitro_v6(0x253)), DNS_PORT, &dns_query()), Service::AmazonDns),
        (
            "Amazon DNS over TCP",
            egress_to(
                &[169, 254, 169, 253],
                IPPROTO_TCP,
                DNS_PORT,
                &packets::tcp_framed(&dns_query()),
            ),
            Service::AmazonDns,
        ),
        (
            "VPC resolver, IPv4",
            udp(addr_of(&VPC_RESOLVER4), DNS_PORT, &dns_query()),
            Service::AmazonDns,
        ),
        (
            "VPC resolver, IPv6",
            udp(addr_of(&VPC_RESOLVER6), DNS_PORT, &dns_query()),
            Service::AmazonDns,
        ),
        ("time sync, IPv4", udp(v4(169, 254, 169, 123), 123, &ntp_request), Service::Ntp),
        ("time sync, IPv6", udp(v6(nitro_v6(0x123)), 123, &ntp_request), Service::Ntp),
        (
            "NTP stand-in",
            udp(addr_of(&NTP_STAND_IN), NTP_STAND_IN.port, &ntp_request),
            Service::Ntp,
        ),
        ("rest of 169.254/16", udp(v4(169, 254, 1, 1), 9000, b"x"), Service::Other),
        ("time sync address, other port", udp(v4(169, 254, 169, 123), 124, b"x"), Service::Other),
        ("rest of fd00:ec2::/64", udp(v6(nitro_v6(0x1)), 9000, b"x"), Service::Other),
        (
            "ICMP to IMDS",
            egress_to(&[169, 254, 169, 254], IPPROTO_ICMP, 0, &[8, 0, 0, 0]),
            Service::Imds,
        ),
        (
            "ICMPv6 to IMDS",
            egress_to(&nitro_v6(0x254), IPPROTO_ICMPV6, 0, &[128, 0, 0, 0]),
            Service::Imds,
        ),
        (
            "ICMP to the rest",
            egress_to(&[169, 254, 7, 7], IPPROTO_ICMP, 0, &[8, 0, 0, 0]),
            Service::Other,
        ),
    ]
}

#[test]
fn each_service_counted_once() {
    for (what, packet, service) in service_cases() {
        assert_counted(what, &packet, service, 1);
    }
}

#[test]
fn each_packet_counted_once_when_repeated() {
    for (what, packet, service) in service_cases() {
        assert_counted(what, &packet, service, 7);
    }
}

#[test]
fn other_traffic_not_counted() {
    let mut fd00_other = nitro_v6(0x254);
    fd00_other[7] = 1; // fd00:ec2:0:1::254, outside the /64
    let fe80 = {
        let mut a = [0u8; 16];
        a[0] = 0xfe;
        a[1] = 0x80;
        a[15] = 1;
        a
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("loopback, unwatched port", egress_to(&SERVER4, IPPROTO_TCP, 9999, b"x")),
        ("loopback IPv6", egress_to(&SERVER6, IPPROTO_UDP, 9999, b"x")),
        ("169.253.169.254", egress_to(&[169, 253, 169, 254], IPPROTO_TCP, 80, HTTP_GET)),
        ("170.254.169.254", egress_to(&[170, 254, 169, 254], IPPROTO_TCP, 80, HTTP_GET)),
        ("TEST-NET", egress_to(&[192, 0, 2, 1], IPPROTO_UDP, 123, &[0x23; 48])),
        ("fd00:ec2:0:1::254", egress_to(&fd00_other, IPPROTO_TCP, 80, HTTP_GET)),
        ("fe80::1", egress_to(&fe80, IPPROTO_UDP, 123, &[0x23; 48])),
        // The stand-ins' ports flag lookups, but only their addresses count.
        ("DNS to a non-resolver", egress_to(&SERVER4, IPPROTO_UDP, DNS_PORT, &dns_query())),
        (
            "NTP port, other address",
            egress_to(&[127, 0, 0, 9], IPPROTO_UDP, NTP_STAND_IN.port, b"x"),
        ),
        ("IPv6 custom metadata endpoint", egress_to(&SERVER6, IPPROTO_TCP, IMDS_PORT, HTTP_GET)),
        ("ICMP to loopback", egress_to(&SERVER4, IPPROTO_ICMP, 0, &[8, 0, 0, 0])),
        // NodeLocal DNSCache's address is served on the node.
        ("NodeLocal DNSCache", egress_to(&[169, 254, 20, 10], IPPROTO_UDP, DNS_PORT, &dns_query())),
        ("IPv4 with options", with_ip_options(egress_to(&SERVER4, IPPROTO_UDP, 9, b"x"))),
    ];
    for (what, packet) in cases {
        assert_not_counted(what, &packet, false);
    }
}

#[test]
fn answers_from_link_local_services_not_counted() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("from IMDS", ingress_from(&[169, 254, 169, 254], IPPROTO_TCP, 80, b"HTTP/1.1 200 OK\r\n")),
        ("from Amazon DNS, IPv6", ingress_from(&nitro_v6(0x253), IPPROTO_UDP, 53, b"x")),
        ("from the IMDS stand-in", ingress_from(&SERVER4, IPPROTO_TCP, IMDS_PORT, b"x")),
    ];
    for (what, packet) in cases {
        assert_not_counted(what, &packet, true);
    }
}

#[test]
fn a_slot_from_an_older_second_starts_from_zero() {
    let Some(mut k) = harness::kernel() else { return };
    let packet = egress_to(&[169, 254, 169, 123], IPPROTO_UDP, 123, &[0x23; 48]);
    k.case("reused slot", |k| {
        for _ in 0..8 {
            let now = monotonic_second();
            // The same slot, SECOND_SLOTS seconds ago, still holding that second's counts.
            let old = SecondSlot { second: now - u64::from(SECOND_SLOTS), packets: [9; 8] };
            k.set_linklocal_second(old);
            k.egress(&packet)?;
            if monotonic_second() != now {
                continue; // the run fell in the next second, another slot: try again
            }
            let mut expected = [0u32; 8];
            expected[Service::Ntp as usize] = 1;
            let seconds = k.linklocal_seconds();
            assert!(seconds.contains(&(now, expected)), "{seconds:?}");
            assert!(seconds.iter().all(|(s, _)| *s == now || *s == old.second), "{seconds:?}");
            return Ok(());
        }
        panic!("every run crossed a second boundary");
    });
}

#[test]
fn full_table_loses_the_workload_count_only() {
    let Some(mut k) = harness::kernel() else { return };
    let packet = egress_to(&[169, 254, 169, 254], IPPROTO_TCP, 80, HTTP_GET);
    k.case("full table", |k| {
        k.fill_linklocal_packets();
        let outcome = k.egress(&packet)?;
        outcome.assert_only_counter(counter::LOST_LINKLOCAL_TABLE, "full table");
        let mut expected = [0u64; 8];
        expected[Service::Imds as usize] = 1;
        assert_eq!(counted_in(k, 0, u64::MAX), expected, "still counted in its second");
        assert!(!k.linklocal_packets().contains_key(&(k.cgroup_id, Service::Imds as u8)));
        Ok(())
    });
}

#[test]
fn metadata_requests_to_a_stand_in_are_counted_and_still_parsed() {
    let Some(mut k) = harness::kernel() else { return };
    let request = b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\n\r\n";
    let packet =
        packets::tcp_egress(packets::Ip::V4, IMDS_PORT, 100, packets::TCP_PSH_ACK, request);
    k.case("stand-in request", |k| {
        k.egress(&packet)?.assert_nothing("request");
        assert_eq!(k.flows().len(), 1, "the request parser kept its flow");
        assert_eq!(
            k.linklocal_packets(),
            [((k.cgroup_id, Service::Imds as u8), 1)].into(),
            "counted under the endpoint's kind"
        );
        Ok(())
    });
}
