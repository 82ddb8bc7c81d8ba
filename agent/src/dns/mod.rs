//! DNS per workload. The kernel counts answered queries per cgroup and query type (read here once
//! a second, as deltas: `tables`) and sends an event, with the question name, only for NXDOMAIN
//! answers (or every answer with --dns-top-names): `event`. From those, the search-list
//! expansion analysis (`expansion`, with the pod's own resolv.conf), and timeouts: queries left
//! unanswered in the kernel's pending table, removed and counted here.
pub mod event;
pub mod expansion;
pub mod observer;
pub mod pending;
pub mod resolvconf;
pub mod tables;
