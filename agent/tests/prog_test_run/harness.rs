//! Loads the built kernel object once, configures it as `kernel.rs` does, and runs the
//! `cgroup_skb` programs on crafted packets with `BPF_PROG_TEST_RUN`: no socket, no traffic.
//!
//! Kernel facts this is built around (net/bpf/test_run.c, checked on 6.18):
//! - `data_in` starts with a 14-byte Ethernet header that the kernel pulls, so the program sees
//!   the IP header first, as in a real `cgroup_skb` run.
//! - Every run allocates a fresh dummy socket: `bpf_get_socket_cookie` returns a new cookie each
//!   time, and `bpf_skb_cgroup_id` is the cgroup of the process running the test.
//!
//! The programs key a connection's state by socket cookie, so a request and its response would
//! look like two sockets. Before each run the harness learns the next cookie with a probe (a valid
//! DNS query, whose pending entry reveals the cookie it got; cookies are handed out in order on a
//! CPU) and moves the connection's state (flow, pending queries) to it. A second probe after the
//! run proves the run got that cookie; if anything else on the machine took one in between, the
//! run is reported as [`Miss`] and the whole case is retried from a clean state.
use std::{
    collections::BTreeMap,
    net::{Ipv6Addr, SocketAddr},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::{Mutex, MutexGuard, OnceLock},
};

use agent::{
    endpoints::EndpointSpec,
    features::linklocal::{
        args::{LinkLocalArgs, ServiceAddr},
        services,
    },
};
use agent_common::{
    EndpointKey, EndpointKind, EndpointValue, Flow, MetadataEvent, PORT_FLAG_DNS,
    PORT_FLAG_LINKLOCAL, PORT_FLAG_METADATA, SCRATCH_LEN, counter,
    dns::{
        DnsEvent, DnsPendingSlot, DnsStats, DnsStatsKey, DnsStatsSlot, PENDING_TABLE_SIZE,
        PENDING_WAYS, STATS_CACHE_SLOTS, pending_bucket,
    },
    linklocal::{self, PacketsKey, SecondSlot, ServiceKey, ServiceValue},
    names, port_word, with_port_flag,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf},
    programs::{CgroupSkb, TestRun as _, TestRunOptions},
};

use crate::{can_run, packets};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// The metadata endpoints the tests configure (loopback only; test runs send nothing anywhere).
pub const IMDS_PORT: u16 = 8080;
pub const DNS_PORT: u16 = 53;
/// Transaction id of the cookie probe; test cases never use it.
const PROBE_ID: u16 = 0xbeef;
const ATTEMPTS: usize = 8;
/// Table entries at or above this cookie are fillers a test inserted; the harness leaves them.
pub const FILLER_COOKIE: u64 = 1 << 63;

/// The run's cookie could not be confirmed: something else took a socket cookie in between.
#[derive(Debug)]
pub struct Miss;

/// What one run did: the counters it bumped (nonzero only) and the events it sent.
#[derive(Default)]
pub struct Outcome {
    pub counters: BTreeMap<u32, u64>,
    pub events: Vec<MetadataEvent>,
    pub dns_events: Vec<DnsEvent>,
}

impl Outcome {
    /// Nothing at all: no counter, no event.
    pub fn assert_nothing(&self, what: &str) {
        assert!(self.counters.is_empty(), "{what}: counters {:?}", self.named_counters());
        assert!(self.events.is_empty(), "{what}: {} metadata events", self.events.len());
        assert!(self.dns_events.is_empty(), "{what}: {} DNS events", self.dns_events.len());
    }

    /// Exactly one counter, bumped once, and no event.
    pub fn assert_only_counter(&self, index: u32, what: &str) {
        assert_eq!(
            self.named_counters(),
            BTreeMap::from([(counter_name(index), 1)]),
            "{what}: counters"
        );
        assert!(self.events.is_empty(), "{what}: {} metadata events", self.events.len());
        assert!(self.dns_events.is_empty(), "{what}: {} DNS events", self.dns_events.len());
    }

    pub fn named_counters(&self) -> BTreeMap<&'static str, u64> {
        self.counters.iter().map(|(&i, &v)| (counter_name(i), v)).collect()
    }
}

