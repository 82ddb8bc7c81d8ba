//! The agent's userspace parsers, compiled from their own source files for the fuzz targets.
//!
//! The agent is a binary crate; rather than restructure it for fuzzing, this shim includes the
//! modules that parse untrusted input (kernel events, files, command-line values) with `#[path]`.
//! They depend on nothing else in the agent: a module that grows such a dependency stops
//! compiling here, which keeps the parsers self-contained and fuzzable.
#![allow(dead_code)]

#[path = "../../agent/src/cgroup.rs"]
pub mod cgroup;
#[path = "../../agent/src/endpoints.rs"]
pub mod endpoints;
#[path = "../../agent/src/workload.rs"]
pub mod workload;

/// The pod cache the workload resolver consults (plain data, no Kubernetes client).
#[path = "../../agent/src/pods/cache.rs"]
mod pods_cache;
pub mod pods {
    pub use crate::pods_cache::{Attribution, PodCache, PodEvent, PodMeta};
}

pub mod dns;
pub mod metadata;
pub mod tcp;
