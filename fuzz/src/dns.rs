//! `agent/src/dns/`: the parsers only.
#[path = "../../agent/src/dns/event.rs"]
pub mod event;
#[path = "../../agent/src/dns/expansion.rs"]
pub mod expansion;
#[path = "../../agent/src/dns/resolvconf.rs"]
pub mod resolvconf;