pub fn counter_name(index: u32) -> &'static str {
    use counter::*;
    match index {
        LOST_RINGBUF_FULL => "LOST_RINGBUF_FULL",
        LOST_FLOW_TABLE => "LOST_FLOW_TABLE",
        REJECT_NOT_HTTP => "REJECT_NOT_HTTP",
        REJECT_REQUEST_LINE => "REJECT_REQUEST_LINE",
        REJECT_BAD_ROLE => "REJECT_BAD_ROLE",
        REJECT_NO_REQUEST => "REJECT_NO_REQUEST",
        REJECT_BAD_STATUS => "REJECT_BAD_STATUS",
        REJECT_NO_EXPIRATION => "REJECT_NO_EXPIRATION",
        REJECT_BAD_TIMESTAMP => "REJECT_BAD_TIMESTAMP",
        REJECT_OUT_OF_ORDER => "REJECT_OUT_OF_ORDER",
        REJECT_SCAN_LIMIT => "REJECT_SCAN_LIMIT",
        RETRANSMIT => "RETRANSMIT",
        LOST_DNS_RINGBUF_FULL => "LOST_DNS_RINGBUF_FULL",
        LOST_DNS_PENDING_TABLE => "LOST_DNS_PENDING_TABLE",
        DNS_MALFORMED_HEADER => "DNS_MALFORMED_HEADER",
        DNS_MALFORMED_QDCOUNT => "DNS_MALFORMED_QDCOUNT",
        DNS_MALFORMED_LABEL => "DNS_MALFORMED_LABEL",
        DNS_MALFORMED_NAME => "DNS_MALFORMED_NAME",
        DNS_MALFORMED_POINTER => "DNS_MALFORMED_POINTER",
        DNS_UNMATCHED_RESPONSE => "DNS_UNMATCHED_RESPONSE",
        LOST_TCP_RINGBUF_FULL => "LOST_TCP_RINGBUF_FULL",
        LOST_TCP_TABLE => "LOST_TCP_TABLE",
        LOST_DNS_STATS_TABLE => "LOST_DNS_STATS_TABLE",
        REJECT_PIPELINED => "REJECT_PIPELINED",
        REJECT_LATE_RESPONSE => "REJECT_LATE_RESPONSE",
        LOST_TCP_STATS_TABLE => "LOST_TCP_STATS_TABLE",
        LOST_LINKLOCAL_TABLE => "LOST_LINKLOCAL_TABLE",
        _ => "unknown",
    }
}

pub struct Kernel {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    dns_events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    /// CW_SCRATCH through a second descriptor: the loader's own is write-only (BPF_F_WRONLY),
    /// one obtained by map id is not, which lets the tests prove the buffer is wiped.
    scratch: PerCpuArray<MapData, [u8; SCRATCH_LEN]>,
    /// CW_DNS_PENDING mapped into this process, as the agent maps it (16,384 lookups through
    /// the bpf syscall for every probe would make each case slower than its latency buckets).
    pending: PendingMap,
    /// The cookie the last probe got.
    last_cookie: u64,
    cpus: usize,
    /// The cgroup v2 id of this process: what `bpf_skb_cgroup_id` gives in a test run.
    pub cgroup_id: u64,
    /// Instructions the verifier processed for each program (its limit is 1,000,000); None
    /// before Linux 5.16, which does not report it.
    pub verified: Vec<(&'static str, Option<u32>)>,
    /// Whether a test run gives the programs the packet (see [`kernel`]).
    pub packet_access: bool,
}

/// The loaded programs, shared by every test in this binary and used by one test at a time.
/// None when the tests cannot run here ([`can_run`]): without root (a failure unless skips are
/// allowed), or on a kernel whose `BPF_PROG_TEST_RUN` gives `cgroup_skb` programs no packet
/// pointers (a failure from 6.14 on, where it should; said and passed on older kernels).
pub fn kernel() -> Option<MutexGuard<'static, Kernel>> {
    let kernel = loaded()?;
    if !kernel.packet_access {
        drop(kernel);
        // Linux 5.10 to 6.13 leave data_end at 0 in a test run, so every packet looks empty to
        // the programs; real traffic is not affected (scripts/vm-kernel-test.sh checks that).
        let release = can_run::kernel_release();
        let (major, minor) = can_run::PACKET_DATA_SINCE;
        if can_run::kernel_at_least(can_run::PACKET_DATA_SINCE) {
            can_run::cannot_run(&format!(
                "Linux {release}'s BPF_PROG_TEST_RUN gives cgroup_skb programs no packet data \
                 (data_end is 0), which every kernel from {major}.{minor} on does"
            ));
        } else {
            can_run::predates(&format!(
                "Linux {release}'s BPF_PROG_TEST_RUN gives cgroup_skb programs no packet data \
                 (data_end is 0; kernels do from {major}.{minor} on)"
            ));
        }
        return None;
    }
    Some(kernel)
}

/// The loaded programs, for the tests that do not run them. None only without root, where the
/// calling test fails unless skips are allowed ([`can_run::cannot_run`]).
pub fn loaded() -> Option<MutexGuard<'static, Kernel>> {
    static KERNEL: OnceLock<Result<Mutex<Kernel>, String>> = OnceLock::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        can_run::cannot_run("loading eBPF programs for BPF_PROG_TEST_RUN needs root");
        return None;
    }
    // Loaded once; a load failure fails every test with the same message, without retrying.
    let kernel = KERNEL.get_or_init(|| Kernel::load().map(Mutex::new));
    let kernel = kernel.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let guard = kernel.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    pin_to_current_cpu();
    Some(guard)
}

