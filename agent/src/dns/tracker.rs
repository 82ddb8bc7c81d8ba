//! Queries waiting for their response, in userspace: the response event only carries the socket
//! and transaction id, the query event the name. Queries unanswered after the timeout are
//! reported once, as timeouts; the table is bounded.
use std::collections::{HashMap, VecDeque};

pub type QueryKey = (u64, u16);

#[derive(Debug, Clone, PartialEq)]
pub struct PendingQuery {
    pub cgroup_id: u64,
    pub qtype: u16,
    pub name: String,
    pub ktime_ns: u64,
}

#[derive(Debug)]
pub struct Tracker {
    pending: HashMap<QueryKey, PendingQuery>,
    /// Insertion order for expiry; entries whose query was answered or re-sent are skipped.
    order: VecDeque<(QueryKey, u64)>,
    timeout_ns: u64,
    capacity: usize,
}

/// What happened to a query when a new one arrived.
#[derive(Debug, PartialEq)]
pub enum Admitted {
    Yes,
    /// The table was full: the oldest pending query was dropped without an outcome.
    EvictedOldest(PendingQuery),
}

impl Tracker {
    pub fn new(timeout_ns: u64, capacity: usize) -> Self {
        Self {
            pending: HashMap::new(),
            order: VecDeque::new(),
            timeout_ns,
            capacity: capacity.max(1),
        }
    }

    pub fn on_query(&mut self, key: QueryKey, q: PendingQuery) -> Admitted {
        let mut admitted = Admitted::Yes;
        if !self.pending.contains_key(&key) && self.pending.len() >= self.capacity {
            while let Some((old, t)) = self.order.pop_front() {
                if self.pending.get(&old).is_some_and(|p| p.ktime_ns == t) {
                    admitted = Admitted::EvictedOldest(self.pending.remove(&old).expect("checked"));
                    break;
                }
            }
        }
        self.order.push_back((key, q.ktime_ns));
        self.pending.insert(key, q);
        admitted
    }

    pub fn on_response(&mut self, key: QueryKey) -> Option<PendingQuery> {
        self.pending.remove(&key)
    }

    /// Removes and returns the queries older than the timeout at monotonic time `now_ns`.
    pub fn expire(&mut self, now_ns: u64) -> Vec<PendingQuery> {
        let mut expired = Vec::new();
        while let Some(&(key, t)) = self.order.front() {
            if now_ns.saturating_sub(t) < self.timeout_ns {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&key).is_some_and(|p| p.ktime_ns == t) {
                expired.extend(self.pending.remove(&key));
            }
        }
        // Keep the order queue from growing with answered entries under sustained load.
        if self.order.len() > 4 * self.capacity {
            let pending = &self.pending;
            self.order.retain(|(k, t)| pending.get(k).is_some_and(|p| p.ktime_ns == *t));
        }
        expired
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(t: u64) -> PendingQuery {
        PendingQuery { cgroup_id: 1, qtype: 1, name: format!("n{t}"), ktime_ns: t }
    }

    #[test]
    fn answered_queries_never_time_out() {
        let mut tr = Tracker::new(100, 10);
        tr.on_query((1, 1), q(0));
        tr.on_query((1, 2), q(10));
        assert_eq!(tr.on_response((1, 1)), Some(q(0)));
        assert_eq!(tr.expire(105), vec![]);
        assert_eq!(tr.expire(110), vec![q(10)]);
        assert_eq!(tr.on_response((1, 2)), None, "a late answer finds nothing");
        assert_eq!(tr.len(), 0);
    }

    #[test]
    fn a_resent_query_times_out_once_from_its_last_send() {
        let mut tr = Tracker::new(100, 10);
        tr.on_query((1, 1), q(0));
        tr.on_query((1, 1), q(50));
        assert_eq!(tr.expire(120), vec![]);
        assert_eq!(tr.expire(150), vec![q(50)]);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut tr = Tracker::new(1_000, 2);
        tr.on_query((1, 1), q(0));
        tr.on_query((1, 2), q(1));
        assert_eq!(tr.on_query((1, 3), q(2)), Admitted::EvictedOldest(q(0)));
        assert_eq!(tr.len(), 2);
    }
}
