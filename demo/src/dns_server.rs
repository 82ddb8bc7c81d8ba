//! The demo's DNS server on a private loopback address: cluster-suffixed names are NXDOMAIN (as
//! CoreDNS answers for names that do not exist), names under `example.com` resolve to 127.0.0.1
//! (the demo's fake AWS API). Just enough DNS for glibc's resolver.
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::UdpSocket;

pub const ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 153);
pub const API_NAME: &str = "api.example.com";

pub async fn start() -> anyhow::Result<SocketAddr> {
    let socket = UdpSocket::bind((ADDR, 53)).await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if let Some(reply) = answer(&buf[..n]) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    Ok(addr)
}

/// The reply to one query, or None for anything that is not a single-question query.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let (name, end) = question_name(query)?;
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = query.get(12..end + 4)?;
    let known = name == API_NAME || name.ends_with(".example.com");
    let rcode = if known { 0 } else { 3 }; // NOERROR or NXDOMAIN
    let with_a = known && qtype == 1;
    let mut r = Vec::with_capacity(question.len() + 28);
    r.extend_from_slice(&query[..2]); // id
    r.push(0x80 | (query[2] & 0x01)); // QR, copy RD
    r.push(0x80 | rcode); // RA
    r.extend_from_slice(&[0, 1, 0, u8::from(with_a), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if with_a {
        // name pointer to the question, A, IN, TTL 5, 4 bytes: 127.0.0.1
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some(r)
}

/// Lower-case dotted name and the offset just past it.
fn question_name(msg: &[u8]) -> Option<(String, usize)> {
    let mut pos = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*msg.get(pos)?);
        if len == 0 {
            return Some((name, pos + 1));
        }
        if len > 63 || name.len() > 255 {
            return None;
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
        q
    }

    #[test]
    fn answers_the_api_name_and_refuses_cluster_suffixes() {
        let r = answer(&query("api.example.com", 1)).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 1]);
        let r = answer(&query("api.example.com.default.svc.cluster.local", 28)).unwrap();
        assert_eq!(r[3] & 0x0f, 3);
        assert_eq!(answer(&[0u8; 5]), None);
    }
}