/// Socket cookies are handed out from per-CPU batches: keep this thread on one CPU so that
/// consecutive runs get consecutive cookies.
fn pin_to_current_cpu() {
    // SAFETY: plain syscalls on this thread with a zero-initialised, valid cpu_set_t.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

impl Kernel {
    fn load() -> Result<Self, String> {
        let mut ebpf =
            EbpfLoader::new().load(OBJECT).map_err(|e| format!("loading the eBPF object: {e}"))?;
        configure(&mut ebpf);
        let take = |ebpf: &mut Ebpf, name| ebpf.take_map(name).expect(name);
        let events = RingBuf::try_from(take(&mut ebpf, names::MAP_EVENTS)).unwrap();
        let dns_events = RingBuf::try_from(take(&mut ebpf, names::MAP_DNS_EVENTS)).unwrap();
        let counters = PerCpuArray::try_from(take(&mut ebpf, names::MAP_COUNTERS)).unwrap();
        let pending = match take(&mut ebpf, names::MAP_DNS_PENDING) {
            Map::Array(data) => PendingMap::new(data)?,
            _ => return Err("CW_DNS_PENDING is not an array".into()),
        };
        let scratch = match ebpf.map(names::MAP_SCRATCH) {
            Some(Map::PerCpuArray(data)) => data.info().map_err(|e| e.to_string())?.id(),
            _ => return Err("CW_SCRATCH is not a per-CPU array".into()),
        };
        let scratch = MapData::from_id(scratch).and_then(Map::from_map_data);
        let scratch = PerCpuArray::try_from(scratch.map_err(|e| e.to_string())?).unwrap();
        let mut verified = Vec::new();
        for name in [names::PROG_SKB_EGRESS, names::PROG_SKB_INGRESS] {
            let prog: &mut CgroupSkb = ebpf.program_mut(name).unwrap().try_into().unwrap();
            prog.load().map_err(|e| format!("verifier rejected {name}: {e:?}"))?;
            let info = prog.info().map_err(|e| format!("{name}: {e}"))?;
            verified.push((name, info.verified_instruction_count()));
        }
        let cpus = aya::util::nr_cpus().expect("number of possible CPUs");
        let mut kernel = Self {
            ebpf,
            events,
            dns_events,
            counters,
            scratch,
            pending,
            last_cookie: 0,
            cpus: cpus.get() as usize,
            cgroup_id: own_cgroup_id(),
            verified,
            packet_access: true,
        };
        kernel.packet_access = kernel.probe_recorded();
        kernel.reset();
        Ok(kernel)
    }

    /// Runs `case` from a clean state, again from a clean state if a run's cookie could not be
    /// confirmed (see the module comment).
    pub fn case(&mut self, what: &str, mut case: impl FnMut(&mut Self) -> Result<(), Miss>) {
        for _ in 0..ATTEMPTS {
            self.reset();
            if case(self).is_ok() {
                self.reset();
                return;
            }
        }
        panic!("{what}: socket cookies kept being taken by other activity; gave up");
    }

    pub fn egress(&mut self, packet: &[u8]) -> Result<Outcome, Miss> {
        self.run(names::PROG_SKB_EGRESS, packet)
    }

    pub fn ingress(&mut self, packet: &[u8]) -> Result<Outcome, Miss> {
        self.run(names::PROG_SKB_INGRESS, packet)
    }

    /// Runs `packet` through egress `repeat` times in one `BPF_PROG_TEST_RUN` (one socket, so
    /// one cookie, for all repetitions).
    pub fn egress_repeated(&mut self, packet: &[u8], repeat: u32) -> Result<Outcome, Miss> {
        self.run_repeated(names::PROG_SKB_EGRESS, packet, repeat)
    }

    fn run(&mut self, program: &str, packet: &[u8]) -> Result<Outcome, Miss> {
        self.run_repeated(program, packet, 1)
    }

    /// Egress, after `prepare` was given the socket cookie the run will get.
    pub fn egress_after(
        &mut self,
        packet: &[u8],
        prepare: impl FnOnce(&mut Self, u64),
    ) -> Result<Outcome, Miss> {
        self.run_prepared(names::PROG_SKB_EGRESS, packet, 1, prepare)
    }

    fn run_repeated(&mut self, program: &str, packet: &[u8], repeat: u32) -> Result<Outcome, Miss> {
        self.run_prepared(program, packet, repeat, |_, _| {})
    }

    fn run_prepared(
        &mut self,
        program: &str,
        packet: &[u8],
        repeat: u32,
        prepare: impl FnOnce(&mut Self, u64),
    ) -> Result<Outcome, Miss> {
        let cookie = self.probe().1 + 1;
        self.move_state_to(cookie);
        prepare(self, cookie);
        self.zero_counters();
        let verdict = self.test_run(program, packet, repeat);
        assert_eq!(verdict, 1, "{program} must allow every packet");
        let (events, raw_events) = drain_raw(&mut self.events);
        let (dns_events, raw_dns) = drain_raw(&mut self.dns_events);
        let outcome = Outcome { counters: self.read_counters(), events, dns_events };
        for record in raw_events.iter().chain(&raw_dns) {
            assert_no_secret(record, "a ring-buffer record");
        }
        for (cpu, buf) in self.scratch.get(&0, 0).unwrap().iter().enumerate() {
            assert!(buf.iter().all(|&b| b == 0), "CW_SCRATCH on CPU {cpu} was not wiped");
        }
        // The run took `cookie` or none at all (paths that never ask for it).
        if self.probe().0 > cookie + 1 {
            return Err(Miss);
        }
        Ok(outcome)
    }

    fn test_run(&self, program: &str, packet: &[u8], repeat: u32) -> u32 {
        let prog: &CgroupSkb = self.ebpf.program(program).unwrap().try_into().unwrap();
        let opts = TestRunOptions { data_in: Some(packet), repeat, ..Default::default() };
        prog.test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN {program}: {e:?}"))
            .return_value
    }

    /// Whether the probe query, run once, was seen by the program.
    fn probe_recorded(&mut self) -> bool {
        let query = packets::dns_query(PROBE_ID, &packets::wire_name("probe.test"), 1);
        let packet = packets::udp_egress(DNS_PORT, &query);
        assert_eq!(self.test_run(names::PROG_SKB_EGRESS, &packet, 1), 1);
        self.taken_pending().iter().any(|(_, slot)| slot.id == PROBE_ID)
    }

    /// Runs a valid DNS query and returns the cookie it got, leaving no trace of it. When a test
    /// filled the probe's bucket of the pending-query table, the query is refused; then the
    /// fillers make room for a second probe and are put back. Returns the first and the last
    /// cookie the probe took.
    fn probe(&mut self) -> (u64, u64) {
        let query = packets::dns_query(PROBE_ID, &packets::wire_name("probe.test"), 1);
        let packet = packets::udp_egress(DNS_PORT, &query);
        let find = |k: &mut Self| {
            assert_eq!(k.test_run(names::PROG_SKB_EGRESS, &packet, 1), 1);
            k.find_probe()
        };
        let (first, (index, slot)) = match find(self) {
            Some(found) => (found.1.cookie, found),
            None => {
                let fillers: Vec<_> = self
                    .taken_pending()
                    .into_iter()
                    .filter(|(_, slot)| slot.cookie >= FILLER_COOKIE)
                    .collect();
                assert!(
                    !fillers.is_empty(),
                    "the probe query was recorded, or fillers held it off"
                );
                for (index, _) in &fillers {
                    self.clear_pending(*index);
                }
                let found = find(self).expect("the probe query was recorded");
                self.clear_pending(found.0);
                for (index, filler) in &fillers {
                    self.pending.set(*index, filler);
                }
                (found.1.cookie - 1, found)
            }
        };
        if self.pending.get(index).id == PROBE_ID {
            self.clear_pending(index);
        }
        let events = drain::<DnsEvent>(&mut self.dns_events);
        assert!(events.is_empty(), "queries send no event");
        self.last_cookie = slot.cookie;
        (first, slot.cookie)
    }

    /// The probe query's slot. Looked for first in the buckets of the cookies that follow the
    /// last one seen (a scan of the whole table between a query and its answer would add more
    /// delay than the first latency bucket allows in an unoptimised build).
    fn find_probe(&self) -> Option<(u32, DnsPendingSlot)> {
        let is_probe = |slot: &DnsPendingSlot| slot.query_ns != 0 && slot.id == PROBE_ID;
        for cookie in self.last_cookie + 1..=self.last_cookie + 64 {
            let bucket = pending_bucket(cookie, PROBE_ID);
            for i in bucket..bucket + PENDING_WAYS {
                let slot = self.pending.get(i);
                if is_probe(&slot) && slot.cookie == cookie {
                    return Some((i, slot));
                }
            }
        }
        (0..PENDING_TABLE_SIZE).map(|i| (i, self.pending.get(i))).find(|(_, slot)| is_probe(slot))
    }

    /// Re-keys the connection's state (at most one flow, and pending DNS queries) to `cookie`.
    fn move_state_to(&mut self, cookie: u64) {
        let mut flows = self.flows_map();
        let entries: Vec<(u64, Flow)> =
            flows.iter().map(Result::unwrap).filter(|(k, _)| *k < FILLER_COOKIE).collect();
        assert!(entries.len() <= 1, "one connection at a time");
        for (key, flow) in entries {
            if key != cookie {
                flows.remove(&key).unwrap();
                flows.insert(&cookie, &flow, 0).unwrap();
            }
        }
        for (index, slot) in self.pending_queries_at() {
            if slot.cookie != cookie {
                self.clear_pending(index);
                self.put_pending(&DnsPendingSlot { cookie, ..slot });
            }
        }
    }

    pub fn reset(&mut self) {
        let mut flows = self.flows_map();
        for key in flows.keys().map(Result::unwrap).collect::<Vec<_>>() {
            flows.remove(&key).unwrap();
        }
        self.pending.clear_all();
        drain::<MetadataEvent>(&mut self.events);
        drain::<DnsEvent>(&mut self.dns_events);
        self.zero_counters();
        let mut stats = self.stats_map();
        for key in stats.keys().map(Result::unwrap).collect::<Vec<_>>() {
            stats.remove(&key).unwrap();
        }
        self.fill_stats_cache(0, 0);
        self.clear_linklocal();
        self.set_all_names(false);
        self.set_dns_timeout_ms(0);
        self.set_metadata_timeout_ms(0);
        self.set_stats_epoch(0);
    }

    fn set_config(&mut self, index: u32, value: u32) {
        let mut config: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut(names::MAP_CONFIG).unwrap()).unwrap();
        config.set(index, &value, 0).unwrap();
    }

    /// The statistics epoch the kernel sees (userspace advances it once a second).
    pub fn set_stats_epoch(&mut self, epoch: u32) {
        self.set_config(names::config::DNS_STATS_EPOCH, epoch);
    }

    /// Puts a filler cgroup's key, last active in `active_epoch`, in every slot of every CPU's
    /// statistics cache (`cgroup_id` 0: empties them).
    pub fn fill_stats_cache(&mut self, cgroup_id: u64, active_epoch: u64) {
        let key = DnsStatsKey { cgroup_id, qtype: 1, _pad: [0; 6] };
        let filler = DnsStatsSlot { key, active_epoch, stats: DnsStats::ZERO };
        let cpus = self.cpus;
        let mut cache = self.stats_cache_map();
        for index in 0..STATS_CACHE_SLOTS {
            let values = PerCpuValues::try_from(vec![filler; cpus]).unwrap();
            cache.set(index, values, 0).unwrap();
        }
    }

    /// The statistics entries in the shared table only (fillers excluded).
    pub fn shared_dns_stats(&mut self) -> Vec<(DnsStatsKey, DnsStats)> {
        self.stats_map()
            .iter()
            .map(Result::unwrap)
            .filter(|(k, _)| k.cgroup_id < FILLER_COOKIE)
            .collect()
    }

    /// The statistics in the CPUs' caches only (fillers excluded), one entry per CPU and slot.
    pub fn cached_dns_stats(&mut self) -> Vec<(DnsStatsKey, DnsStats)> {
        let cache = self.stats_cache_map();
        let mut out = Vec::new();
        for index in 0..STATS_CACHE_SLOTS {
            for slot in cache.get(&index, 0).unwrap().iter() {
                if slot.key.cgroup_id != 0 && slot.key.cgroup_id < FILLER_COOKIE {
                    out.push((slot.key, slot.stats));
                }
            }
        }
        out
    }

    /// `--metadata-timeout` as the kernel sees it (0: none, as before the agent sets it).
    pub fn set_metadata_timeout_ms(&mut self, ms: u32) {
        self.set_config(names::config::METADATA_TIMEOUT_MS, ms);
    }

    /// Makes the connection's request look `ns` older than it is.
    pub fn age_flow(&mut self, ns: u64) {
        let mut flows = self.flows_map();
        let entries: Vec<(u64, Flow)> =
            flows.iter().map(Result::unwrap).filter(|(k, _)| *k < FILLER_COOKIE).collect();
        assert_eq!(entries.len(), 1, "one connection at a time");
        let (key, flow) = entries[0];
        flows.insert(&key, &Flow { request_ns: flow.request_ns - ns, ..flow }, 0).unwrap();
    }

    /// The DNS timeout the kernel applies to answers (0: none, as before the agent sets it).
    pub fn set_dns_timeout_ms(&mut self, ms: u32) {
        self.set_config(names::config::DNS_TIMEOUT_MS, ms);
    }

    /// Whether every DNS answer sends a named event (`--dns-top-names`), not only NXDOMAIN.
    pub fn set_all_names(&mut self, on: bool) {
        let mut config: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut(names::MAP_CONFIG).unwrap()).unwrap();
        config.set(names::config::DNS_ALL_NAMES, &u32::from(on), 0).unwrap();
    }

    /// The DNS statistics entries (fillers excluded).
    /// One entry per key, the shared table's and the caches' counts added up.
    pub fn dns_stats(&mut self) -> Vec<(DnsStatsKey, DnsStats)> {
        let mut merged: BTreeMap<(u64, u16), (DnsStatsKey, DnsStats)> = BTreeMap::new();
        let all = self.shared_dns_stats().into_iter().chain(self.cached_dns_stats());
        for (key, stats) in all {
            let (_, sum) =
                merged.entry((key.cgroup_id, key.qtype)).or_insert((key, DnsStats::ZERO));
            let pairs = sum.responses.iter_mut().zip(stats.responses).chain([
                (&mut sum.truncated, stats.truncated),
                (&mut sum.latency_sum_ns, stats.latency_sum_ns),
            ]);
            for (a, b) in pairs.chain(sum.latency.iter_mut().zip(stats.latency)) {
                *a += b;
            }
        }
        merged.into_values().collect()
    }

    /// Fills the DNS statistics table with entries under filler cgroup ids, and every CPU's cache
    /// with a filler that keeps its slots; returns one of the table's entries.
    pub fn fill_stats_table(&mut self) -> DnsStatsKey {
        self.fill_stats_cache(FILLER_COOKIE, 0);
        let mut stats = self.stats_map();
        let key = |i: u64| DnsStatsKey { cgroup_id: FILLER_COOKIE + i, qtype: 1, _pad: [0; 6] };
        for i in 0..u64::from(agent_common::dns::STATS_TABLE_SIZE) {
            stats
                .insert(&key(i), &DnsStats::ZERO, 0)
                .unwrap_or_else(|e| panic!("filler {i}: {e:?}"));
        }
        key(0)
    }

    /// Makes the pending query `id` look `ns` older than it is.
    pub fn age_pending(&mut self, id: u16, ns: u64) {
        let (index, slot) = self
            .pending_queries_at()
            .into_iter()
            .find(|(_, slot)| slot.id == id)
            .expect("the query is pending");
        let aged = DnsPendingSlot { query_ns: slot.query_ns - ns, ..slot };
        self.pending.set(index, &aged);
    }

    pub fn remove_stats_entry(&mut self, key: &DnsStatsKey) {
        self.stats_map().remove(key).unwrap();
    }

    /// `answer` sent `n` times through ingress, each to its own query (a pending entry inserted
    /// for the cookie that run gets), without reading the ring between runs: a full ring.
    pub fn answers_unread(
        &mut self,
        n: u32,
        answer: impl Fn(u16) -> Vec<u8>,
    ) -> Result<Outcome, Miss> {
        let first = self.probe().1 + 1;
        self.zero_counters();
        for i in 0..n {
            let id = i as u16;
            let cookie = first + u64::from(i);
            let index = self.put_pending(&DnsPendingSlot {
                query_ns: 1,
                cookie,
                cgroup_id: self.cgroup_id,
                id,
                qtype: 1,
                _pad: [0; 4],
            });
            assert_eq!(self.test_run(names::PROG_SKB_INGRESS, &answer(id), 1), 1);
            if self.pending.get(index).query_ns != 0 {
                // Not answered: the run got another cookie (the entries would pile up).
                return Err(Miss);
            }
        }
        let dns_events = drain::<DnsEvent>(&mut self.dns_events);
        let outcome = Outcome { counters: self.read_counters(), events: vec![], dns_events };
        if self.probe().0 > first + u64::from(n) {
            return Err(Miss);
        }
        Ok(outcome)
    }

    /// The flow table's entries (the cookie itself is the harness's business).
    pub fn flows(&mut self) -> Vec<Flow> {
        self.flows_map()
            .iter()
            .map(Result::unwrap)
            .filter(|(k, _)| *k < FILLER_COOKIE)
            .map(|(_, v)| v)
            .collect()
    }

    /// The one flow the connection has.
    pub fn flow(&mut self) -> Flow {
        let flows = self.flows();
        assert_eq!(flows.len(), 1, "expected exactly one flow");
        flows[0]
    }

    /// The queries waiting in the pending table (fillers left out): id and slot.
    pub fn pending_queries(&mut self) -> Vec<(u16, DnsPendingSlot)> {
        self.pending_queries_at().into_iter().map(|(_, slot)| (slot.id, slot)).collect()
    }

    fn pending_queries_at(&mut self) -> Vec<(u32, DnsPendingSlot)> {
        let mut taken = self.taken_pending();
        taken.retain(|(_, slot)| slot.cookie < FILLER_COOKIE);
        taken
    }

    /// Every taken slot of the pending table, fillers included, with its index.
    fn taken_pending(&mut self) -> Vec<(u32, DnsPendingSlot)> {
        self.pending.taken()
    }

    /// Puts `slot` into the first free slot of its bucket, as the kernel would; returns where.
    pub fn put_pending(&mut self, slot: &DnsPendingSlot) -> u32 {
        let bucket = pending_bucket(slot.cookie, slot.id);
        let free = (bucket..bucket + PENDING_WAYS)
            .find(|&i| self.pending.get(i).query_ns == 0)
            .expect("a free slot in the bucket");
        self.pending.set(free, slot);
        free
    }

    fn clear_pending(&mut self, index: u32) {
        let free =
            DnsPendingSlot { query_ns: 0, cookie: 0, cgroup_id: 0, id: 0, qtype: 0, _pad: [0; 4] };
        self.pending.set(index, &free);
    }

    /// Takes the first `ways` slots of the bucket of the query (`cookie`, `id`) with fillers
    /// (queries of another socket).
    pub fn fill_pending_bucket(&mut self, cookie: u64, id: u16, ways: u32) {
        let bucket = pending_bucket(cookie, id);
        for i in bucket..bucket + ways {
            let filler = DnsPendingSlot {
                query_ns: 1,
                cookie: FILLER_COOKIE + u64::from(i),
                cgroup_id: 1,
                id: 0,
                qtype: 1,
                _pad: [0; 4],
            };
            self.pending.set(i, &filler);
        }
    }

    /// Removes the fillers [`Self::fill_pending_bucket`] put in.
    pub fn clear_pending_fillers(&mut self) {
        for (index, slot) in self.taken_pending() {
            if slot.cookie >= FILLER_COOKIE {
                self.clear_pending(index);
            }
        }
    }

    /// Fills the flow table to capacity with entries under filler cookies.
    pub fn fill_flows(&mut self, flow: &Flow) {
        let mut flows = self.flows_map();
        for i in 0..u64::from(agent_common::FLOW_TABLE_SIZE) {
            flows.insert(&(FILLER_COOKIE + i), flow, 0).unwrap();
        }
    }

    /// Entries in the flow table, fillers included.
    pub fn flow_table_size(&mut self) -> usize {
        self.flows_map().keys().count()
    }

    /// Packets counted per (cgroup, service), summed over the CPUs (zero entries left out).
    pub fn linklocal_packets(&mut self) -> BTreeMap<(u64, u8), u64> {
        self.linklocal_packets_map()
            .iter()
            .map(Result::unwrap)
            .map(|(k, v)| ((k.cgroup_id, k.service), v.iter().sum::<u64>()))
            .filter(|&(_, n)| n != 0)
            .collect()
    }

    /// Every CPU's per-second slots that hold a second (second, packets by service).
    pub fn linklocal_seconds(&mut self) -> Vec<(u64, [u32; 8])> {
        let seconds = self.linklocal_seconds_map();
        let mut out = Vec::new();
        for index in 0..linklocal::SECOND_SLOTS {
            for slot in seconds.get(&index, 0).unwrap().iter() {
                if slot.second != 0 {
                    out.push((slot.second, slot.packets));
                }
            }
        }
        out
    }

    /// Puts `slot` in every CPU's slot for its second.
    pub fn set_linklocal_second(&mut self, slot: SecondSlot) {
        let values = PerCpuValues::try_from(vec![slot; self.cpus]).unwrap();
        let index = linklocal::second_slot(slot.second);
        self.linklocal_seconds_map().set(index, values, 0).unwrap();
    }

    /// Fills the per-(cgroup, service) table with filler cgroups.
    pub fn fill_linklocal_packets(&mut self) {
        let cpus = self.cpus;
        let mut map = self.linklocal_packets_map();
        for i in 0..u64::from(linklocal::PACKETS_TABLE_SIZE) {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).unwrap();
            map.insert(&PacketsKey::new(FILLER_COOKIE + i, 0), zeros, 0)
                .unwrap_or_else(|e| panic!("filler {i}: {e:?}"));
        }
    }

    fn clear_linklocal(&mut self) {
        let mut packets = self.linklocal_packets_map();
        for key in packets.keys().map(Result::unwrap).collect::<Vec<_>>() {
            packets.remove(&key).unwrap();
        }
        let zero = SecondSlot::default();
        let cpus = self.cpus;
        let mut seconds = self.linklocal_seconds_map();
        for index in 0..linklocal::SECOND_SLOTS {
            let values = PerCpuValues::try_from(vec![zero; cpus]).unwrap();
            seconds.set(index, values, 0).unwrap();
        }
    }

    fn linklocal_packets_map(&mut self) -> PerCpuHashMap<&mut MapData, PacketsKey, u64> {
        PerCpuHashMap::try_from(self.ebpf.map_mut(names::MAP_LINKLOCAL_PACKETS).unwrap()).unwrap()
    }

    fn linklocal_seconds_map(&mut self) -> PerCpuArray<&mut MapData, SecondSlot> {
        PerCpuArray::try_from(self.ebpf.map_mut(names::MAP_LINKLOCAL_SECONDS).unwrap()).unwrap()
    }

    fn flows_map(&mut self) -> HashMap<&mut MapData, u64, Flow> {
        HashMap::try_from(self.ebpf.map_mut(names::MAP_FLOWS).unwrap()).unwrap()
    }

    fn stats_cache_map(&mut self) -> PerCpuArray<&mut MapData, DnsStatsSlot> {
        PerCpuArray::try_from(self.ebpf.map_mut(names::MAP_DNS_STATS_CPU).unwrap()).unwrap()
    }

    fn stats_map(&mut self) -> HashMap<&mut MapData, DnsStatsKey, DnsStats> {
        HashMap::try_from(self.ebpf.map_mut(names::MAP_DNS_STATS).unwrap()).unwrap()
    }

    fn zero_counters(&mut self) {
        for index in 0..counter::COUNT {
            let zeros = PerCpuValues::try_from(vec![0u64; self.cpus]).unwrap();
            self.counters.set(index, zeros, 0).unwrap();
        }
    }

    fn read_counters(&self) -> BTreeMap<u32, u64> {
        (0..counter::COUNT)
            .map(|i| (i, self.counters.get(&i, 0).unwrap().iter().sum::<u64>()))
            .filter(|&(_, v)| v != 0)
            .collect()
    }
}

