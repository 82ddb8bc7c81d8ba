//! Link-local packet budget: the types the egress program counts with and userspace reads.
//!
//! EC2 lets each network interface send 1024 packets a second to its link-local services (IMDS,
//! the Amazon DNS resolver, time sync, the ECS and Pod Identity agents) and silently drops the
//! rest. The kernel counts every packet to them per (cgroup, service), and per second node-wide.
use core::mem::size_of;

use crate::EndpointKey;

/// What a link-local packet is counted under (the `service` label). Configured metadata
/// endpoints count under their kind, so a loopback stand-in counts as the service it stands for.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Imds = 0,
    Ecs = 1,
    PodIdentity = 2,
    AmazonDns = 3,
    Ntp = 4,
    /// The rest of 169.254.0.0/16 and fd00:ec2::/64.
    Other = 5,
}

/// Number of [`Service`] values; indexes of [`SecondSlot::packets`].
pub const SERVICES: usize = 6;

impl Service {
    pub const ALL: [Service; SERVICES] =
        [Self::Imds, Self::Ecs, Self::PodIdentity, Self::AmazonDns, Self::Ntp, Self::Other];

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Imds),
            1 => Some(Self::Ecs),
            2 => Some(Self::PodIdentity),
            3 => Some(Self::AmazonDns),
            4 => Some(Self::Ntp),
            5 => Some(Self::Other),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Imds => "imds",
            Self::Ecs => "ecs",
            Self::PodIdentity => "pod_identity",
            Self::AmazonDns => "amazon_dns",
            Self::Ntp => "ntp",
            Self::Other => "other",
        }
    }
}

/// [`ServiceValue::service`] of an address that is served on the node itself (NodeLocal
/// DNSCache's 169.254.20.10): its packets never reach the interface's link-local services and are
/// not counted.
pub const SERVICE_NOT_COUNTED: u8 = 0xff;

/// Key of [`crate::names::MAP_LINKLOCAL_SERVICES`]: the destination as an [`EndpointKey`]; port 0
/// stands for every port of the address (the kernel looks up the exact port first).
pub type ServiceKey = EndpointKey;

/// Value of [`crate::names::MAP_LINKLOCAL_SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceValue {
    /// A [`Service`] as u8, or [`SERVICE_NOT_COUNTED`].
    pub service: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<ServiceValue>() == 4);

/// Entries of the service table: the defaults (a dozen) and every configured endpoint.
pub const SERVICE_TABLE_SIZE: u32 = 256;

/// Key of [`crate::names::MAP_LINKLOCAL_PACKETS`] (a per-CPU hash; the value is a `u64` count of
/// packets since the entry was created). Userspace deletes a cgroup's entries when the cgroup is
/// gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketsKey {
    pub cgroup_id: u64,
    /// A [`Service`] as u8.
    pub service: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<PacketsKey>() == 16);

impl PacketsKey {
    pub const fn new(cgroup_id: u64, service: u8) -> Self {
        Self { cgroup_id, service, _pad: [0; 7] }
    }
}

/// (cgroup, service) pairs counted at once: link-local traffic comes from few workloads, and a
/// cgroup has at most [`SERVICES`] entries.
pub const PACKETS_TABLE_SIZE: u32 = 16_384;

/// One CPU's packets in one second ([`crate::names::MAP_LINKLOCAL_SECONDS`], a per-CPU array of
/// [`SECOND_SLOTS`] indexed by `second % SECOND_SLOTS`). The kernel resets a slot when it first
/// counts in a new second there; userspace sums a completed second's slot over the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecondSlot {
    /// `bpf_ktime_get_ns() / 1e9` (CLOCK_MONOTONIC seconds) the counts belong to.
    pub second: u64,
    /// Packets by [`Service`]; two slots unused, so that the index can be masked.
    pub packets: [u32; 8],
}
const _: () = assert!(size_of::<SecondSlot>() == 40);
const _: () = assert!(SERVICES <= 8);

/// Seconds kept per CPU: userspace reads once a second, so it may be this many seconds late
/// before a second is overwritten (and lost, counted).
pub const SECOND_SLOTS: u32 = 8;
const _: () = assert!(SECOND_SLOTS.is_power_of_two());

/// The slot of a monotonic second.
pub const fn second_slot(second: u64) -> u32 {
    (second % SECOND_SLOTS as u64) as u32
}

pub const NS_PER_SECOND: u64 = 1_000_000_000;

/// IPv4 link-local prefix 169.254.0.0/16.
pub const V4_PREFIX: [u8; 2] = [169, 254];
/// The IPv6 prefix of the Nitro link-local services, fd00:ec2::/64.
pub const V6_PREFIX: [u8; 8] = [0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0];

