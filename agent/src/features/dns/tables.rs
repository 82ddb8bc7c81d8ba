//! The kernel's DNS tables, read once a second: answered-query statistics (the shared table and
//! each CPU's cache, turned into increments since the previous read) and the pending queries
//! that timed out.
use std::collections::HashMap;

use agent_common::{
    dns::{DnsStats, DnsStatsKey, DnsStatsSlot, STATS_CACHE_SLOTS},
    names,
};
use aya::maps::{self, Map, MapData};

use super::pending::{PendingTable, TimedOut};
use crate::kernel::{Attachment, KernelError};

/// Reads without a change this many times in a row (one a second) and a statistics entry is
/// removed from the kernel table, to make room for new cgroups. Its counts were already
/// delivered; if the cgroup answers again the entry starts again from zero.
const IDLE_READS_BEFORE_REMOVAL: u32 = 600;

pub struct DnsTables {
    stats: maps::HashMap<MapData, DnsStatsKey, DnsStats>,
    stats_cpu: maps::PerCpuArray<MapData, DnsStatsSlot>,
    pending: PendingTable,
    config: maps::Array<MapData, u32>,
    /// What each entry held at the previous read, and for how many reads it has not changed.
    last: HashMap<DnsStatsKey, (DnsStats, u32)>,
    /// What each (CPU, slot) of the cache held at the previous read.
    last_cpu: HashMap<(usize, u32), DnsStatsSlot>,
    /// The epoch the kernel sees (`config::DNS_STATS_EPOCH`), advanced after each read.
    epoch: u32,
}

impl std::fmt::Debug for DnsTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsTables").field("entries", &self.last.len()).finish()
    }
}

impl DnsTables {
    pub fn new(
        stats: maps::HashMap<MapData, DnsStatsKey, DnsStats>,
        stats_cpu: maps::PerCpuArray<MapData, DnsStatsSlot>,
        pending: PendingTable,
        config: maps::Array<MapData, u32>,
    ) -> Self {
        Self {
            stats,
            stats_cpu,
            pending,
            config,
            last: HashMap::new(),
            last_cpu: HashMap::new(),
            epoch: 0,
        }
    }

    /// Takes the DNS maps out of the kernel object, the pending table mapped into this process.
    pub fn take(kernel: &mut Attachment) -> Result<Self, KernelError> {
        let name = names::MAP_DNS_PENDING;
        let Map::Array(data) = kernel.take_raw_map(name)? else {
            return Err(KernelError::NotAnArray(name));
        };
        let pending =
            PendingTable::new(data).map_err(|source| KernelError::Mmap { name, source })?;
        Ok(Self::new(
            kernel.take_map(names::MAP_DNS_STATS)?,
            kernel.take_map(names::MAP_DNS_STATS_CPU)?,
            pending,
            kernel.take_map(names::MAP_CONFIG)?,
        ))
    }

    /// The increments of every entry that changed since the previous call.
    pub fn read_increments(&mut self) -> Vec<(DnsStatsKey, DnsStats)> {
        let keys: Vec<DnsStatsKey> = self.stats.keys().filter_map(Result::ok).collect();
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(keys.len());
        for key in keys {
            // An entry removed between listing and lookup has nothing new.
            let Ok(now) = self.stats.get(&key, 0) else { continue };
            let (prev, unchanged) = self.last.get(&key).copied().unwrap_or((DnsStats::ZERO, 0));
            match increment(&prev, &now) {
                Some(inc) => {
                    out.push((key, inc));
                    next.insert(key, (now, 0));
                }
                None if unchanged + 1 >= IDLE_READS_BEFORE_REMOVAL => {
                    let _ = self.stats.remove(&key);
                }
                None => {
                    next.insert(key, (now, unchanged + 1));
                }
            }
        }
        self.last = next;
        for index in 0..STATS_CACHE_SLOTS {
            // Unreadable (not expected): read again next time, nothing lost meanwhile.
            let Ok(per_cpu) = self.stats_cpu.get(&index, 0) else { continue };
            for (cpu, now) in per_cpu.iter().enumerate() {
                let prev = self.last_cpu.insert((cpu, index), *now);
                if let Some(inc) = slot_increment(prev.as_ref(), now) {
                    out.push((now.key, inc));
                }
            }
        }
        // Only after everything above was read: a cache slot idle since the epoch before the
        // new one may then be taken by another key (see DnsStatsSlot).
        self.epoch = self.epoch.wrapping_add(1);
        if let Err(e) = self.config.set(names::config::DNS_STATS_EPOCH, &self.epoch, 0) {
            log::warn!("advancing the DNS statistics epoch: {e}");
        }
        out
    }

    /// Frees the slots of queries that waited longer than `timeout_ns` at monotonic time `now_ns`
    /// and returns them (see [`super::pending`]).
    pub fn take_timed_out(&mut self, now_ns: u64, timeout_ns: u64) -> Vec<TimedOut> {
        self.pending.take_timed_out(now_ns, timeout_ns)
    }
}

/// `now - prev`, or None when nothing changed. Counters only grow; if any went down the entry was
/// removed and created again since `prev`, and all of `now` is new.
pub fn increment(prev: &DnsStats, now: &DnsStats) -> Option<DnsStats> {
    let mut inc = *now;
    let mut recreated = false;
    let pairs = inc.responses.iter_mut().zip(prev.responses).chain([
        (&mut inc.truncated, prev.truncated),
        (&mut inc.latency_sum_ns, prev.latency_sum_ns),
    ]);
    for (n, p) in pairs.chain(inc.latency.iter_mut().zip(prev.latency)) {
        match n.checked_sub(p) {
            Some(d) => *n = d,
            None => recreated = true,
        }
    }
    if recreated {
        inc = *now;
    }
    (inc != DnsStats::ZERO).then_some(inc)
}

/// What a cache slot counted since `prev` (its previous read), or None. A slot whose key changed
/// was taken afresh: the previous key's counts were all read, and all of `now` is new. (The
/// kernel never resets a slot for the key it holds, and a slot taken by another key stays with it
/// for at least two epochs, so a change of key is always seen between two reads.)
pub fn slot_increment(prev: Option<&DnsStatsSlot>, now: &DnsStatsSlot) -> Option<DnsStats> {
    if now.key.cgroup_id == 0 {
        return None;
    }
    match prev {
        Some(p) if p.key == now.key => increment(&p.stats, &now.stats),
        _ => (now.stats != DnsStats::ZERO).then_some(now.stats),
    }
}

/// Answers in a statistics entry (every answer has one latency).
#[cfg(test)]
pub fn answers(s: &DnsStats) -> u64 {
    s.latency.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

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
