//! Decoding `DnsEvent`s and naming query types and response codes (bounded label values).
use agent_common::dns::{
    DnsEvent, EVENT_QUERY, EVENT_RESPONSE, FLAG_TCP, FLAG_TRUNCATED, NAME_BUF,
};

#[derive(Debug, Clone, PartialEq)]
pub enum DnsObservation {
    Query {
        key: (u64, u16),
        cgroup_id: u64,
        qtype: u16,
        name: String,
        ktime_ns: u64,
    },
    Response {
        key: (u64, u16),
        cgroup_id: u64,
        qtype: u16,
        rcode: u8,
        truncated: bool,
        tcp: bool,
        latency_ns: u64,
        ktime_ns: u64,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("DNS event of {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("unknown DNS event type {0}")]
    Type(u8),
    #[error("query name is not a valid wire-format name")]
    Name,
}

impl DnsObservation {
    pub fn ktime_ns(&self) -> u64 {
        match self {
            Self::Query { ktime_ns, .. } | Self::Response { ktime_ns, .. } => *ktime_ns,
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<DnsObservation, DecodeError> {
    let want = size_of::<DnsEvent>();
    if bytes.len() < want {
        return Err(DecodeError::Size(bytes.len(), want));
    }
    // SAFETY: length checked; DnsEvent is plain old data valid for any bit pattern.
    let ev: DnsEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let key = (ev.cookie, ev.id);
    match ev.event {
        EVENT_QUERY => Ok(DnsObservation::Query {
            key,
            cgroup_id: ev.cgroup_id,
            qtype: ev.qtype,
            name: name_from_wire(&ev.name[..usize::from(ev.name_len).min(NAME_BUF)])
                .ok_or(DecodeError::Name)?,
            ktime_ns: ev.ktime_ns,
        }),
        EVENT_RESPONSE => Ok(DnsObservation::Response {
            key,
            cgroup_id: ev.cgroup_id,
            qtype: ev.qtype,
            rcode: ev.rcode,
            truncated: ev.flags & FLAG_TRUNCATED != 0,
            tcp: ev.flags & FLAG_TCP != 0,
            latency_ns: ev.latency_ns,
            ktime_ns: ev.ktime_ns,
        }),
        other => Err(DecodeError::Type(other)),
    }
}

/// Lower-case dotted form of a wire-format name without its root label ("" for the root).
/// Bytes outside printable ASCII are escaped as `\DDD` (RFC 1035 master-file style).
pub fn name_from_wire(wire: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(wire.len());
    let mut pos = 0;
    while pos < wire.len() {
        let len = usize::from(wire[pos]);
        if len == 0 || len > 63 || pos + 1 + len > wire.len() {
            return None;
        }
        if !out.is_empty() {
            out.push('.');
        }
        for &b in &wire[pos + 1..pos + 1 + len] {
            match b {
                b'.' | b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                0x21..=0x7e => out.push(b.to_ascii_lowercase() as char),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        pos += 1 + len;
    }
    Some(out)
}

pub const RCODE_NXDOMAIN: u8 = 3;

pub fn rcode_label(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

pub fn qtype_label(qtype: u16) -> &'static str {
    match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_become_lowercase_dotted() {
        assert_eq!(
            name_from_wire(b"\x03WWW\x07Example\x03com").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(name_from_wire(b"").as_deref(), Some(""));
        assert_eq!(name_from_wire(b"\x03a.b\x02\x00z").as_deref(), Some("a\\.b.\\000z"));
    }

    #[test]
    fn malformed_wire_names_are_rejected() {
        assert_eq!(name_from_wire(b"\x05abc"), None); // runs past the end
        assert_eq!(name_from_wire(b"\x40xxx"), None); // 64: not a length
        assert_eq!(name_from_wire(b"\x03abc\x00"), None); // root label inside
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(rcode_label(3), "NXDOMAIN");
        assert_eq!(rcode_label(11), "other");
        assert_eq!(qtype_label(28), "AAAA");
        assert_eq!(qtype_label(999), "other");
    }

    #[test]
    fn decodes_a_query_event() {
        let mut name = [0u8; NAME_BUF];
        name[..12].copy_from_slice(b"\x07example\x03com");
        let ev = DnsEvent {
            cookie: 9,
            cgroup_id: 7,
            latency_ns: 0,
            ktime_ns: 5,
            id: 0x1234,
            qtype: 1,
            ancount: 0,
            event: EVENT_QUERY,
            flags: 0,
            rcode: 0,
            name_len: 12,
            _pad: [0; 6],
            name,
        };
        let bytes = unsafe {
            std::slice::from_raw_parts((&ev as *const DnsEvent).cast::<u8>(), size_of::<DnsEvent>())
        };
        assert_eq!(
            decode(bytes),
            Ok(DnsObservation::Query {
                key: (9, 0x1234),
                cgroup_id: 7,
                qtype: 1,
                name: "example.com".into(),
                ktime_ns: 5
            })
        );
        assert_eq!(decode(&bytes[..100]), Err(DecodeError::Size(100, size_of::<DnsEvent>())));
    }
}
