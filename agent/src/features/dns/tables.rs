//! The kernel's DNS tables, read once a second: answered-query statistics (the shared table and
//! each CPU's cache, turned into increments since the previous read by crate::counts, the model
//! TCP counts with too) and the pending queries that timed out.
use agent_common::{
    dns::{DnsStats, DnsStatsKey, STATS_CACHE_SLOTS},
    names,
};
use aya::maps::Map;

use super::pending::PendingTable;
use crate::{
    counts::CountTables,
    kernel::{Attachment, KernelError},
};

/// The answered-query statistics, read as increments (crate::counts).
pub type DnsStatsTables = CountTables<DnsStatsKey, DnsStats>;

/// Takes the statistics maps out of the kernel object.
pub fn take_stats(kernel: &mut Attachment) -> Result<DnsStatsTables, KernelError> {
    CountTables::take(
        kernel,
        names::MAP_DNS_STATS,
        names::MAP_DNS_STATS_CPU,
        STATS_CACHE_SLOTS,
        names::config::DNS_STATS_EPOCH,
    )
}

/// Takes the pending-query table out of the kernel object, mapped into this process.
pub fn take_pending(kernel: &mut Attachment) -> Result<PendingTable, KernelError> {
    let name = names::MAP_DNS_PENDING;
    let Map::Array(data) = kernel.take_raw_map(name)? else {
        return Err(KernelError::NotAnArray(name));
    };
    PendingTable::new(data).map_err(|source| KernelError::Mmap { name, source })
}

/// Answers in a statistics entry (every answer has one latency).
#[cfg(test)]
pub fn answers(s: &DnsStats) -> u64 {
    s.latency.iter().sum()
}

#[cfg(test)]
mod tests {
    use agent_common::dns::DnsStatsSlot;

    use super::*;
    use crate::counts::{increment, slot_increment};

    fn stats(noerror: u64, nx: u64, slot: usize) -> DnsStats {
        let mut s = DnsStats::ZERO;
        s.responses[0] = noerror;
        s.responses[3] = nx;
        s.latency[slot] = noerror + nx;
        s.latency_sum_ns = (noerror + nx) * 1000;
        s
    }

    #[test]
    fn increments_are_differences() {
        let inc = increment(&stats(2, 1, 3), &stats(5, 1, 3)).unwrap();
        assert_eq!((inc.responses[0], inc.responses[3], inc.latency[3]), (3, 0, 3));
        assert_eq!(inc.latency_sum_ns, 3000);
        assert_eq!(answers(&inc), 3);
        assert_eq!(increment(&stats(2, 1, 3), &stats(2, 1, 3)), None);
    }

    fn slot(cgroup_id: u64, stats: DnsStats) -> DnsStatsSlot {
        let key = DnsStatsKey { cgroup_id, qtype: 1, _pad: [0; 6] };
        DnsStatsSlot { key, active_epoch: 0, stats }
    }

    #[test]
    fn cache_slots_count_increments_and_start_over_under_a_new_key() {
        assert_eq!(slot_increment(None, &slot(0, stats(0, 0, 0))), None, "empty");
        let first = slot(7, stats(2, 1, 3));
        let inc = slot_increment(None, &first).unwrap();
        assert_eq!((inc.responses[0], answers(&inc)), (2, 3), "first read: everything");
        let inc = slot_increment(Some(&first), &slot(7, stats(5, 1, 3))).unwrap();
        assert_eq!((inc.responses[0], answers(&inc)), (3, 3), "same key: the difference");
        assert_eq!(slot_increment(Some(&first), &first), None, "unchanged");
        // Taken by another cgroup: its counts start from zero.
        let inc = slot_increment(Some(&first), &slot(8, stats(1, 0, 2))).unwrap();
        assert_eq!((inc.responses[0], answers(&inc)), (1, 1));
    }

    #[test]
    fn a_recreated_entry_counts_from_zero() {
        let inc = increment(&stats(9, 0, 1), &stats(2, 0, 1)).unwrap();
        assert_eq!((inc.responses[0], answers(&inc)), (2, 2));
    }
}
