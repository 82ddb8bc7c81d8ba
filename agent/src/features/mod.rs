//! The features. Each folder owns its record decoding (`record`), its observer, its metric
//! families and label types (`metrics`), and its command-line flags (`args`), and builds itself
//! from a [`Setup`] (`feature()` in its `mod.rs`).
pub mod dns;
pub mod linklocal;
pub mod metadata;
pub mod tcp;

use crate::{
    kernel::KernelError,
    observer::{Feature, Setup},
};

/// Every feature, built in the order their families appear in /metrics. Adding a feature: its
/// folder, a line here, and its flags in crate::cli::RunArgs.
pub fn all(setup: &mut Setup<'_>) -> Result<Vec<Feature>, KernelError> {
    Ok(vec![
        dns::feature(setup)?,
        tcp::feature(setup)?,
        metadata::feature(setup)?,
        linklocal::feature(setup)?,
    ])
}