/// Adds `flag` to `port`'s flags in CW_PORTS, as the agent does (`Kernel::flag_port`).
pub fn flag_port(ebpf: &mut Ebpf, port: u16, flag: u8) {
    let mut ports: Array<_, u64> =
        Array::try_from(ebpf.map_mut(names::MAP_PORTS).unwrap()).unwrap();
    let word = ports.get(&port_word(port), 0).unwrap();
    ports.set(port_word(port), &with_port_flag(word, port, flag), 0).unwrap();
}

/// Fills CW_ENDPOINTS, CW_PORTS and the link-local service table the way the agent does
/// (`kernel.rs`, `features::linklocal`), given `--metadata-endpoint imds=127.0.0.2:8080
/// --metadata-endpoint custom=[::2]:8080 --vpc-resolver 127.0.0.53 --vpc-resolver
/// [2001:db8::53] --ntp-endpoint 127.0.0.2:12300` (on top of the default NTP endpoints). The
/// IPv6 endpoint is `custom`, which is no link-local service.
fn configure(ebpf: &mut Ebpf) {
    let specs = [
        EndpointSpec { addr: (packets::SERVER4, IMDS_PORT).into(), kind: EndpointKind::Imds },
        EndpointSpec { addr: (packets::SERVER6, IMDS_PORT).into(), kind: EndpointKind::Custom },
    ];
    let mut endpoints: HashMap<_, EndpointKey, EndpointValue> =
        HashMap::try_from(ebpf.map_mut(names::MAP_ENDPOINTS).unwrap()).unwrap();
    for spec in &specs {
        let value = EndpointValue { kind: spec.kind as u8, _pad: [0; 3] };
        endpoints.insert(&spec.key(), &value, 0).unwrap();
    }
    let mut ntp_endpoints = LinkLocalArgs::default().ntp_endpoints;
    ntp_endpoints.push(socket_addr(&NTP_STAND_IN));
    let args = LinkLocalArgs {
        vpc_resolvers: [VPC_RESOLVER4, VPC_RESOLVER6].map(|k| ServiceAddr(socket_addr(&k))).into(),
        ntp_endpoints,
        ..Default::default()
    };
    let table = services::table(&args, &specs);

    flag_port(ebpf, IMDS_PORT, PORT_FLAG_METADATA);
    flag_port(ebpf, DNS_PORT, PORT_FLAG_DNS);
    for port in services::stand_in_ports(&table) {
        flag_port(ebpf, port, PORT_FLAG_LINKLOCAL);
    }
    let mut service_map: HashMap<_, ServiceKey, ServiceValue> =
        HashMap::try_from(ebpf.map_mut(names::MAP_LINKLOCAL_SERVICES).unwrap()).unwrap();
    for (key, service) in table {
        service_map.insert(&key, &ServiceValue { service, _pad: [0; 3] }, 0).unwrap();
    }
}

