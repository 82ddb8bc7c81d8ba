//! Destination classes: `metadata`, `dns`, `cluster`, `aws_api`, `loopback`, `external`. Raw
//! addresses never become labels. The kernel decides the class at connect() time
//! (agent-ebpf/src/tcp.rs, `class_of`) from the metadata endpoints, the DNS ports and the range
//! table this module computes ([`Classifier::cidr_table`]); [`Classifier::classify`] is the same
//! decision written plainly, the reference the tests hold the kernel to.
use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr};

use agent_common::tcp::{
    CLASS_ACCEPTED, CLASS_AWS_API, CLASS_CLUSTER, CLASS_DNS, CLASS_EXTERNAL, CLASS_LOOPBACK,
    CLASS_METADATA,
};

use crate::endpoints::EndpointSpec;

/// The `destination` label of a class.
pub fn class_label(class: u8) -> &'static str {
    match class {
        CLASS_METADATA => "metadata",
        CLASS_DNS => "dns",
        CLASS_CLUSTER => "cluster",
        CLASS_AWS_API => "aws_api",
        CLASS_LOOPBACK => "loopback",
        CLASS_ACCEPTED => "accepted",
        _ => "external",
    }
}

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

/// What decides a destination's class. The kernel gets the endpoints and DNS ports through its
/// port and endpoint tables (crate::kernel) and the ranges through [`Classifier::cidr_table`].
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
    /// proxy) is `metadata`, `cluster` or `aws_api`, not `loopback`. An IPv4-mapped IPv6 address
    /// is its IPv4 address.
    pub fn classify(&self, addr: IpAddr, port: u16) -> &'static str {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
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

    /// The kernel's range table (`CW_TCP_CIDRS`, an LPM trie keyed by IPv6 address, IPv4 as
    /// IPv4-mapped): (prefix length, network, class), such that the longest prefix matching an
    /// address gives what [`Self::classify`] checks first among the ranges (cluster before AWS
    /// API, whatever their lengths). A range's value is the first class of every configured range
    /// of its family that contains it (those are the ranges a longer match is nested in). IPv6
    /// ranges never match IPv4-mapped addresses, as in `classify`: one that would is hidden from
    /// them by `::ffff:0:0/96` → [`CLASS_EXTERNAL`] (no range class), and one inside it is left
    /// out.
    pub fn cidr_table(&self) -> Vec<(u32, [u8; 16], u8)> {
        let ranges: Vec<(Range, u8)> = self
            .cluster
            .iter()
            .map(|c| (c, CLASS_CLUSTER))
            .chain(self.aws_api.iter().map(|c| (c, CLASS_AWS_API)))
            .filter_map(|(c, class)| Range::of(c).map(|r| (r, class)))
            .collect();
        let mut table = BTreeMap::new();
        if ranges.iter().any(|(r, _)| !r.v4 && r.contains(&Range::MAPPED)) {
            table.insert((Range::MAPPED.prefix, Range::MAPPED.net), CLASS_EXTERNAL);
        }
        for (range, _) in &ranges {
            // Classes are numbered in classify's order among the ranges: cluster first.
            let first = ranges
                .iter()
                .filter(|(outer, _)| outer.v4 == range.v4 && outer.contains(range))
                .map(|&(_, class)| class)
                .min()
                .unwrap_or(CLASS_EXTERNAL);
            table.insert((range.prefix, range.net), first);
        }
        table.into_iter().map(|((prefix, net), class)| (prefix, net.to_be_bytes(), class)).collect()
    }
}

/// A configured range in the kernel's address space (IPv6, IPv4 as IPv4-mapped).
#[derive(Clone, Copy, Debug)]
struct Range {
    net: u128,
    prefix: u32,
    v4: bool,
}

impl Range {
    /// `::ffff:0:0/96`, the IPv4-mapped addresses.
    const MAPPED: Range = Range { net: 0xffff << 32, prefix: 96, v4: false };

    /// None for an IPv6 range inside `::ffff:0:0/96`, which no address classify sees is in.
    fn of(c: &Cidr) -> Option<Self> {
        let (addr, prefix, v4) = match c.addr {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped(), u32::from(c.prefix) + 96, true),
            IpAddr::V6(v6) => (v6, u32::from(c.prefix), false),
        };
        let range = Range { net: u128::from(addr) & mask(prefix), prefix, v4 };
        (v4 || !Range::MAPPED.contains(&range)).then_some(range)
    }

    fn contains(&self, inner: &Range) -> bool {
        self.prefix <= inner.prefix && inner.net & mask(self.prefix) == self.net
    }
}

