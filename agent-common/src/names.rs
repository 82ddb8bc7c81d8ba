//! Program and map names. The kernel object must contain exactly these (a test checks it);
//! userspace looks them up by these constants only. (Programs that are not shipped, such as the
//! benchmarks' empty baselines, live in unshipped-ebpf and are named in loadgen.)

pub const PROG_SKB_EGRESS: &str = "cw_skb_egress";
pub const PROG_SKB_INGRESS: &str = "cw_skb_ingress";
pub const PROG_CONNECT4: &str = "cw_connect4";
pub const PROG_CONNECT6: &str = "cw_connect6";
pub const PROG_SOCK_OPS: &str = "cw_sock_ops";
pub const PROGRAMS: &[&str] =
    &[PROG_SKB_EGRESS, PROG_SKB_INGRESS, PROG_CONNECT4, PROG_CONNECT6, PROG_SOCK_OPS];

/// `Array<u64>`: every port's flags ([`crate::PORT_FLAG_METADATA`] etc.), 4 bits each, 16 ports
/// to an entry ([`crate::port_word`]). The fast-path filter.
pub const MAP_PORTS: &str = "CW_PORTS";
/// `HashMap<EndpointKey, EndpointValue>`: the metadata endpoints.
pub const MAP_ENDPOINTS: &str = "CW_ENDPOINTS";
/// `LruHashMap<u64 socket cookie, Flow>`.
pub const MAP_FLOWS: &str = "CW_FLOWS";
/// `RingBuf` of `MetadataEvent`.
pub const MAP_EVENTS: &str = "CW_EVENTS";
/// `Array<DnsPendingSlot>` (mmapable, `BPF_F_MMAPABLE`): queries waiting for their response, in
/// buckets of `dns::PENDING_WAYS` slots. A full bucket refuses a query (counted) rather than
/// silently forgetting one; userspace frees the slots of queries that time out (and counts them)
/// through its mapping. See `dns::DnsPendingSlot`.
pub const MAP_DNS_PENDING: &str = "CW_DNS_PENDING";
/// `HashMap<DnsStatsKey, DnsStats>`: answered queries counted in the kernel (atomic adds), read by
/// userspace once a second.
pub const MAP_DNS_STATS: &str = "CW_DNS_STATS";
/// `PerCpuArray<DnsStatsSlot>`: each CPU's cache of statistics entries (plain adds), read by
/// userspace with `MAP_DNS_STATS`. See `dns::DnsStatsSlot`.
pub const MAP_DNS_STATS_CPU: &str = "CW_DNS_STATS_CPU";
/// `Array<u32>` indexed by `config::*`: runtime switches set by userspace.
pub const MAP_CONFIG: &str = "CW_CONFIG";
/// `RingBuf` of `DnsEvent`.
pub const MAP_DNS_EVENTS: &str = "CW_DNS_EVENTS";
/// `HashMap<TcpStatsKey, TcpStats>`: connects by (cgroup, destination class) and accepts per
/// cgroup, counted in the kernel (atomic adds) and read by userspace once a second.
pub const MAP_TCP_STATS: &str = "CW_TCP_STATS";
/// `PerCpuArray<TcpStatsSlot>`: each CPU's cache in front of `MAP_TCP_STATS` (plain adds). See
/// `stats`.
pub const MAP_TCP_STATS_CPU: &str = "CW_TCP_STATS_CPU";
/// `LpmTrie<[u8; 16] address, u8 class>`: the configured cluster and AWS API ranges (see
/// `tcp::CIDR_TABLE_SIZE`).
pub const MAP_TCP_CIDRS: &str = "CW_TCP_CIDRS";
/// `Array<PendingConnect>`, direct-mapped by socket cookie (see `tcp::PendingConnect`).
pub const MAP_TCP_CONNECTS: &str = "CW_TCP_CONNECTS";
/// `LruHashMap<ListenerKey, u64 cgroup id>`.
pub const MAP_TCP_LISTENERS: &str = "CW_TCP_LISTENERS";
/// `PerCpuArray<ListenerCache>` (one entry): each CPU's last accept attribution.
pub const MAP_TCP_LISTENER_CPU: &str = "CW_TCP_LISTENER_CPU";
/// `Array<u64>` (one entry): the listener table's generation, bumped by every listen() (see
/// `tcp::ListenerCache`).
pub const MAP_TCP_LISTEN_GEN: &str = "CW_TCP_LISTEN_GEN";
/// `RingBuf` of `TcpEvent` (new keys only).
pub const MAP_TCP_EVENTS: &str = "CW_TCP_EVENTS";
/// `PerCpuArray<u64>` indexed by `counter::*`.
pub const MAP_COUNTERS: &str = "CW_COUNTERS";
/// `PerCpuArray<[u8; SCRATCH_LEN]>`: payload bytes copied for parsing, never exported.
pub const MAP_SCRATCH: &str = "CW_SCRATCH";
/// `HashMap<linklocal::ServiceKey, linklocal::ServiceValue>`: which link-local service a
/// destination (address and port, or address and port 0 for any port) is, set by userspace.
pub const MAP_LINKLOCAL_SERVICES: &str = "CW_LINKLOCAL_SERVICES";
/// `PerCpuHashMap<linklocal::PacketsKey, u64>`: packets to link-local services per (cgroup,
/// service), read by userspace at scrape time, pruned when a cgroup vanishes.
pub const MAP_LINKLOCAL_PACKETS: &str = "CW_LINKLOCAL_PACKETS";
/// `PerCpuArray<linklocal::SecondSlot>`: each CPU's link-local packets per second, by service.
pub const MAP_LINKLOCAL_SECONDS: &str = "CW_LINKLOCAL_SECONDS";
/// `LruHashMap<u64 cgroup id, u64 parent cgroup id>`, filled by the kernel for each cgroup that
/// gets DNS answers (at its first ones) or sends metadata requests, while the cgroup exists:
/// userspace names a cgroup removed before it could look it up (a Job container that resolved a
/// name or fetched credentials once and exited) by its parent, the pod's cgroup.
pub const MAP_CGROUP_PARENTS: &str = "CW_CGROUP_PARENTS";
pub const MAPS: &[&str] = &[
    MAP_PORTS,
    MAP_ENDPOINTS,
    MAP_FLOWS,
    MAP_EVENTS,
    MAP_COUNTERS,
    MAP_SCRATCH,
    MAP_DNS_PENDING,
    MAP_DNS_STATS,
    MAP_DNS_STATS_CPU,
    MAP_DNS_EVENTS,
    MAP_CONFIG,
    MAP_TCP_CONNECTS,
    MAP_TCP_LISTENERS,
    MAP_TCP_LISTENER_CPU,
    MAP_TCP_LISTEN_GEN,
    MAP_TCP_EVENTS,
    MAP_TCP_STATS,
    MAP_TCP_STATS_CPU,
    MAP_TCP_CIDRS,
    MAP_LINKLOCAL_SERVICES,
    MAP_LINKLOCAL_PACKETS,
    MAP_LINKLOCAL_SECONDS,
    MAP_CGROUP_PARENTS,
];

