//! Destination classes: `metadata`, `dns`, `cluster`, `aws_api`, `loopback`, `external`. Raw
//! addresses never become labels.
use std::{fmt, net::IpAddr, str::FromStr};

use crate::endpoints::EndpointSpec;

/// An address range, `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a CIDR (ADDR/PREFIX, e.g. 10.0.0.0/8 or fd00::/8)")]
pub struct CidrParseError(String);

impl FromStr for Cidr {
    type Err = CidrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Classifier {
    pub metadata: Vec<EndpointSpec>,
    pub dns_ports: Vec<u16>,
    pub cluster: Vec<Cidr>,
    pub aws_api: Vec<Cidr>,
}

impl Classifier {
    /// The class of a destination, most specific first, and what was configured before what is
    /// built in: a metadata endpoint or a configured range on loopback (a test fake, a node-local
    /// proxy) is `metadata`, `cluster` or `aws_api`, not `loopback`.
    pub fn classify(&self, addr: IpAddr, port: u16) -> &'static str {
        if self.metadata.iter().any(|e| e.addr.ip() == addr && e.addr.port() == port) {
            "metadata"
        } else if self.dns_ports.contains(&port) {
            "dns"
        } else if self.cluster.iter().any(|c| c.contains(addr)) {
            "cluster"
        } else if self.aws_api.iter().any(|c| c.contains(addr)) {
            "aws_api"
        } else if addr.is_loopback() {
            "loopback"
        } else {
            "external"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_contains() {
        assert!(c("10.0.0.0/8").contains("10.200.1.1".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(c("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(!c("fd00::/8").contains("10.0.0.1".parse().unwrap()));
        assert!(c("192.168.1.7/32").contains("192.168.1.7".parse().unwrap()));
    }

    #[test]
    fn bad_cidrs_are_clear_errors() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "fd00::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn classes_most_specific_first() {
        let cl = Classifier {
            metadata: vec![
                "127.0.0.1:8080".parse().unwrap(),
                "imds=169.254.169.254:80".parse().unwrap(),
            ],
            dns_ports: vec![53],
            cluster: vec![c("10.96.0.0/12"), c("10.244.0.0/16")],
            aws_api: vec![c("52.94.0.0/16")],
        };
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(cl.classify(ip("169.254.169.254"), 80), "metadata");
        assert_eq!(cl.classify(ip("127.0.0.1"), 8080), "metadata");
        assert_eq!(cl.classify(ip("127.0.0.1"), 8081), "loopback");
        assert_eq!(cl.classify(ip("::1"), 22), "loopback");
        assert_eq!(cl.classify(ip("10.96.0.10"), 53), "dns");
        assert_eq!(cl.classify(ip("10.244.3.4"), 8080), "cluster");
        assert_eq!(cl.classify(ip("52.94.1.2"), 443), "aws_api");
        assert_eq!(cl.classify(ip("8.8.8.8"), 443), "external");
    }
}
