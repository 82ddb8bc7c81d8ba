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
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

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
    match version {
        Ip::V4 => {
            let (src, dst) = match dir {
                Dir::Egress => (CLIENT4, SERVER4),
                Dir::Ingress => (SERVER4, CLIENT4),
            };
            let total = (20 + l4.len()) as u16;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            h.extend_from_slice(&src);
            h.extend_from_slice(&dst);
            h.extend_from_slice(l4);
            ethernet(ETH_P_IP, &h)
        }
        Ip::V6 => {
            let (src, dst) = match dir {
                Dir::Egress => (CLIENT6, SERVER6),
                Dir::Ingress => (SERVER6, CLIENT6),
            };
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&src);
            h.extend_from_slice(&dst);
            h.extend_from_slice(l4);
            ethernet(ETH_P_IPV6, &h)
        }
    }
}

fn tcp(version: Ip, dir: Dir, service_port: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (sport, dport) = match dir {
        Dir::Egress => (CLIENT_PORT, service_port),
        Dir::Ingress => (service_port, CLIENT_PORT),
    };
    let mut h = Vec::with_capacity(20 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes()); // ack
    h.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(payload);
    ip(version, dir, IPPROTO_TCP, &h)
}

fn udp(dir: Dir, service_port: u16, payload: &[u8]) -> Vec<u8> {
    let (sport, dport) = match dir {
        Dir::Egress => (CLIENT_PORT + 1, service_port),
        Dir::Ingress => (service_port, CLIENT_PORT + 1),
    };
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    ip(Ip::V4, dir, IPPROTO_UDP, &h)
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
