//! Decoding `TcpEvent`s: the kernel counts connects and accepts itself (`tables`); the only
//! record it sends is a key counted for the first time on a CPU, whose cgroup userspace should
//! resolve while it exists.
use agent_common::tcp::{
    EVENT_NEW_KEY, RESULT_ERROR, RESULT_ESTABLISHED, RESULT_REFUSED, RESULT_TIMEOUT, TcpEvent,
};

use crate::record::{self, KernelRecord, RecordError};

impl KernelRecord for TcpEvent {
    const WHAT: &'static str = "TCP event";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpObservation {
    NewKey { cgroup_id: u64, class: u8 },
}

pub fn decode(bytes: &[u8]) -> Result<TcpObservation, RecordError> {
    let ev: TcpEvent = record::read(bytes)?;
    match ev.event {
        EVENT_NEW_KEY => Ok(TcpObservation::NewKey { cgroup_id: ev.cgroup_id, class: ev.class }),
        other => Err(RecordError::unknown_type::<TcpEvent>(other)),
    }
}

/// The `result` label of a connect result (`TcpStats::connects` slot).
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
    fn decodes_a_new_key() {
        let ev = TcpEvent { cgroup_id: 3, event: EVENT_NEW_KEY, class: 2, _pad: [0; 6] };
        let bytes = &record::bytes_of(&ev);
        assert_eq!(decode(bytes), Ok(TcpObservation::NewKey { cgroup_id: 3, class: 2 }));
        let want = size_of::<TcpEvent>();
        assert_eq!(decode(&bytes[..8]), Err(RecordError::Size { what: "TCP event", got: 8, want }));
        let other = TcpEvent { event: 9, ..ev };
        assert_eq!(
            decode(&record::bytes_of(&other)),
            Err(RecordError::Type { what: "TCP event", kind: 9 })
        );
    }
}
