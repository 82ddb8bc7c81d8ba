//! Metadata-endpoint traffic: decoding the kernel's events, turning the kernel's packed
//! expiration into time, the credential-refresh storm detector, and requests left unanswered.
pub mod detector;
pub mod event;
pub mod expiration;
pub mod observer;
pub mod unanswered;
