//! Metadata-endpoint traffic: decoding the kernel's events, turning the kernel's packed
//! expiration into time, and the credential-refresh storm detector.
pub mod detector;
pub mod event;
pub mod expiration;
