//! Requests that no response answered within `--metadata-timeout`, found in the kernel's flow
//! table. The kernel counts a request unanswered when its connection ends first; a request whose
//! connection stays open (an SDK waiting, or one that closed its side only, with the answer lost
//! on the way, as with an IMDSv2 hop limit of 1) is counted here. The kernel does not report a
//! response that starts after the timeout, so each request is counted once: both sides apply the
//! same rule to the same timestamps (the margin covers the kernel program between reading its
//! clock and deciding).
use std::time::Duration;

use agent_common::{Flow, PHASE_LATE, PHASE_REQUEST_SENT};
use aya::maps::{HashMap, MapData};

use super::record::{self, Observation};

const MARGIN: Duration = Duration::from_millis(100);

pub struct Unanswered {
    flows: HashMap<MapData, u64, Flow>,
    timeout: Duration,
}

impl std::fmt::Debug for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unanswered").field("timeout", &self.timeout).finish()
    }
}

impl Unanswered {
    pub fn new(flows: HashMap<MapData, u64, Flow>, timeout: Duration) -> Self {
        Self { flows, timeout }
    }

    /// Removes the flows of requests unanswered past the timeout; one observation each.
    /// `now_ns`: CLOCK_MONOTONIC, the kernel's clock.
    pub fn sweep(&mut self, now_ns: u64) -> Vec<Observation> {
        let keys: Vec<u64> = self.flows.keys().filter_map(Result::ok).collect();
        let mut out = Vec::new();
        for key in keys {
            let Ok(flow) = self.flows.get(&key, 0) else { continue };
            // A failed removal means the kernel removed it first (the connection ended).
            if overdue(&flow, now_ns, self.timeout) && self.flows.remove(&key).is_ok() {
                out.push(record::unanswered(&flow, now_ns));
            }
        }
        out
    }
}

/// Whether `flow` holds a request with no response status line for longer than `timeout`.
pub fn overdue(flow: &Flow, now_ns: u64, timeout: Duration) -> bool {
    let waiting = flow.phase == PHASE_REQUEST_SENT || flow.phase == PHASE_LATE;
    let limit = (timeout + MARGIN).as_nanos().min(u128::from(u64::MAX)) as u64;
    waiting && now_ns.saturating_sub(flow.request_ns) > limit
}

#[cfg(test)]
mod tests {
    use agent_common::{PHASE_RESPONDING, ROLE_MAX};

    use super::*;

    fn flow(phase: u8, request_ns: u64) -> Flow {
        Flow {
            cgroup_id: 1,
            request_ns,
            response_ns: 0,
            expiration: 0,
            request_seq: 0,
            request_next_seq: 0,
            response_next_seq: 0,
            status: 0,
            phase,
            endpoint: 0,
            kind: 1,
            method: 1,
            source: 0,
            flags: 0,
            scan: 0,
            role_len: 0,
            header: 0,
            sdk: 0,
            role: [0; ROLE_MAX],
        }
    }

    #[test]
    fn only_waiting_requests_past_the_timeout_and_its_margin() {
        let ten = Duration::from_secs(10);
        let s = 1_000_000_000u64;
        assert!(!overdue(&flow(PHASE_REQUEST_SENT, 100 * s), 110 * s, ten));
        assert!(!overdue(&flow(PHASE_REQUEST_SENT, 100 * s), 110 * s + 100_000_000, ten));
        assert!(overdue(&flow(PHASE_REQUEST_SENT, 100 * s), 110 * s + 100_000_001, ten));
        assert!(overdue(&flow(PHASE_LATE, 100 * s), 111 * s, ten));
        assert!(!overdue(&flow(PHASE_RESPONDING, 100 * s), 1000 * s, ten));
        // A request stamped after "now" (clocks read on two CPUs) is not overdue.
        assert!(!overdue(&flow(PHASE_REQUEST_SENT, 200 * s), 100 * s, ten));
    }
}
