//! DNS per workload: decoding the kernel's query/response events, joining them (the response
//! event carries the kernel-measured latency, the query event the name), timeouts, and the
//! search-list expansion analysis.
pub mod event;
pub mod expansion;
pub mod observer;
pub mod resolvconf;
pub mod tracker;