/// Load-time switch (a `.rodata` global, 1 as built): whether `cw_sock_ops` may call
/// `bpf_get_current_cgroup_id`, to attribute a listening socket to the cgroup that called
/// `listen()` (and so count accepted connections per pod). Linux 6.1 does not offer that helper
/// to `sock_ops` programs; the agent then loads with 0, the verifier sees the call as dead code,
/// and accepts are not counted (`credwatch_kernel_feature{feature="accept_attribution"}` 0).
pub const GLOBAL_SOCK_OPS_CGROUP: &str = "CW_SOCK_OPS_CGROUP";

/// Indexes of [`MAP_CONFIG`].
pub mod config {
    /// 1: send a DNS event (with the question name) for every answered query, for
    /// `--dns-top-names`; 0 (default): only for NXDOMAIN answers, which the search-list analysis
    /// needs.
    pub const DNS_ALL_NAMES: u32 = 0;
    /// The DNS timeout in milliseconds: an answer later than this is not counted as answered
    /// (userspace counts its query as a timeout). 0: no limit.
    pub const DNS_TIMEOUT_MS: u32 = 1;
    /// Advanced by userspace after each read of the DNS statistics (see `stats`).
    pub const DNS_STATS_EPOCH: u32 = 2;
    /// `--metadata-timeout` in milliseconds: a metadata request with no response status line by
    /// then is counted unanswered by userspace, so the kernel neither reports nor matches a
    /// later response. 0: no limit.
    pub const METADATA_TIMEOUT_MS: u32 = 3;
    /// Advanced by userspace after each read of the TCP statistics (see `stats`).
    pub const TCP_STATS_EPOCH: u32 = 4;
    /// Entries in `MAP_TCP_CIDRS`; 0: connect4 skips the range lookup.
    pub const TCP_CIDRS: u32 = 5;
    pub const COUNT: u32 = 6;
}
