//! Recognises the queries a stub resolver made only because of the search list.
//!
//! glibc, for a name with fewer than `ndots` dots, first tries the name with each search suffix
//! in order, then the name itself. A query `Q` is an expansion query when `Q = B.S` for the first
//! suffix `S` of the list it ends with and `B` has fewer than `ndots` dots; its base `B` is
//! remembered for a short while, so that the final absolute query for `B` is not taken for an
//! expansion of a shorter base (`nonexistent.svc.cluster.local` is itself of the form `B.S`).
use std::collections::VecDeque;

use super::resolvconf::ResolvConf;

/// How long a base stays remembered (seconds): longer than a resolver spends on one lookup.
const BASE_MEMORY_SECS: f64 = 30.0;
const BASES_MAX: usize = 64;

#[derive(Debug, Default)]
pub struct Expansion {
    recent_bases: VecDeque<(String, f64)>,
}

impl Expansion {
    /// Whether `name` (lower case, no trailing dot) was sent only because of the search list.
    pub fn is_expansion(&mut self, conf: &ResolvConf, name: &str, now: f64) -> bool {
        while self.recent_bases.front().is_some_and(|(_, t)| now - t > BASE_MEMORY_SECS) {
            self.recent_bases.pop_front();
        }
        if self.recent_bases.iter().any(|(b, _)| b == name) {
            return false; // the absolute query that ends a lookup
        }
        let Some(base) = conf.search.iter().find_map(|s| {
            let base = name.strip_suffix(s.as_str())?.strip_suffix('.')?;
            (!base.is_empty()).then_some(base)
        }) else {
            return false;
        };
        if base.matches('.').count() as u32 >= conf.ndots {
            return false;
        }
        if !self.recent_bases.iter().any(|(b, _)| b == base) {
            if self.recent_bases.len() == BASES_MAX {
                self.recent_bases.pop_front();
            }
            self.recent_bases.push_back((base.to_string(), now));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube() -> ResolvConf {
        super::super::resolvconf::parse(
            "search ns1.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        )
    }

    /// The queries glibc sends for one lookup of `name` (one per family), in order.
    fn glibc_sequence(conf: &ResolvConf, name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if (name.matches('.').count() as u32) < conf.ndots {
            out.extend(conf.search.iter().map(|s| format!("{name}.{s}")));
        }
        out.push(name.to_string());
        out
    }

    #[test]
    fn external_name_counts_one_expansion_per_suffix() {
        let conf = kube();
        let mut e = Expansion::default();
        let flags: Vec<bool> = glibc_sequence(&conf, "api.example.com")
            .iter()
            .map(|q| e.is_expansion(&conf, q, 0.0))
            .collect();
        assert_eq!(flags, [true, true, true, false]);
    }

    #[test]
    fn name_that_itself_ends_in_a_suffix_is_not_miscounted() {
        let conf = kube();
        let mut e = Expansion::default();
        let seq = glibc_sequence(&conf, "missing.svc.cluster.local");
        let flags: Vec<bool> = seq.iter().map(|q| e.is_expansion(&conf, q, 0.0)).collect();
        assert_eq!(flags, [true, true, true, false], "{seq:?}");
    }

    #[test]
    fn names_with_enough_dots_are_not_expanded() {
        let conf = kube();
        let mut e = Expansion::default();
        assert!(!e.is_expansion(&conf, "a.b.c.d.e.f.ns1.svc.cluster.local", 0.0));
        assert!(!e.is_expansion(&conf, "example.com", 0.0));
        assert!(!e.is_expansion(&ResolvConf::default(), "example.com.svc.cluster.local", 0.0));
    }

    #[test]
    fn remembered_bases_expire() {
        let conf = kube();
        let mut e = Expansion::default();
        assert!(e.is_expansion(&conf, "x.ns1.svc.cluster.local", 0.0));
        // much later, a direct query of x.svc.cluster.local is again read as an expansion of x
        assert!(e.is_expansion(&conf, "x.svc.cluster.local", 100.0));
    }
}
