//! Which destinations count as which link-local service: the documented addresses, the NTP
//! endpoints, the VPC resolvers, the metadata endpoints under their kind, and the addresses
//! served on the node itself (not counted). The kernel looks up the exact (address, port) first,
//! then (address, any port); packets to the rest of the link-local prefixes count as `other`.
use std::net::IpAddr;

use super::args::LinkLocalArgs;
use crate::endpoints::EndpointSpec;
use agent_common::{
    EndpointKey, EndpointKind,
    linklocal::{self, SERVICE_NOT_COUNTED, Service, ServiceKey},
};

/// The service a metadata endpoint of this kind counts as; `custom` endpoints (any container
/// credential server) are not link-local services.
pub fn service_of(kind: EndpointKind) -> Option<Service> {
    match kind {
        EndpointKind::Imds => Some(Service::Imds),
        EndpointKind::Ecs => Some(Service::Ecs),
        EndpointKind::PodIdentity => Some(Service::PodIdentity),
        EndpointKind::Custom => None,
    }
}

fn key(addr: IpAddr, port: u16) -> ServiceKey {
    let v6 = match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    EndpointKey::new(v6.octets(), port)
}

/// The kernel's service table: key and `Service as u8` (or [`SERVICE_NOT_COUNTED`]). Later
/// entries win over earlier ones for the same key, so what is configured beats the defaults.
pub fn table(args: &LinkLocalArgs, endpoints: &[EndpointSpec]) -> Vec<(ServiceKey, u8)> {
    let mut out: Vec<(ServiceKey, u8)> =
        linklocal::DEFAULT_SERVICES.iter().map(|&(k, s)| (k, s as u8)).collect();
    let metadata = endpoints
        .iter()
        .filter_map(|e| Some((key(e.addr.ip(), e.addr.port()), service_of(e.kind)? as u8)));
    out.extend(metadata);
    out.extend(args.ntp_endpoints.iter().map(|a| (key(a.ip(), a.port()), Service::Ntp as u8)));
    out.extend(
        args.vpc_resolvers.iter().map(|a| (key(a.0.ip(), a.0.port()), Service::AmazonDns as u8)),
    );
    out.extend(args.node_local.iter().map(|&ip| (key(ip, 0), SERVICE_NOT_COUNTED)));
    let mut seen = std::collections::HashSet::new();
    let mut deduped: Vec<_> = out.into_iter().rev().filter(|(k, _)| seen.insert(*k)).collect();
    deduped.reverse();
    deduped
}

/// Ports the kernel must look up for entries outside the link-local prefixes (stand-ins, the
/// VPC resolver): packets to the prefixes are looked up whatever their port.
pub fn stand_in_ports(table: &[(ServiceKey, u8)]) -> Vec<u16> {
    let mut ports: Vec<u16> = table
        .iter()
        .filter(|(k, _)| !linklocal::is_link_local(&k.addr) && k.port != 0)
        .map(|(k, _)| k.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> LinkLocalArgs {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: LinkLocalArgs,
        }
        Wrap::try_parse_from(std::iter::once("credwatch").chain(extra.iter().copied()))
            .unwrap()
            .args
    }

    fn lookup(table: &[(ServiceKey, u8)], addr: &str, port: u16) -> Option<u8> {
        let k = key(addr.parse().unwrap(), port);
        table.iter().find(|(t, _)| *t == k).map(|(_, s)| *s)
    }

    #[test]
    fn defaults() {
        let t = table(&LinkLocalArgs::default(), &crate::endpoints::aws_defaults());
        assert_eq!(lookup(&t, "169.254.169.254", 0), Some(Service::Imds as u8));
        assert_eq!(lookup(&t, "169.254.169.254", 80), Some(Service::Imds as u8));
        assert_eq!(lookup(&t, "fd00:ec2::253", 0), Some(Service::AmazonDns as u8));
        assert_eq!(lookup(&t, "169.254.169.123", 123), Some(Service::Ntp as u8));
        assert_eq!(lookup(&t, "fd00:ec2::123", 123), Some(Service::Ntp as u8));
        assert_eq!(lookup(&t, "169.254.20.10", 0), Some(SERVICE_NOT_COUNTED));
        // Everything is link-local: no port needs the slower lookup.
        assert!(stand_in_ports(&t).is_empty());
    }

    #[test]
    fn stand_ins_and_resolvers() {
        let a = args(&[
            "--vpc-resolver",
            "10.0.0.2",
            "--vpc-resolver",
            "[2001:db8::2]:5353",
            "--ntp-endpoint",
            "127.0.0.1:12300",
            "--node-local-address",
            "169.254.20.11",
        ]);
        let endpoints: Vec<EndpointSpec> =
            ["imds=127.0.0.1:8080", "ecs=127.0.0.1:8081", "custom=127.0.0.1:8082"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let t = table(&a, &endpoints);
        assert_eq!(lookup(&t, "10.0.0.2", 53), Some(Service::AmazonDns as u8));
        assert_eq!(lookup(&t, "2001:db8::2", 5353), Some(Service::AmazonDns as u8));
        assert_eq!(lookup(&t, "127.0.0.1", 12300), Some(Service::Ntp as u8));
        assert_eq!(lookup(&t, "127.0.0.1", 8080), Some(Service::Imds as u8));
        assert_eq!(lookup(&t, "127.0.0.1", 8081), Some(Service::Ecs as u8));
        assert_eq!(lookup(&t, "127.0.0.1", 8082), None, "custom is no link-local service");
        // Given flags replace the defaults.
        assert_eq!(lookup(&t, "169.254.169.123", 123), None);
        assert_eq!(lookup(&t, "169.254.20.10", 0), None);
        assert_eq!(lookup(&t, "169.254.20.11", 0), Some(SERVICE_NOT_COUNTED));
        assert_eq!(stand_in_ports(&t), vec![53, 5353, 8080, 8081, 12300]);
    }

    #[test]
    fn configured_beats_default_for_the_same_key() {
        let a = args(&["--node-local-address", "169.254.169.253"]);
        let t = table(&a, &[]);
        assert_eq!(lookup(&t, "169.254.169.253", 0), Some(SERVICE_NOT_COUNTED));
        assert_eq!(
            t.iter().filter(|(k, _)| *k == key("169.254.169.253".parse().unwrap(), 0)).count(),
            1
        );
    }
}
