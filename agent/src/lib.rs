//! credwatch's userspace agent as a library: the `credwatch` binary (src/main.rs) is its command
//! line, and the demo and the fuzz targets link it too.
pub mod attribution;
pub mod cli;
pub mod clock;
pub mod demo;
pub mod endpoints;
pub mod features;
pub mod harden;
pub mod http;
pub mod kernel;
pub mod memory;
pub mod metrics;
pub mod observer;
pub mod pipeline;
pub mod record;
pub mod run;
pub mod series;
