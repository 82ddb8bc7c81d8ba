//! Decoding `DnsEvent`s and naming query types and response codes (bounded label values).
use agent_common::dns::{DnsEvent, EVENT_RESPONSE, FLAG_TCP, FLAG_TRUNCATED, NAME_BUF};

use crate::record::{self, KernelRecord, RecordError};

impl KernelRecord for DnsEvent {
    const WHAT: &'static str = "DNS event";
}

/// An answered query the kernel sent by name (NXDOMAIN, or any with --dns-top-names).
#[derive(Debug, Clone, PartialEq)]
pub struct DnsAnswer {
    pub cgroup_id: u64,
    pub qtype: u16,
    pub rcode: u8,
    pub truncated: bool,
    pub tcp: bool,
    pub latency_ns: u64,
    pub ktime_ns: u64,
    /// The question name, lower case, without the trailing dot.
    pub name: String,
}

pub fn decode(bytes: &[u8]) -> Result<DnsAnswer, RecordError> {
    let ev: DnsEvent = record::read(bytes)?;
    if ev.event != EVENT_RESPONSE {
        return Err(RecordError::unknown_type::<DnsEvent>(ev.event));
    }
    let question = &ev.name[..usize::from(ev.name_len).min(NAME_BUF)];
    Ok(DnsAnswer {
        cgroup_id: ev.cgroup_id,
        qtype: ev.qtype,
        rcode: ev.rcode,
        truncated: ev.flags & FLAG_TRUNCATED != 0,
        tcp: ev.flags & FLAG_TCP != 0,
        latency_ns: ev.latency_ns,
        ktime_ns: ev.ktime_ns,
        name: name_from_question(question).ok_or(RecordError::invalid::<DnsEvent>(
            "question name is not a valid wire-format name",
        ))?,
    })
}

/// The name at the start of a question section (raw bytes from the packet, possibly followed by
/// qtype, qclass and more): its labels up to the root label, which must be there. Compression
/// pointers are refused (a question has nothing earlier to point to).
pub fn name_from_question(question: &[u8]) -> Option<String> {
    let mut pos = 0;
    loop {
        let len = usize::from(*question.get(pos)?);
        if len == 0 {
            return name_from_wire(&question[..pos]);
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
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

pub use agent_common::dns::RCODE_NXDOMAIN;

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
    fn question_names_end_at_the_root_label() {
        assert_eq!(
            name_from_question(b"\x07example\x03com\x00\x00\x01\x00\x01").as_deref(),
            Some("example.com")
        );
        assert_eq!(name_from_question(b"\x00").as_deref(), Some(""));
        assert_eq!(name_from_question(b"\x07example\x03com"), None, "no root label");
        assert_eq!(name_from_question(b"\x03abc\xc0\x0c"), None, "pointer");
        assert_eq!(name_from_question(b""), None);
        // The longest valid name: 255 bytes with the root label, all the kernel copies.
        let mut wire = Vec::new();
        for len in [63u8, 63, 63, 61] {
            wire.push(len);
            wire.extend(std::iter::repeat_n(b'a', usize::from(len)));
        }
        wire.push(0);
        assert_eq!(wire.len(), 255);
        assert_eq!(name_from_question(&wire).map(|n| n.len()), Some(253));
        assert_eq!(name_from_question(&wire[..254]), None, "cut before the root label");
    }

    #[test]
    fn decodes_an_answer_event() {
        let mut name = [0u8; NAME_BUF];
        name[..17].copy_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        let ev = DnsEvent {
            cookie: 9,
            cgroup_id: 7,
            latency_ns: 1500,
            ktime_ns: 5,
            id: 0x1234,
            qtype: 1,
            ancount: 0,
            event: EVENT_RESPONSE,
            flags: FLAG_TRUNCATED,
            rcode: 3,
            name_len: 17,
            _pad: [0; 6],
            name,
        };
        let bytes = &record::bytes_of(&ev);
        assert_eq!(
            decode(bytes),
            Ok(DnsAnswer {
                cgroup_id: 7,
                qtype: 1,
                rcode: 3,
                truncated: true,
                tcp: false,
                latency_ns: 1500,
                ktime_ns: 5,
                name: "example.com".into(),
            })
        );
        let want = size_of::<DnsEvent>();
        assert_eq!(
            decode(&bytes[..100]),
            Err(RecordError::Size { what: "DNS event", got: 100, want })
        );
    }
}
