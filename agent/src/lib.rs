//! credwatch's userspace agent as a library: the `credwatch` binary (src/main.rs) is its command
//! line; the demo (`credwatch-demo`, demo/) and the fuzz targets (fuzz/) link it too.
//! docs/architecture.md walks through the modules.
pub mod attribution;
pub mod cli;
pub mod clock;
pub mod counts;
pub mod endpoints;
pub mod features;
pub mod harden;
pub mod histogram;
pub mod http;
pub mod kernel;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod observer;
pub mod pipeline;
pub mod record;
pub mod run;
pub mod series;
