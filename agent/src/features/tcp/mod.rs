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

use agent_common::{names, tcp::CIDR_TABLE_SIZE};
use aya::maps::{LpmTrie, lpm_trie::Key};

use crate::{
    cli::RunArgs,
    endpoints::EndpointSpec,
    features::tcp::{classify::Classifier, metrics::TcpMetrics, observer::TcpObserver},
    kernel::{Attachment, KernelError},
    observer::{Delivery, Feature, Setup},
};

pub fn feature(setup: &mut Setup<'_>) -> Result<Feature, KernelError> {
    configure(setup.kernel, &classifier(setup.args, setup.endpoints).cidr_table())?;
    let tables = tables::take(setup.kernel)?;
    let metrics = TcpMetrics::register(setup.registry);
    Ok(Feature {
        name: "tcp",
        ring: Some((setup.kernel.take_map(names::MAP_TCP_EVENTS)?, Delivery::Polled)),
        observer: Box::new(TcpObserver::new(tables, metrics)),
    })
}

/// What decides a destination's class, from the flags.
fn classifier(args: &RunArgs, endpoints: &[EndpointSpec]) -> Classifier {
    Classifier {
        metadata: endpoints.to_vec(),
        dns_ports: args.dns.dns_ports.clone(),
        cluster: args.tcp.cluster_cidrs.clone(),
        aws_api: args.tcp.aws_api_cidrs.clone(),
    }
}

/// Fills the destination-range table, (prefix length, IPv6 network, class) entries from
/// `Classifier::cidr_table`, and tells the programs how many there are (none: no lookup).
fn configure(kernel: &mut Attachment, ranges: &[(u32, [u8; 16], u8)]) -> Result<(), KernelError> {
    if ranges.len() > CIDR_TABLE_SIZE as usize {
        return Err(KernelError::TooManyRanges(ranges.len(), CIDR_TABLE_SIZE));
    }
    let name = names::MAP_TCP_CIDRS;
    let map_err = |source| KernelError::Map { name, source };
    let mut trie: LpmTrie<_, [u8; 16], u8> =
        LpmTrie::try_from(kernel.map_mut(name)?).map_err(map_err)?;
    for &(prefix, net, class) in ranges {
        trie.insert(&Key::new(prefix, net), &class, 0).map_err(map_err)?;
    }
    kernel.set_config(names::config::TCP_CIDRS, ranges.len() as u32)
}
