//! DNS per workload. The kernel counts answered queries per cgroup and query type (read here once
//! a second, as deltas: `tables`) and sends an event, with the question name, only for NXDOMAIN
//! answers (or every answer with --dns-top-names): `record`. From those, the search-list
//! expansion analysis (`expansion`, with the pod's own resolv.conf), and timeouts: queries left
//! unanswered in the kernel's pending table (`pending`), removed and counted here. `observer`
//! turns all of it into the series of `metrics`; `args` are its flags.
pub mod args;
pub mod expansion;
pub mod metrics;
pub mod observer;
pub mod pending;
pub mod record;
pub mod resolvconf;
pub mod tables;
