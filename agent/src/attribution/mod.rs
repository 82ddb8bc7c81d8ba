//! Who an event belongs to: cgroup id → the labels its series carry. A leaf of the agent: it
//! imports nothing from the features, the series registry or the pipeline above it.
//!
//! - `labels`: [`labels::Workload`], the labels of every per-workload series, and its encoder;
//! - `identify`: what a cgroup path says (pod UID, container id, systemd unit, or the path);
//! - `cgroup`: the cgroup v2 mount and the index of cgroup ids to paths;
//! - `pods`: the Kubernetes watch of this node's pods and the cache of their metadata;
//! - `resolver`: cgroup id → labels, relabelling when pod metadata comes or goes, and which
//!   label sets are still alive;
//! - `metrics`: attribution's own metrics.
pub mod cgroup;
pub mod identify;
pub mod labels;
pub mod metrics;
pub mod pods;
pub mod resolver;
