//! The node's link-local packets per second: the kernel's per-CPU slots (one per second modulo
//! `SECOND_SLOTS`) summed over CPUs, once per completed second, every second observed exactly
//! once (idle ones as 0) so that the histogram's count is the number of seconds watched.
use agent_common::linklocal::{NS_PER_SECOND, SECOND_SLOTS, SERVICES, SecondSlot, second_slot};

/// A second is read this long after it ended: a program that read the clock just before the
/// boundary may still be adding to its slot (nanoseconds, in practice).
pub const SETTLE_NS: u64 = 100_000_000;

/// One completed second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Second {
    /// Packets by service (indexes of `Service`).
    Counted { second: u64, packets: [u64; SERVICES] },
    /// Its slots were reused by a later second before this one was read (the agent stalled for
    /// `SECOND_SLOTS` seconds): not observed, counted as lost.
    Lost { second: u64 },
}

#[derive(Debug)]
pub struct Seconds {
    /// The first second not observed yet.
    next: u64,
}

impl Seconds {
    /// Starts with the second in progress at `now_ns` (the programs were attached during it):
    /// its packets since then are observed, an undercount of that second at worst.
    pub fn new(now_ns: u64) -> Self {
        Self { next: now_ns / NS_PER_SECOND }
    }

    /// The seconds completed by `now_ns` and not observed yet, from `slots` (each slot index's
    /// per-CPU values: `slots[index][cpu]`).
    pub fn completed(&mut self, now_ns: u64, slots: &[Vec<SecondSlot>]) -> Vec<Second> {
        let current = now_ns.saturating_sub(SETTLE_NS) / NS_PER_SECOND;
        let mut out = Vec::new();
        while self.next < current {
            let second = self.next;
            self.next += 1;
            // Reused by a later second on some CPU, or possibly so: the slot's second is only
            // safe while fewer than SECOND_SLOTS seconds have begun since.
            let per_cpu = slots.get(second_slot(second) as usize).map_or(&[][..], Vec::as_slice);
            let overwritten = per_cpu.iter().any(|s| s.second > second);
            if overwritten || second + u64::from(SECOND_SLOTS) <= now_ns / NS_PER_SECOND {
                out.push(Second::Lost { second });
                continue;
            }
            let mut packets = [0u64; SERVICES];
            for slot in per_cpu.iter().filter(|s| s.second == second) {
                for (sum, &n) in packets.iter_mut().zip(&slot.packets) {
                    *sum += u64::from(n);
                }
            }
            out.push(Second::Counted { second, packets });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_SECOND;

    fn slots(filled: &[(u64, usize, [u32; 8])], cpus: usize) -> Vec<Vec<SecondSlot>> {
        let mut out = vec![vec![SecondSlot::default(); cpus]; SECOND_SLOTS as usize];
        for &(second, cpu, packets) in filled {
            out[second_slot(second) as usize][cpu] = SecondSlot { second, packets };
        }
        out
    }

    fn counted(second: u64, packets: [u64; SERVICES]) -> Second {
        Second::Counted { second, packets }
    }

    #[test]
    fn each_second_once_summed_over_cpus() {
        let mut s = Seconds::new(100 * S + 3);
        let table = slots(
            &[
                (100, 1, [0, 6, 0, 0, 0, 0, 0, 0]),
                (101, 0, [1, 0, 0, 2, 0, 0, 0, 0]),
                (101, 1, [4, 0, 0, 0, 0, 1, 0, 0]),
            ],
            2,
        );
        // The second the agent started in counts too (what was sent after it attached).
        assert_eq!(
            s.completed(101 * S + SETTLE_NS, &table),
            vec![counted(100, [0, 6, 0, 0, 0, 0])]
        );
        // 101 is not over (nor settled) yet.
        assert!(s.completed(102 * S, &table).is_empty());
        assert!(s.completed(102 * S + SETTLE_NS - 1, &table).is_empty());
        assert_eq!(
            s.completed(102 * S + SETTLE_NS, &table),
            vec![counted(101, [5, 0, 0, 2, 0, 1])]
        );
        assert!(s.completed(102 * S + SETTLE_NS + 5, &table).is_empty(), "observed once");
        // Quiet seconds are observed too, as zeros.
        assert_eq!(
            s.completed(104 * S + SETTLE_NS, &table),
            vec![counted(102, [0; SERVICES]), counted(103, [0; SERVICES])]
        );
    }

    #[test]
    fn a_burst_over_two_seconds_is_two_observations() {
        let mut s = Seconds::new(201 * S);
        let table =
            slots(&[(201, 0, [0, 0, 0, 0, 300, 0, 0, 0]), (202, 1, [0, 0, 0, 0, 600, 0, 0, 0])], 2);
        assert_eq!(
            s.completed(203 * S + SETTLE_NS, &table),
            vec![counted(201, [0, 0, 0, 0, 300, 0]), counted(202, [0, 0, 0, 0, 600, 0])]
        );
    }

    #[test]
    fn slots_of_other_seconds_do_not_count() {
        let mut s = Seconds::new(301 * S);
        // The slot of 301 on CPU 1 still holds 293 (that CPU sent nothing since).
        let table = slots(&[(301, 0, [3, 0, 0, 0, 0, 0, 0, 0]), (293, 1, [9; 8])], 2);
        assert_eq!(
            s.completed(302 * S + SETTLE_NS, &table),
            vec![counted(301, [3, 0, 0, 0, 0, 0])]
        );
    }

    #[test]
    fn a_stalled_reader_reports_reused_seconds_lost() {
        let mut s = Seconds::new(401 * S);
        let n = u64::from(SECOND_SLOTS);
        // Read again only n + 2 seconds later: 401 and 402's slots were taken by 401+n, 402+n.
        let table = slots(&[(401 + n, 0, [1; 8]), (402, 1, [2; 8])], 2);
        let got = s.completed((403 + n) * S + SETTLE_NS, &table);
        assert_eq!(got[0], Second::Lost { second: 401 });
        assert_eq!(got[1], Second::Lost { second: 402 }, "{got:?}");
        // 403's slot is also that of the second in progress (403 + n): it may be in use.
        assert_eq!(got[2], Second::Lost { second: 403 }, "{got:?}");
        assert!(matches!(got[3], Second::Counted { second: 404, .. }));
        assert_eq!(got.len(), n as usize + 2);
    }
}