fn socket_addr(key: &EndpointKey) -> SocketAddr {
    SocketAddr::new(Ipv6Addr::from(key.addr).to_canonical(), key.port)
}

/// Stand-ins the link-local tests send to (never sent anywhere: test runs only).
pub const VPC_RESOLVER4: EndpointKey = EndpointKey::v4([127, 0, 0, 53], DNS_PORT);
pub const VPC_RESOLVER6: EndpointKey =
    EndpointKey::new([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53], DNS_PORT);
pub const NTP_STAND_IN: EndpointKey = EndpointKey::v4(packets::SERVER4, 12300);

fn drain<T: Copy>(ring: &mut RingBuf<MapData>) -> Vec<T> {
    drain_raw(ring).0
}

/// The records decoded, and their bytes as the kernel wrote them.
fn drain_raw<T: Copy>(ring: &mut RingBuf<MapData>) -> (Vec<T>, Vec<Vec<u8>>) {
    let (mut out, mut raw) = (Vec::new(), Vec::new());
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<T>(), "ring record size");
        // SAFETY: the size was checked; the shared event types are plain old data.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) });
        raw.push(item.to_vec());
    }
    (out, raw)
}

/// Every secret in the tests' credential documents contains `canary` (any case).
pub const CANARY: &[u8] = b"canary";

