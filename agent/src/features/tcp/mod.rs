//! TCP connects and accepts per workload: decoding the kernel's events (`record`), classifying
//! the destination the application asked for into a small, bounded set of classes (`classify`),
//! and the series of `metrics` (`observer`); `args` are its flags.
pub mod args;
pub mod classify;
pub mod metrics;
pub mod observer;
pub mod record;

use agent_common::names;

use crate::{
    features::tcp::{classify::Classifier, metrics::TcpMetrics, observer::TcpObserver},
    kernel::KernelError,
    observer::{Delivery, Feature, Setup},
};

pub fn feature(setup: &mut Setup<'_>) -> Result<Feature, KernelError> {
    let classifier = Classifier {
        metadata: setup.endpoints.to_vec(),
        dns_ports: setup.args.dns.dns_ports.clone(),
        cluster: setup.args.tcp.cluster_cidrs.clone(),
        aws_api: setup.args.tcp.aws_api_cidrs.clone(),
    };
    let metrics = TcpMetrics::register(setup.registry);
    Ok(Feature {
        name: "tcp",
        ring: setup.kernel.take_map(names::MAP_TCP_EVENTS)?,
        delivery: Delivery::Polled,
        observer: Box::new(TcpObserver::new(classifier, metrics)),
    })
}
