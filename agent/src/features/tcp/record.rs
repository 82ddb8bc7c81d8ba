//! Decoding `TcpEvent`s.
use std::net::{IpAddr, Ipv6Addr};

use agent_common::tcp::{
    EVENT_ACCEPT, EVENT_CONNECT, RESULT_ERROR, RESULT_ESTABLISHED, RESULT_REFUSED, RESULT_TIMEOUT,
    TcpEvent,
};

use crate::record::{self, KernelRecord, RecordError};

impl KernelRecord for TcpEvent {
    const WHAT: &'static str = "TCP event";
}

#[derive(Debug, Clone, PartialEq)]
pub enum TcpObservation {
    Connect { cgroup_id: u64, addr: IpAddr, port: u16, result: &'static str, latency_ns: u64 },
    Accept { cgroup_id: u64, port: u16 },
}

pub fn decode(bytes: &[u8]) -> Result<TcpObservation, RecordError> {
    let ev: TcpEvent = record::read(bytes)?;
    match ev.event {
        EVENT_CONNECT => {
            let v6 = Ipv6Addr::from(ev.addr);
            let addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
            Ok(TcpObservation::Connect {
                cgroup_id: ev.cgroup_id,
                addr,
                port: ev.port,
                result: result_label(ev.result),
                latency_ns: ev.latency_ns,
            })
        }
        EVENT_ACCEPT => Ok(TcpObservation::Accept { cgroup_id: ev.cgroup_id, port: ev.port }),
        other => Err(RecordError::unknown_type::<TcpEvent>(other)),
    }
}

pub fn result_label(result: u8) -> &'static str {
    match result {
        RESULT_ESTABLISHED => "established",
        RESULT_REFUSED => "refused",
        RESULT_TIMEOUT => "timeout",
        RESULT_ERROR => "error",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_ipv4_mapped_connect() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[10, 0, 0, 7]);
        let ev = TcpEvent {
            cgroup_id: 3,
            latency_ns: 1000,
            addr,
            port: 443,
            event: EVENT_CONNECT,
            result: RESULT_REFUSED,
            _pad: [0; 4],
        };
        let bytes = &record::bytes_of(&ev);
        assert_eq!(
            decode(bytes),
            Ok(TcpObservation::Connect {
                cgroup_id: 3,
                addr: "10.0.0.7".parse().unwrap(),
                port: 443,
                result: "refused",
                latency_ns: 1000
            })
        );
        let want = size_of::<TcpEvent>();
        assert_eq!(decode(&bytes[..8]), Err(RecordError::Size { what: "TCP event", got: 8, want }));
    }
}
