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

use agent_common::{ENDPOINT_TABLE_SIZE, EndpointKey, EndpointValue, PORT_FLAG_METADATA, names};
use aya::maps::HashMap;

use crate::{
    endpoints::EndpointSpec,
    features::metadata::{
        detector::Rule, metrics::MetadataMetrics, observer::MetadataObserver,
        unanswered::Unanswered,
    },
    kernel::{self, Attachment, KernelError},
    observer::{Delivery, Feature, Setup},
};

pub fn feature(setup: &mut Setup<'_>) -> Result<Feature, KernelError> {
    configure(setup.kernel, setup.endpoints)?;
    setup.kernel.set_config(
        names::config::METADATA_TIMEOUT_MS,
        kernel::config_ms(setup.args.metadata_wait()),
    )?;
    let metrics = MetadataMetrics::register(setup.registry);
    // The kernel's flow table, read for the requests left unanswered.
    let unanswered =
        Unanswered::new(setup.kernel.take_map(names::MAP_FLOWS)?, setup.args.metadata_wait());
    Ok(Feature {
        name: "metadata",
        ring: Some((setup.kernel.take_map(names::MAP_EVENTS)?, Delivery::Polled)),
        observer: Box::new(MetadataObserver::new(
            Rule::from(&setup.args.detector),
            unanswered,
            metrics,
        )),
    })
}

/// Fills the endpoint table and flags each endpoint's port as a metadata port (a port can also
/// be a DNS port; metadata parsing then takes precedence for TCP to an endpoint address).
fn configure(kernel: &mut Attachment, endpoints: &[EndpointSpec]) -> Result<(), KernelError> {
    if endpoints.len() > ENDPOINT_TABLE_SIZE as usize {
        return Err(KernelError::TooManyEndpoints(endpoints.len(), ENDPOINT_TABLE_SIZE));
    }
    let name = names::MAP_ENDPOINTS;
    let map_err = |source| KernelError::Map { name, source };
    let mut table: HashMap<_, EndpointKey, EndpointValue> =
        HashMap::try_from(kernel.map_mut(name)?).map_err(map_err)?;
    for e in endpoints {
        let value = EndpointValue { kind: e.kind as u8, _pad: [0; 3] };
        table.insert(&e.key(), &value, 0).map_err(map_err)?;
    }
    for e in endpoints {
        kernel.flag_port(e.addr.port(), PORT_FLAG_METADATA)?;
        log::info!("watching metadata endpoint {e}");
    }
    Ok(())
}
