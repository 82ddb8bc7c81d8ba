//! TCP connects and accepts per workload: decoding the kernel's events (`record`), classifying
//! the destination the application asked for into a small, bounded set of classes (`classify`),
//! and the series of `metrics` (`observer`); `args` are its flags.
pub mod args;
pub mod classify;
pub mod metrics;
pub mod observer;
pub mod record;
