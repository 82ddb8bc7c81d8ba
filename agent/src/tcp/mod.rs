//! TCP connects and accepts per workload: decoding the kernel's events and classifying the
//! destination the application asked for into a small, bounded set of classes.
pub mod classify;
pub mod event;
pub mod observer;
