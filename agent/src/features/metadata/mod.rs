//! Metadata-endpoint traffic: decoding the kernel's events (`record`), turning the kernel's
//! packed expiration into time (`expiration`), the credential-refresh storm detector
//! (`detector`, its flags in `args`), requests left unanswered (`unanswered`), and the series of
//! `metrics` (`observer`).
pub mod args;
pub mod detector;
pub mod expiration;
pub mod metrics;
pub mod observer;
pub mod record;
pub mod unanswered;
