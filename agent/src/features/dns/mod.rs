//! DNS per workload. The kernel counts answered queries per cgroup and query type (read here once
//! a second, as deltas: `tables`) and sends an event, with the question name, only for NXDOMAIN
//! answers (or every answer with --dns-top-names): `record`. From those, the search-list
//! expansion analysis (`expansion`, with the pod's own resolv.conf), and timeouts: queries left
//! unanswered in the kernel's pending table (`pending`), removed and counted here. `observer`
//! turns all of it into the series of `metrics`; `args` are its flags.
pub mod args;
pub mod expansion;
pub mod metrics;
pub mod observer;
pub mod pending;
pub mod record;
pub mod resolvconf;
pub mod tables;

use agent_common::{PORT_FLAG_DNS, names};

use crate::{
    features::dns::{metrics::DnsMetrics, observer::DnsObserver},
    kernel::{self, KernelError},
    observer::{Delivery, Feature, Setup},
};

pub fn feature(setup: &mut Setup<'_>) -> Result<Feature, KernelError> {
    let args = &setup.args.dns;
    for &port in &args.dns_ports {
        setup.kernel.flag_port(port, PORT_FLAG_DNS)?;
        log::info!("watching DNS on port {port}");
    }
    // An event for every answer (for --dns-top-names), not only NXDOMAIN.
    setup.kernel.set_config(names::config::DNS_ALL_NAMES, u32::from(args.dns_top_names > 0))?;
    setup.kernel.set_config(names::config::DNS_TIMEOUT_MS, kernel::config_ms(args.timeout()))?;
    let stats = tables::take_stats(setup.kernel)?;
    let pending = tables::take_pending(setup.kernel)?;
    let metrics = DnsMetrics::register(setup.registry);
    Ok(Feature {
        name: "dns",
        // Events (NXDOMAIN answers) are read as they come: the search-list analysis reads the
        // pod's resolv.conf through one of its processes, and a short-lived resolver may be gone
        // a poll later. They are few (the kernel counts everything else).
        ring: Some((setup.kernel.take_map(names::MAP_DNS_EVENTS)?, Delivery::Woken)),
        observer: Box::new(DnsObserver::new(
            args.timeout(),
            args.dns_top_names,
            stats,
            pending,
            metrics,
        )),
    })
}
