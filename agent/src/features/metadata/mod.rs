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

use agent_common::names;

use crate::{
    features::metadata::{
        detector::Rule, metrics::MetadataMetrics, observer::MetadataObserver,
        unanswered::Unanswered,
    },
    kernel::KernelError,
    observer::{Delivery, Feature, Setup},
};

pub fn feature(setup: &mut Setup<'_>) -> Result<Feature, KernelError> {
    let metrics = MetadataMetrics::register(setup.registry);
    // The kernel's flow table, read for the requests left unanswered.
    let unanswered =
        Unanswered::new(setup.kernel.take_map(names::MAP_FLOWS)?, setup.args.metadata_wait());
    Ok(Feature {
        name: "metadata",
        ring: Some(setup.kernel.take_map(names::MAP_EVENTS)?),
        delivery: Delivery::Polled,
        observer: Box::new(MetadataObserver::new(
            Rule::from(&setup.args.detector),
            unanswered,
            metrics,
        )),
    })
}