fn mask(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
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
        assert_eq!(cl.classify(ip("::ffff:127.0.0.1"), 8080), "metadata");
        assert_eq!(cl.classify(ip("::ffff:10.244.3.4"), 8080), "cluster");
    }

    /// What the kernel does with the range table: the longest matching prefix's class, then
    /// loopback or external (agent-ebpf/src/tcp.rs, `class_of`, after the endpoint and DNS port
    /// checks).
    fn kernel_class(table: &[(u32, [u8; 16], u8)], addr: IpAddr) -> &'static str {
        let addr = match addr {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let best = table
            .iter()
            .filter(|(prefix, net, _)| addr & mask(*prefix) == u128::from_be_bytes(*net))
            .max_by_key(|(prefix, _, _)| *prefix)
            .map_or(CLASS_EXTERNAL, |&(_, _, class)| class);
        // ::ffff:127.0.0.0/104 (the IPv4-mapped 127/8) or ::1.
        let loopback = addr >> 24 == 0x00ff_ff7f || addr == 1;
        match best {
            CLASS_EXTERNAL if loopback => "loopback",
            class => class_label(class),
        }
    }

    fn ranges(cluster: &[&str], aws_api: &[&str]) -> Classifier {
        Classifier {
            cluster: cluster.iter().map(|s| c(s)).collect(),
            aws_api: aws_api.iter().map(|s| c(s)).collect(),
            ..Classifier::default()
        }
    }

    #[test]
    fn the_range_table_gives_what_classify_gives() {
        let addrs = [
            "10.0.0.1",
            "10.1.2.3",
            "10.1.255.255",
            "10.2.0.1",
            "11.0.0.1",
            "127.0.0.1",
            "127.9.9.9",
            "52.94.1.2",
            "52.95.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::2",
            "fd00::1",
            "fd00:1::1",
            "fd01::1",
            "2001:db8::1",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
            "::10.1.2.3",
            "64:ff9b::a01:203",
        ];
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["10.0.0.0/8"], &["52.94.0.0/16"]),
            // An AWS range inside a cluster range, and the reverse: cluster wins both ways.
            (&["10.0.0.0/8"], &["10.1.0.0/16"]),
            (&["10.1.0.0/16"], &["10.0.0.0/8"]),
            (&["10.1.2.3/32", "10.0.0.0/8"], &["10.1.0.0/16", "10.1.2.0/24"]),
            // Configured ranges on loopback win over loopback.
            (&["127.0.0.0/8"], &[]),
            (&[], &["127.0.0.1/32", "::1/128"]),
            // IPv6 ranges that cover the IPv4-mapped block must not match IPv4 addresses.
            (&["::/0"], &[]),
            (&["::/0"], &["10.0.0.0/8"]),
            (&["0.0.0.0/0"], &["::/0"]),
            (&["::/64"], &["0.0.0.0/0", "fd00::/8"]),
            (&["::ffff:10.0.0.0/104"], &[]),
            (&["fd00::/16", "10.0.0.0/8"], &["fd00::/8", "fd00:1::/32"]),
            (&["10.1.2.3/8"], &[]), // host bits set
        ];
        for (cluster, aws_api) in cases {
            let cl = ranges(cluster, aws_api);
            let table = cl.cidr_table();
            for a in addrs {
                let addr: IpAddr = a.parse().unwrap();
                assert_eq!(
                    kernel_class(&table, addr),
                    cl.classify(addr, 443),
                    "{a} with cluster {cluster:?} aws_api {aws_api:?}: {table:?}"
                );
            }
        }
    }

    #[test]
    fn the_range_table_holds_each_range_once() {
        let cl = ranges(&["10.0.0.0/8", "10.0.0.0/8"], &["10.0.0.0/8", "fd00::/8"]);
        let table = cl.cidr_table();
        let mut v4 = [0u8; 16];
        v4[10..12].copy_from_slice(&[0xff, 0xff]);
        v4[12] = 10;
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        assert_eq!(table, vec![(8, v6, CLASS_AWS_API), (104, v4, CLASS_CLUSTER)]);
    }
}
