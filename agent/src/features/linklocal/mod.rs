//! The link-local packet budget (EC2: 1024 packets a second per interface to IMDS, the Amazon
//! DNS resolver, time sync, the ECS and Pod Identity agents). The kernel counts every packet to
//! them per (cgroup, service) and per second (`agent-ebpf/src/linklocal.rs`), in tables read
//! here once a second (`tables`), into per-workload counters and per-second histograms
//! (`observer`, `seconds`, `metrics`). Which destination is which service (`services`) comes from
//! the documented addresses, the metadata endpoints and the flags (`args`). The ENA driver's own
//! allowance counters are read at scrape time (`ena`).
pub mod args;
pub mod ena;
pub mod metrics;
pub mod observer;
pub mod seconds;
pub mod services;
pub mod tables;

use agent_common::{
    PORT_FLAG_LINKLOCAL,
    linklocal::{SERVICE_TABLE_SIZE, ServiceKey, ServiceValue},
    names,
};
use aya::maps::HashMap;

use crate::{
    clock::Clock,
    features::linklocal::{
        metrics::LinkLocalMetrics, observer::LinkLocalObserver, tables::LinkLocalTables,
    },
    kernel::{Attachment, KernelError},
    observer::{Feature, Setup},
};

pub fn feature(setup: &mut Setup<'_>) -> Result<Feature, KernelError> {
    let table = services::table(&setup.args.linklocal, setup.endpoints);
    configure(setup.kernel, &table)?;
    let tables = LinkLocalTables::take(setup.kernel)?;
    let metrics = LinkLocalMetrics::register(setup.registry);
    Ok(Feature {
        name: "linklocal",
        // Counted in kernel tables, read on the tick: nothing travels per packet.
        ring: None,
        observer: Box::new(LinkLocalObserver::new(tables, metrics, Clock::new().monotonic_ns())),
    })
}

/// Fills the kernel's service table and flags the ports of stand-ins outside the link-local
/// prefixes (before the programs are attached: no packet sees an empty table).
fn configure(kernel: &mut Attachment, table: &[(ServiceKey, u8)]) -> Result<(), KernelError> {
    if table.len() > SERVICE_TABLE_SIZE as usize {
        return Err(KernelError::TableTooSmall {
            what: "link-local service addresses",
            entries: table.len(),
            capacity: SERVICE_TABLE_SIZE,
        });
    }
    let name = names::MAP_LINKLOCAL_SERVICES;
    let map_err = |source| KernelError::Map { name, source };
    let mut services: HashMap<_, ServiceKey, ServiceValue> =
        HashMap::try_from(kernel.map_mut(name)?).map_err(map_err)?;
    for (key, service) in table {
        let value = ServiceValue { service: *service, _pad: [0; 3] };
        services.insert(key, &value, 0).map_err(map_err)?;
    }
    for port in services::stand_in_ports(table) {
        kernel.flag_port(port, PORT_FLAG_LINKLOCAL)?;
        log::info!("counting link-local stand-in packets on port {port}");
    }
    Ok(())
}
