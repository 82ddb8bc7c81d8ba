//! Metadata endpoints: the real AWS ones by default, plus any given on the command line.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use agent_common::{EndpointKey, EndpointKind};

/// An endpoint to watch and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    pub kind: EndpointKind,
}

impl EndpointSpec {
    pub fn key(&self) -> EndpointKey {
        let addr = match self.addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        EndpointKey::new(addr.octets(), self.addr.port())
    }
}

impl fmt::Display for EndpointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.kind.as_str(), self.addr)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointParseError {
    #[error("unknown endpoint kind {0:?} (expected imds, ecs, pod_identity or custom)")]
    Kind(String),
    #[error("{0:?} is not ADDR:PORT (IPv6 as [ADDR]:PORT)")]
    Addr(String),
    #[error("{0:?}: port 0 cannot be watched")]
    Port(String),
}

impl FromStr for EndpointSpec {
    type Err = EndpointParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (kind, addr) = match s.split_once('=') {
            Some((kind, addr)) => (parse_kind(kind)?, addr),
            None => (EndpointKind::Custom, s),
        };
        let addr: SocketAddr =
            addr.parse().map_err(|_| EndpointParseError::Addr(addr.to_string()))?;
        if addr.port() == 0 {
            return Err(EndpointParseError::Port(s.to_string()));
        }
        Ok(Self { addr, kind })
    }
}

fn parse_kind(s: &str) -> Result<EndpointKind, EndpointParseError> {
    match s {
        "imds" => Ok(EndpointKind::Imds),
        "ecs" => Ok(EndpointKind::Ecs),
        "pod_identity" => Ok(EndpointKind::PodIdentity),
        "custom" => Ok(EndpointKind::Custom),
        other => Err(EndpointParseError::Kind(other.to_string())),
    }
}

/// The real AWS endpoints (plain HTTP, port 80). Configured in the kernel map only: credwatch
/// never sends anything to them.
pub fn aws_defaults() -> Vec<EndpointSpec> {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let v6 = |last| IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, last));
    [
        (v4(169, 254, 169, 254), EndpointKind::Imds),
        (v6(0x254), EndpointKind::Imds),
        (v4(169, 254, 170, 2), EndpointKind::Ecs),
        (v4(169, 254, 170, 23), EndpointKind::PodIdentity),
        (v6(0x23), EndpointKind::PodIdentity),
    ]
    .into_iter()
    .map(|(ip, kind)| EndpointSpec { addr: SocketAddr::new(ip, 80), kind })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_ipv4_and_ipv6() {
        let e: EndpointSpec = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(e.kind, EndpointKind::Custom);
        assert_eq!(e.key(), EndpointKey::v4([127, 0, 0, 1], 8080));
        let e: EndpointSpec = "[::1]:9000".parse().unwrap();
        let mut want = [0u8; 16];
        want[15] = 1;
        assert_eq!(e.key(), EndpointKey::new(want, 9000));
    }

    #[test]
    fn parses_kind_prefix() {
        let e: EndpointSpec = "ecs=127.0.0.2:80".parse().unwrap();
        assert_eq!(e.kind, EndpointKind::Ecs);
    }

    #[test]
    fn rejects_bad_input_with_a_clear_error() {
        assert!(matches!("nope".parse::<EndpointSpec>(), Err(EndpointParseError::Addr(_))));
        assert!(matches!("::1:80".parse::<EndpointSpec>(), Err(EndpointParseError::Addr(_))));
        assert!(matches!("x=1.2.3.4:80".parse::<EndpointSpec>(), Err(EndpointParseError::Kind(_))));
        assert!(matches!("1.2.3.4:0".parse::<EndpointSpec>(), Err(EndpointParseError::Port(_))));
    }

    #[test]
    fn defaults_are_the_five_aws_addresses_on_port_80() {
        let d = aws_defaults();
        assert_eq!(d.len(), 5);
        assert!(d.iter().all(|e| e.addr.port() == 80));
        assert_eq!(d[0].key(), EndpointKey::v4([169, 254, 169, 254], 80));
    }
}
