//! Crafted packets as `BPF_PROG_TEST_RUN` wants them for `cgroup_skb`: a 14-byte Ethernet header
//! (pulled by the kernel), then IP, then TCP or UDP. Checksums are left zero: nothing on this
//! path verifies them, and these packets never reach a wire.
pub const CLIENT4: [u8; 4] = [127, 0, 0, 1];
pub const SERVER4: [u8; 4] = [127, 0, 0, 2];
pub const CLIENT6: [u8; 16] = ipv6_loopback(1);
pub const SERVER6: [u8; 16] = ipv6_loopback(2);
pub const CLIENT_PORT: u16 = 40000;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_PSH_ACK: u8 = 0x18;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;

/// `::1` is the only loopback address in IPv6; the server side uses `::2` only inside these
/// packets (they are never sent).
const fn ipv6_loopback(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[15] = last;
    a
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4,
    V6,
}

/// Which way a packet goes relative to the workload.
#[derive(Clone, Copy)]
enum Dir {
    Egress,
    Ingress,
}

pub fn ethernet(ethertype: u16, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(rest);
    p
}

fn ip(version: Ip, dir: Dir, proto: u8, l4: &[u8]) -> Vec<u8> {
    match (version, dir) {
        (Ip::V4, Dir::Egress) => ip_packet(&CLIENT4, &SERVER4, proto, l4),
        (Ip::V4, Dir::Ingress) => ip_packet(&SERVER4, &CLIENT4, proto, l4),
        (Ip::V6, Dir::Egress) => ip_packet(&CLIENT6, &SERVER6, proto, l4),
        (Ip::V6, Dir::Ingress) => ip_packet(&SERVER6, &CLIENT6, proto, l4),
    }
}

/// An IP packet from `src` to `dst` (both 4 bytes for IPv4 or both 16 for IPv6).
pub fn ip_packet(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> Vec<u8> {
    if dst.len() == 4 {
        let total = (20 + l4.len()) as u16;
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        h.extend_from_slice(src);
        h.extend_from_slice(dst);
        h.extend_from_slice(l4);
        ethernet(ETH_P_IP, &h)
    } else {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        h.extend_from_slice(&[proto, 64]);
        h.extend_from_slice(src);
        h.extend_from_slice(dst);
        h.extend_from_slice(l4);
        ethernet(ETH_P_IPV6, &h)
    }
}

/// A packet from this client to `dst` (4 or 16 bytes): TCP (a data segment) or UDP to
/// `dst_port`, or any other protocol with `payload` as its body.
pub fn egress_to(dst: &[u8], proto: u8, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let src: &[u8] = if dst.len() == 4 { &CLIENT4 } else { &CLIENT6 };
    let l4 = match proto {
        IPPROTO_TCP => tcp_segment(CLIENT_PORT, dst_port, 1, TCP_PSH_ACK, payload),
        IPPROTO_UDP => udp_datagram(CLIENT_PORT + 1, dst_port, payload),
        _ => payload.to_vec(),
    };
    ip_packet(src, dst, proto, &l4)
}

/// The same packet as [`egress_to`] seen arriving: from `src`, its port as the source port.
pub fn ingress_from(src: &[u8], proto: u8, src_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = egress_to(src, proto, src_port, payload);
    let ip = &mut p[14..];
    let (a, b, n) = if src.len() == 4 { (12, 16, 4) } else { (8, 24, 16) };
    for i in 0..n {
        ip.swap(a + i, b + i);
    }
    let l4 = if src.len() == 4 { 20 } else { 40 };
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        for i in 0..2 {
            ip.swap(l4 + i, l4 + 2 + i);
        }
    }
    p
}

fn tcp(version: Ip, dir: Dir, service_port: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (sport, dport) = match dir {
        Dir::Egress => (CLIENT_PORT, service_port),
        Dir::Ingress => (service_port, CLIENT_PORT),
    };
    ip(version, dir, IPPROTO_TCP, &tcp_segment(sport, dport, seq, flags, payload))
}

/// A TCP segment (ack 1, no options, checksum left 0) carrying `payload`.
fn tcp_segment(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(20 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes()); // ack
    h.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(payload);
    h
}

fn udp(dir: Dir, service_port: u16, payload: &[u8]) -> Vec<u8> {
    let (sport, dport) = match dir {
        Dir::Egress => (CLIENT_PORT + 1, service_port),
        Dir::Ingress => (service_port, CLIENT_PORT + 1),
    };
    ip(Ip::V4, dir, IPPROTO_UDP, &udp_datagram(sport, dport, payload))
}

/// A UDP datagram (checksum left 0) carrying `payload`.
fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// Client to service (what `cw_skb_egress` sees).
pub fn tcp_egress(version: Ip, port: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp(version, Dir::Egress, port, seq, flags, payload)
}

/// Service to client (what `cw_skb_ingress` sees).
pub fn tcp_ingress(version: Ip, port: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp(version, Dir::Ingress, port, seq, flags, payload)
}

pub fn udp_egress(port: u16, payload: &[u8]) -> Vec<u8> {
    udp(Dir::Egress, port, payload)
}

pub fn udp_ingress(port: u16, payload: &[u8]) -> Vec<u8> {
    udp(Dir::Ingress, port, payload)
}

/// A DNS message with the given header fields and raw body (question and anything after).
pub fn dns_message(id: u16, flags: u16, qdcount: u16, ancount: u16, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + body.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&qdcount.to_be_bytes());
    m.extend_from_slice(&ancount.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(body);
    m
}

/// A standard query (RD set) for `name` (wire format, root label included) of type `qtype`.
pub fn dns_query(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    let mut body = name.to_vec();
    body.extend_from_slice(&qtype.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes()); // IN
    dns_message(id, 0x0100, 1, 0, &body)
}

/// `a.b.c` in wire format, with the root label.
pub fn wire_name(dotted: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in dotted.split('.').filter(|l| !l.is_empty()) {
        w.push(label.len() as u8);
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    w
}

/// The 2-byte length prefix DNS over TCP puts before each message.
pub fn tcp_framed(message: &[u8]) -> Vec<u8> {
    let mut m = (message.len() as u16).to_be_bytes().to_vec();
    m.extend_from_slice(message);
    m
}

/// A small deterministic generator (xorshift64*), so garbage inputs are the same every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Between 1 and `max` random bytes.
    pub fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.below(max);
        self.bytes(n)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