/// `fd00:ec2::<last>`, where the Nitro services answer over IPv6.
pub const fn nitro_v6(last: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[2] = 0x0e;
    a[3] = 0xc2;
    a[14] = (last >> 8) as u8;
    a[15] = last as u8;
    a
}

/// The services at their documented addresses, any port. The NTP endpoints
/// ([`DEFAULT_NTP_ENDPOINTS`]), the VPC resolver (VPC base + 2), stand-ins and addresses served on
/// the node are configured on top of these by the agent.
pub const DEFAULT_SERVICES: [(ServiceKey, Service); 7] = [
    (EndpointKey::v4([169, 254, 169, 254], 0), Service::Imds),
    (EndpointKey::new(nitro_v6(0x254), 0), Service::Imds),
    (EndpointKey::v4([169, 254, 170, 2], 0), Service::Ecs),
    (EndpointKey::v4([169, 254, 170, 23], 0), Service::PodIdentity),
    (EndpointKey::new(nitro_v6(0x23), 0), Service::PodIdentity),
    (EndpointKey::v4([169, 254, 169, 253], 0), Service::AmazonDns),
    (EndpointKey::new(nitro_v6(0x253), 0), Service::AmazonDns),
];

/// The Amazon Time Sync Service, the default of `--ntp-endpoint`.
pub const DEFAULT_NTP_ENDPOINTS: [ServiceKey; 2] =
    [EndpointKey::v4([169, 254, 169, 123], 123), EndpointKey::new(nitro_v6(0x123), 123)];

/// NodeLocal DNSCache's address, the default of `--node-local-address`: link-local, but served on
/// the node (its own upstream queries are what reach the Amazon resolver, and are counted).
pub const DEFAULT_NODE_LOCAL: [ServiceKey; 1] = [EndpointKey::v4([169, 254, 20, 10], 0)];

/// Whether an address (IPv4 as `::ffff:a.b.c.d`) is in one of the link-local prefixes.
pub fn is_link_local(addr: &[u8; 16]) -> bool {
    let v4_mapped = addr[..10].iter().all(|&b| b == 0) && addr[10] == 0xff && addr[11] == 0xff;
    if v4_mapped { addr[12..14] == V4_PREFIX } else { addr[..8] == V6_PREFIX }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_round_trip_and_fit_the_slot() {
        for s in Service::ALL {
            assert_eq!(Service::from_u8(s as u8), Some(s));
            assert!((s as usize) < 8);
        }
        assert_eq!(Service::from_u8(SERVICE_NOT_COUNTED), None);
        assert_eq!(Service::from_u8(SERVICES as u8), None);
    }

    #[test]
    fn link_local_prefixes() {
        assert!(is_link_local(&EndpointKey::v4([169, 254, 169, 254], 0).addr));
        assert!(is_link_local(&EndpointKey::v4([169, 254, 0, 1], 0).addr));
        assert!(!is_link_local(&EndpointKey::v4([169, 253, 169, 254], 0).addr));
        assert!(!is_link_local(&EndpointKey::v4([127, 0, 0, 1], 0).addr));
        let mut v6 = [0u8; 16];
        v6[..8].copy_from_slice(&V6_PREFIX);
        v6[15] = 0x54;
        assert!(is_link_local(&v6));
        v6[7] = 1; // fd00:ec2:0:1::54 is outside the /64
        assert!(!is_link_local(&v6));
        // ::ffff:169.254.x.y written as IPv6 is the IPv4 form, and ::a9fe:... is not.
        let mut compat = [0u8; 16];
        compat[12] = 169;
        compat[13] = 254;
        assert!(!is_link_local(&compat));
    }

    #[test]
    fn defaults_are_link_local_and_distinct() {
        let keys: Vec<_> = DEFAULT_SERVICES
            .iter()
            .map(|(k, _)| *k)
            .chain(DEFAULT_NTP_ENDPOINTS)
            .chain(DEFAULT_NODE_LOCAL)
            .collect();
        for k in &keys {
            assert!(is_link_local(&k.addr), "{k:?}");
        }
        for (i, a) in keys.iter().enumerate() {
            assert!(!keys[i + 1..].contains(a), "{a:?} twice");
        }
        assert_eq!(
            nitro_v6(0x254),
            [0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54]
        );
    }

    #[test]
    fn second_slots_wrap() {
        assert_eq!(second_slot(0), 0);
        assert_eq!(second_slot(SECOND_SLOTS as u64 + 3), 3);
    }
}
