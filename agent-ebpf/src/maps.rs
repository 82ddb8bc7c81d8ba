//! The maps, named as in `agent_common::names` (a userspace test checks the built object).
use agent_common::{
    CGROUP_PARENTS_TABLE_SIZE, ENDPOINT_TABLE_SIZE, EVENT_RING_BYTES, EndpointKey, EndpointValue,
    FLOW_TABLE_SIZE, Flow, PORT_WORDS, SCRATCH_LEN, counter,
    dns::{DnsPendingSlot, DnsStats, DnsStatsKey, DnsStatsSlot},
    linklocal::{PacketsKey, SecondSlot, ServiceKey, ServiceValue},
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};

/// The agent's own descriptor for the scratch map is write-only: it holds payload bytes
/// (possibly credential secrets) while a segment is parsed, and the agent never reads them.
/// (Current kernels apply this to the creating descriptor only; what keeps secrets from lingering
/// is that every parser wipes the buffer as soon as it is done, see `scratch::wipe_scratch`.)
const BPF_F_WRONLY: u32 = 1 << 4;

/// Every port's flags, 4 bits each (see `agent_common::PORT_WORDS`).
#[map]
pub static CW_PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);

#[map]
pub static CW_ENDPOINTS: HashMap<EndpointKey, EndpointValue> =
    HashMap::with_max_entries(ENDPOINT_TABLE_SIZE, 0);

#[map]
pub static CW_FLOWS: LruHashMap<u64, Flow> = LruHashMap::with_max_entries(FLOW_TABLE_SIZE, 0);

#[map]
pub static CW_EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

#[map]
pub static CW_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
pub static CW_SCRATCH: PerCpuArray<[u8; SCRATCH_LEN]> =
    PerCpuArray::with_max_entries(1, BPF_F_WRONLY);

/// Array map flag: userspace may mmap the values (it frees timed-out slots with atomics there).
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// An array, not a hash: claiming and freeing a slot are plain stores, where a hash insert and
/// delete were a large share of a query's time in the kernel (docs/benchmarks.md, "Figures behind
/// design choices").
#[map]
pub static CW_DNS_PENDING: Array<DnsPendingSlot> =
    Array::with_max_entries(agent_common::dns::PENDING_TABLE_SIZE, BPF_F_MMAPABLE);

#[map]
pub static CW_DNS_STATS: HashMap<DnsStatsKey, DnsStats> =
    HashMap::with_max_entries(agent_common::dns::STATS_TABLE_SIZE, 0);

#[map]
pub static CW_DNS_STATS_CPU: PerCpuArray<DnsStatsSlot> =
    PerCpuArray::with_max_entries(agent_common::dns::STATS_CACHE_SLOTS, 0);

#[map]
pub static CW_CONFIG: Array<u32> = Array::with_max_entries(agent_common::names::config::COUNT, 0);

#[map]
pub static CW_DNS_EVENTS: RingBuf = RingBuf::with_byte_size(agent_common::dns::EVENT_RING_BYTES, 0);

#[map]
pub static CW_TCP_CONNECTS: Array<agent_common::tcp::PendingConnect> =
    Array::with_max_entries(agent_common::tcp::CONNECT_TABLE_SIZE, 0);

#[map]
pub static CW_TCP_LISTENERS: LruHashMap<agent_common::tcp::ListenerKey, u64> =
    LruHashMap::with_max_entries(agent_common::tcp::LISTENER_TABLE_SIZE, 0);

#[map]
pub static CW_TCP_LISTENER_CPU: PerCpuArray<agent_common::tcp::ListenerCache> =
    PerCpuArray::with_max_entries(1, 0);

#[map]
pub static CW_TCP_LISTEN_GEN: Array<u64> = Array::with_max_entries(1, 0);

#[map]
pub static CW_TCP_EVENTS: RingBuf = RingBuf::with_byte_size(agent_common::tcp::EVENT_RING_BYTES, 0);

#[map]
pub static CW_TCP_STATS: HashMap<agent_common::tcp::TcpStatsKey, agent_common::tcp::TcpStats> =
    HashMap::with_max_entries(agent_common::tcp::STATS_TABLE_SIZE, 0);

#[map]
pub static CW_TCP_STATS_CPU: PerCpuArray<agent_common::tcp::TcpStatsSlot> =
    PerCpuArray::with_max_entries(agent_common::tcp::STATS_CACHE_SLOTS, 0);

/// Address (IPv6, IPv4-mapped) → destination class.
#[map]
pub static CW_TCP_CIDRS: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(agent_common::tcp::CIDR_TABLE_SIZE, 0);

#[map]
pub static CW_LINKLOCAL_SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(agent_common::linklocal::SERVICE_TABLE_SIZE, 0);

/// Per-CPU: a packet is one plain add on its CPU's copy, no atomics, no shared cache line.
#[map]
pub static CW_LINKLOCAL_PACKETS: PerCpuHashMap<PacketsKey, u64> =
    PerCpuHashMap::with_max_entries(agent_common::linklocal::PACKETS_TABLE_SIZE, 0);

#[map]
pub static CW_LINKLOCAL_SECONDS: PerCpuArray<SecondSlot> =
    PerCpuArray::with_max_entries(agent_common::linklocal::SECOND_SLOTS, 0);

/// Ring submit flag BPF_RB_NO_WAKEUP: userspace reads the rings on a timer (every 25 ms), so
/// waking it per record would only cost an irq_work and a wakeup on every event's path.
pub const NO_WAKEUP: u64 = 1;

/// A port's flags (`CW_PORTS`, an array the verifier inlines; 0 when none).
#[inline(always)]
pub fn port_flags(port: u16) -> u8 {
    match CW_PORTS.get(agent_common::port_word(port)) {
        Some(word) => agent_common::port_flags(*word, port),
        None => 0,
    }
}

/// A value userspace set in `CW_CONFIG` (0 when unset).
#[inline(always)]
pub fn config(index: u32) -> u32 {
    CW_CONFIG.get(index).copied().unwrap_or(0)
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = CW_COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer, so a plain add is exact (no atomics on this target).
        unsafe { *p += 1 };
    }
}

#[map]
pub static CW_CGROUP_PARENTS: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(CGROUP_PARENTS_TABLE_SIZE, 0);
