//! `agent/src/metadata/`.
#[path = "../../agent/src/metadata/detector.rs"]
pub mod detector;
#[path = "../../agent/src/metadata/event.rs"]
pub mod event;
#[path = "../../agent/src/metadata/expiration.rs"]
pub mod expiration;