pub fn assert_no_secret(bytes: &[u8], what: &str) {
    let found = bytes.windows(CANARY.len()).any(|w| w.eq_ignore_ascii_case(CANARY));
    assert!(!found, "credential bytes in {what}");
}

/// The inode number of this process's cgroup v2 directory, which is its cgroup id.
fn own_cgroup_id() -> u64 {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|&f| f == "-")?;
            (fields.get(dash + 1) == Some(&"cgroup2")).then(|| PathBuf::from(fields[4]))
        })
        .expect("a cgroup2 mount");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = own.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line");
    std::fs::metadata(mount.join(path.trim_start_matches('/'))).unwrap().ino()
}

/// The pending-query table through a shared mapping (it is created BPF_F_MMAPABLE).
struct PendingMap {
    slots: *mut DnsPendingSlot,
    _map: MapData,
}

// SAFETY: the mapping is used under the harness's mutex only.
unsafe impl Send for PendingMap {}

impl PendingMap {
    const BYTES: usize = PENDING_TABLE_SIZE as usize * size_of::<DnsPendingSlot>();

    fn new(map: MapData) -> Result<Self, String> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = map.fd().as_fd().as_raw_fd();
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new shared mapping of the map's values, checked below.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), Self::BYTES, prot, libc::MAP_SHARED, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap CW_DNS_PENDING: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { slots: ptr.cast(), _map: map })
    }

    fn get(&self, index: u32) -> DnsPendingSlot {
        assert!(index < PENDING_TABLE_SIZE);
        // SAFETY: in bounds of the mapping.
        unsafe { self.slots.add(index as usize).read_volatile() }
    }

    /// The taken slots and where they are. Pages of the table that are all zero are skipped
    /// with one comparison each (a slot-by-slot pass takes ~0.3 ms in an unoptimised build,
    /// more than the first latency bucket allows between a query and its answer).
    fn taken(&self) -> Vec<(u32, DnsPendingSlot)> {
        const PAGE: usize = 4096;
        const PER_PAGE: usize = PAGE / size_of::<DnsPendingSlot>();
        static ZERO: [u8; PAGE] = [0; PAGE];
        // SAFETY: the mapping holds BYTES bytes; the kernel writes them only during a test run
        // of this thread, not now.
        let bytes = unsafe { std::slice::from_raw_parts(self.slots as *const u8, Self::BYTES) };
        let mut taken = Vec::new();
        for (page, chunk) in bytes.chunks(PAGE).enumerate() {
            if chunk == ZERO {
                continue;
            }
            for i in page * PER_PAGE..(page + 1) * PER_PAGE {
                let slot = self.get(i as u32);
                if slot.query_ns != 0 {
                    taken.push((i as u32, slot));
                }
            }
        }
        taken
    }

    /// Zeroes every slot (answered ones keep their other fields otherwise).
    fn clear_all(&mut self) {
        // SAFETY: the mapping holds BYTES bytes.
        unsafe { std::ptr::write_bytes(self.slots as *mut u8, 0, Self::BYTES) };
    }

    fn set(&mut self, index: u32, slot: &DnsPendingSlot) {
        assert!(index < PENDING_TABLE_SIZE);
        // SAFETY: in bounds of the mapping.
        unsafe { self.slots.add(index as usize).write_volatile(*slot) }
    }
}

impl Drop for PendingMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new().
        unsafe { libc::munmap(self.slots.cast(), Self::BYTES) };
    }
}
