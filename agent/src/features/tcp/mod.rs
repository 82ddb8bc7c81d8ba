//! TCP connects and accepts per workload. The kernel classifies each connect's destination into
//! a small, bounded set of classes (from the configuration `classify` computes: the range table
//! goes to the kernel through crate::kernel::Settings) and counts connects, their latency and
//! accepts per (cgroup, class) (`tables`, read once a second); its only events name cgroups to
//! resolve at once (`record`). `observer` turns the counts into the series of `metrics`; `args`
//! are its flags.
pub mod args;
pub mod classify;
pub mod metrics;
pub mod observer;
pub mod record;
pub mod tables;

use agent_common::names;

use crate::{
    cli::RunArgs,
    endpoints::EndpointSpec,
    features::tcp::{classify::Classifier, metrics::TcpMetrics, observer::TcpObserver},
    kernel::KernelError,
    observer::{Delivery, Feature, Setup},
};

pub fn feature(setup: &mut Setup<'_>) -> Result<Feature, KernelError> {
    let tables = tables::take(setup.kernel)?;
    let metrics = TcpMetrics::register(setup.registry);
    Ok(Feature {
        name: "tcp",
        ring: Some(setup.kernel.take_map(names::MAP_TCP_EVENTS)?),
        delivery: Delivery::Polled,
        observer: Box::new(TcpObserver::new(tables, metrics)),
    })
}

/// What decides a destination's class, from the flags.
pub fn classifier(args: &RunArgs, endpoints: &[EndpointSpec]) -> Classifier {
    Classifier {
        metadata: endpoints.to_vec(),
        dns_ports: args.dns.dns_ports.clone(),
        cluster: args.tcp.cluster_cidrs.clone(),
        aws_api: args.tcp.aws_api_cidrs.clone(),
    }
}
