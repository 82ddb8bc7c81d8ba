//! Link-local command-line flags (part of `credwatch run`): which destinations count as which
//! service besides the documented addresses (`services`).
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct LinkLocalArgs {
    /// The VPC's DNS resolver (the VPC base address + 2), `ADDR` or `ADDR:PORT` (port 53 if
    /// none): packets to it count as service="amazon_dns" besides 169.254.169.253 and
    /// fd00:ec2::253. Repeatable; in the environment, comma-separated.
    #[arg(long = "vpc-resolver", env = "CREDWATCH_VPC_RESOLVERS", value_delimiter = ',')]
    pub vpc_resolvers: Vec<ServiceAddr>,

    /// Time sync endpoint, `ADDR:PORT` (IPv6 as `[ADDR]:PORT`): packets to it count as
    /// service="ntp". Repeatable; giving it replaces the default (the Amazon Time Sync Service).
    #[arg(
        long = "ntp-endpoint",
        env = "CREDWATCH_NTP_ENDPOINTS",
        value_delimiter = ',',
        default_values = ["169.254.169.123:123", "[fd00:ec2::123]:123"]
    )]
    pub ntp_endpoints: Vec<SocketAddr>,

    /// Link-local address served on the node itself, whose packets never reach the
    /// interface's link-local services and are not counted (NodeLocal DNSCache's by default).
    /// Repeatable; giving it replaces the default.
    #[arg(
        long = "node-local-address",
        env = "CREDWATCH_NODE_LOCAL_ADDRESSES",
        value_delimiter = ',',
        default_values = ["169.254.20.10"]
    )]
    pub node_local: Vec<IpAddr>,
}

impl Default for LinkLocalArgs {
    fn default() -> Self {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: LinkLocalArgs,
        }
        Wrap::parse_from(["credwatch"]).args
    }
}

/// `ADDR` or `ADDR:PORT` (IPv6 as `[ADDR]:PORT`), port 53 when none is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceAddr(pub SocketAddr);

impl FromStr for ServiceAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self(addr));
        }
        let ip = s.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<IpAddr>()
            .map(|ip| Self(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT (IPv6 as [ADDR]:PORT)"))
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_addr_forms() {
        assert_eq!("10.0.0.2".parse::<ServiceAddr>().unwrap().0, "10.0.0.2:53".parse().unwrap());
        assert_eq!("10.0.0.2:5300".parse::<ServiceAddr>().unwrap().0.port(), 5300);
        assert_eq!("[fd00::2]".parse::<ServiceAddr>().unwrap().0, "[fd00::2]:53".parse().unwrap());
        assert_eq!("fd00::2".parse::<ServiceAddr>().unwrap().0.port(), 53);
        assert!("resolver.local".parse::<ServiceAddr>().is_err());
    }
}
