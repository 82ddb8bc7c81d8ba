//! `agent/src/tcp/`: the parsers only.
#[path = "../../agent/src/tcp/classify.rs"]
pub mod classify;
#[path = "../../agent/src/tcp/event.rs"]
pub mod event;
