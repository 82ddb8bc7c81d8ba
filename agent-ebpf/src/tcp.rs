//! TCP connects and accepts, counted here per (cgroup, destination class): nothing crosses to
//! userspace per connection. A connect is recorded in the connect() call, before any packet DNAT:
//! by `sock_ops`' TCP_CONNECT_CB where this kernel lets `sock_ops` read the current cgroup (6.8
//! and later; no connect4 run then), else by `cgroup/connect4|6`. The record classifies the
//! address the application asked for (metadata endpoint, DNS port, configured range, loopback,
//! external) and keeps the class, its cgroup and the time in the socket's slot of a direct-mapped
//! table (see `agent_common::tcp::PendingConnect`). `sock_ops` on the same cgroup then counts the
//! outcome (`CW_TCP_STATS` through `stats`), in whatever context the kernel is in (often softirq),
//! which is why nothing there depends on the current task:
//! - ACTIVE_ESTABLISHED: the handshake completed;
//! - RTO with its third argument set: the SYN retransmission timer gave up (timeout);
//! - STATE SYN_SENT → CLOSE: refused when a segment (the RST) arrived, else the application or an
//!   ICMP error ended it;
//! - LISTEN (process context) records which cgroup listens on a port, so that
//!   PASSIVE_ESTABLISHED can count accepted connections for it.
//!
//! The only record sent is a key counted for the first time on a CPU (`EVENT_NEW_KEY`), so that
//! userspace resolves its cgroup while it exists.
use agent_common::{
    EndpointKey, MAPPED_WORD, PORT_FLAG_DNS, PORT_FLAG_METADATA, counter,
    names::config,
    tcp::{
        CLASS_ACCEPTED, CLASS_DNS, CLASS_EXTERNAL, CLASS_LOOPBACK, CLASS_METADATA,
        CONNECT_TABLE_SIZE, EVENT_NEW_KEY, LATENCY_SLOTS, ListenerKey, PendingConnect,
        RESULT_ERROR, RESULT_ESTABLISHED, RESULT_REFUSED, RESULT_TIMEOUT, RESULTS, TcpEvent,
        TcpStats, TcpStatsKey, latency_slot,
    },
};
use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie,
        bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
    },
    maps::lpm_trie::Key,
    programs::{SockAddrContext, SockOpsContext},
};

use crate::{
    maps::{
        CW_ENDPOINTS, CW_TCP_CIDRS, CW_TCP_CONNECTS, CW_TCP_EVENTS, CW_TCP_LISTEN_GEN,
        CW_TCP_LISTENER_CPU, CW_TCP_LISTENERS, CW_TCP_STATS, CW_TCP_STATS_CPU, NO_WAKEUP, config,
        count, port_flags,
    },
    opaque::opaque,
    stats,
};

/// See `agent_common::names::GLOBAL_SOCK_OPS_CGROUP`. Set when the object is loaded; read with
/// a volatile load so that the compiler does not fold the built value into the code, while the
/// verifier, which sees a frozen read-only map, still resolves the branch as a constant.
#[unsafe(no_mangle)]
static CW_SOCK_OPS_CGROUP: u8 = 1;

const SOCK_STREAM: u32 = 1;
const TCP_SYN_SENT: u32 = 2;
const TCP_CLOSE: u32 = 7;
/// A slot older than this is free whatever it says: its socket never reported an outcome (a
/// connect() that failed before sending its SYN). Longer than the default SYN retries (~127 s).
const STALE_NS: i64 = 300_000_000_000;

/// Whether `sock_ops` may read the current cgroup (`CW_SOCK_OPS_CGROUP`, set at load). Then it
/// records connects itself (at `TCP_CONNECT_CB`, in the connecting task, as connect4 would) and
/// listeners; the agent does not attach connect4 and connect6, which saves a program run per
/// connect. Else connect4 and connect6 record connects, `sock_ops` counts their outcomes, and
/// accepts are not counted.
#[inline(always)]
fn sock_ops_reads_cgroup() -> bool {
    unsafe { read_volatile(&CW_SOCK_OPS_CGROUP) != 0 }
}

/// The clock `sock_ops` reads a connect's start with, when it records connects, and its end when
/// the SYN was retransmitted (the other connects' latency is the kernel's own measurement of the
/// handshake, see `handshake_rtt_ns`): the coarse monotonic clock where `sock_ops` records
/// connects (6.8 and later), a memory read with a tick's resolution (1–10 ms), enough for a
/// latency of at least the first retransmission timeout (1 s) and much cheaper than
/// `bpf_ktime_get_ns`, which is a paravirtual clock read in VMs (~75 ns of BPF time a read here,
/// docs/benchmarks.md). Else connect4 recorded the start with [`precise_clock_ns`] (5.10 has no
/// coarse clock helper; the verifier never sees the branch not taken, a constant from
/// `.rodata`).
#[inline(always)]
fn connect_clock_ns() -> u64 {
    if sock_ops_reads_cgroup() { unsafe { bpf_ktime_get_coarse_ns() } } else { precise_clock_ns() }
}

/// connect4's and connect6's clock: they run only where the load-time switch is off (kernels up
/// to 6.1), and 5.10 refuses the coarse helper.
#[inline(always)]
fn precise_clock_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// The handshake's round trip as the kernel measured it for this socket, in nanoseconds, if the
/// SYN was sent once: at ACTIVE_ESTABLISHED the SYN-ACK has just been processed and its RTT sample
/// (SYN sent → SYN-ACK received, from the SYN's own transmit timestamp) is the smoothed RTT's
/// first and only value (`srtt_us` holds it times 8: 125 ns a unit). A retransmitted SYN's sample
/// is not taken (Karn's rule) or comes from TCP timestamps of the last transmission, which is not
/// the connect's latency: None then, and the clock is used.
#[inline(always)]
fn handshake_rtt_ns(ctx: &SockOpsContext) -> Option<u64> {
    let ops = ctx.ops;
    let (retransmitted, srtt_x8) = unsafe { ((*ops).total_retrans, (*ops).srtt_us) };
    (retransmitted == 0 && srtt_x8 != 0).then(|| u64::from(srtt_x8) * 125)
}

/// connect() on an IPv4 TCP socket (attached only where `sock_ops` does not record connects).
pub fn connect4(ctx: &SockAddrContext) {
    let sa = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // user_ip4 holds the address in network order in memory: IPv4-mapped, as four such words;
    // user_port the port in network order in its low 16 bits.
    let port = u16::from_be(sa.user_port as u16);
    record_connect(cookie, [0, 0, MAPPED_WORD, sa.user_ip4], port, precise_clock_ns());
}

/// connect() on an IPv6 TCP socket (IPv4-mapped addresses included).
pub fn connect6(ctx: &SockAddrContext) {
    let sa = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    record_connect(cookie, sa.user_ip6, u16::from_be(sa.user_port as u16), precise_clock_ns());
}

/// `sock_ops`' `TCP_CONNECT_CB`: tcp_connect() in the connect() call, before the SYN is built.
/// The address is the socket's destination, which other programs' connect4 rewrites (a socket
/// load balancer's) have already set, as they had for our connect4 attached after them; packet
/// DNAT (iptables, IPVS) comes later and is not seen, as before.
#[inline(always)]
fn connect_cb(ctx: &SockOpsContext) {
    const AF_INET: u32 = 2;
    let ops = ctx.ops;
    // Both forms read on every path, with volatile loads (which LLVM may not move into the
    // branches): loaded in the branches, LLVM merges the two last loads into one through a
    // context pointer moved by 24 or 44 bytes, which the verifier refuses ("dereference of
    // modified ctx ptr").
    let (ip4, ip6) = unsafe {
        (
            read_volatile(&raw const (*ops).remote_ip4),
            [
                read_volatile(&raw const (*ops).remote_ip6[0]),
                read_volatile(&raw const (*ops).remote_ip6[1]),
                read_volatile(&raw const (*ops).remote_ip6[2]),
                read_volatile(&raw const (*ops).remote_ip6[3]),
            ],
        )
    };
    let addr = if ctx.family() == AF_INET { [0, 0, MAPPED_WORD, ip4] } else { ip6 };
    // bpf_sock_ops.remote_port: network order, shifted into the high 16 bits on little-endian
    // hosts (the kernel's context conversion; local_port is in host order).
    let port = u16::from_be((ctx.remote_port() >> 16) as u16);
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    record_connect(cookie, addr, port, connect_clock_ns());
}

/// Records a connect in its socket's slot. `addr`: the destination as four 32-bit words in memory
/// (network) order; `port` in host order; `now` from the recorder's clock. Runs in the connecting
/// task (the current cgroup is its).
#[inline(always)]
fn record_connect(cookie: u64, addr: [u32; 4], port: u16, now: u64) {
    let Some(slot) = CW_TCP_CONNECTS.get_ptr_mut(slot_of(cookie)) else {
        return;
    };
    let held = unsafe { (*slot).start_ns };
    // Signed: a start up to a tick ahead of the coarse clock (read from the finer one, as the
    // table tests write CLOCK_MONOTONIC) is recent, not 584 years old.
    let age = now.wrapping_sub(held) as i64;
    if held != 0 && unsafe { (*slot).cookie } != cookie && age < STALE_NS {
        // Another connect in progress holds the slot: this one is not recorded.
        count(counter::LOST_TCP_TABLE);
        return;
    }
    let class = class_of(addr, port);
    unsafe {
        (*slot).cookie = cookie;
        (*slot).start_ns = now;
        (*slot).cgroup_id = bpf_get_current_cgroup_id();
        (*slot).class = class;
        (*slot).expired = 0;
    }
}

/// The destination's class, most specific first (see `agent_common::tcp::CLASS_EXTERNAL`): the
/// same decision as userspace's `classify`, from the same configuration.
#[inline(always)]
fn class_of(addr: [u32; 4], port: u16) -> u8 {
    let flags = port_flags(port);
    if flags & PORT_FLAG_METADATA != 0
        && unsafe { CW_ENDPOINTS.get(&EndpointKey::from_words(addr, port)) }.is_some()
    {
        return CLASS_METADATA;
    }
    if flags & PORT_FLAG_DNS != 0 {
        return CLASS_DNS;
    }
    // The range lookup (a trie walk in a helper) only when ranges are configured.
    if config(config::TCP_CIDRS) != 0
        && let Some(class) = CW_TCP_CIDRS.get(&cidr_key(addr))
        && *class != CLASS_EXTERNAL
    {
        return *class;
    }
    if is_loopback(addr) { CLASS_LOOPBACK } else { CLASS_EXTERNAL }
}

/// The range table's key for a whole address, with word stores (see
/// `EndpointKey::from_words`).
#[inline(always)]
fn cidr_key(addr: [u32; 4]) -> Key<[u8; 16]> {
    // SAFETY: Key<[u8; 16]> is a packed u32 and 16 bytes, as [u32; 5] is 20 bytes.
    unsafe {
        core::mem::transmute::<[u32; 5], Key<[u8; 16]>>([128, addr[0], addr[1], addr[2], addr[3]])
    }
}

/// 127.0.0.0/8 (IPv4-mapped) or ::1.
#[inline(always)]
fn is_loopback(addr: [u32; 4]) -> bool {
    if addr[0] != 0 || addr[1] != 0 {
        return false;
    }
    // The first byte in memory is the low byte of a word on this little-endian target.
    (addr[2] == MAPPED_WORD && addr[3] & 0xff == 127)
        || (addr[2] == 0 && addr[3] == u32::from_ne_bytes([0, 0, 0, 1]))
}

#[inline(always)]
fn slot_of(cookie: u64) -> u32 {
    (cookie & u64::from(CONNECT_TABLE_SIZE - 1)) as u32
}

/// The slot of this callback's socket, if its connect is being watched.
#[inline(always)]
fn pending(ctx: &SockOpsContext) -> Option<*mut PendingConnect> {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let slot = CW_TCP_CONNECTS.get_ptr_mut(slot_of(cookie))?;
    let mine = unsafe { (*slot).cookie == cookie && (*slot).start_ns != 0 };
    mine.then_some(slot)
}

pub fn sock_ops(ctx: &SockOpsContext) {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        if sock_ops_reads_cgroup() {
            connect_cb(ctx);
        }
        // Ask for the state and timeout callbacks on this socket only.
        let flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG;
        let _ = ctx.set_cb_flags(flags as i32);
    } else if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        if let Some(slot) = pending(ctx) {
            finish_connect(slot, RESULT_ESTABLISHED, handshake_rtt_ns(ctx));
        }
        // Nothing more to learn from this socket.
        let _ = ctx.set_cb_flags(0);
    } else if op == BPF_SOCK_OPS_RTO_CB {
        // args: retransmits, rto, expired (the timer is giving up).
        if ctx.arg(2) != 0
            && let Some(p) = pending(ctx)
        {
            unsafe { (*p).expired = 1 };
        }
    } else if op == BPF_SOCK_OPS_STATE_CB {
        if ctx.arg(0) == TCP_SYN_SENT
            && ctx.arg(1) == TCP_CLOSE
            && let Some(slot) = pending(ctx)
        {
            let expired = unsafe { (*slot).expired } != 0;
            // segs_in is bumped before the socket processes a segment: a RST leaves it > 0, an
            // application close or an ICMP error does not.
            let segs_in = unsafe { (*ctx.ops).segs_in };
            let result = if expired {
                RESULT_TIMEOUT
            } else if segs_in > 0 {
                RESULT_REFUSED
            } else {
                RESULT_ERROR
            };
            finish_connect(slot, result, None);
        }
    } else if op == BPF_SOCK_OPS_TCP_LISTEN_CB {
        if !sock_ops_reads_cgroup() {
            return; // no listeners, so no accepts: this kernel cannot tell their cgroup here
        }
        // listen() runs in the listening process: the current cgroup is the owner's.
        let key = listener_key(ctx);
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        if CW_TCP_LISTENERS.insert(&key, &cgroup_id, 0).is_err() {
            count(counter::LOST_TCP_TABLE);
        }
        // After the insert: a CPU that reads the new generation finds the new listener.
        if let Some(generation) = CW_TCP_LISTEN_GEN.get_ptr_mut(0) {
            unsafe { stats::atomic_add(generation, 1) };
        }
    } else if op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        if !sock_ops_reads_cgroup() {
            return; // no listeners recorded (above); also keeps bpf_get_netns_cookie dead code
        }
        let owner = listener_owner(&listener_key(ctx));
        if owner != 0 {
            count_accept(owner);
        }
    }
}

/// The cgroup of the listener that accepted a connection on `key` (its local address), 0 when
/// none was recorded: this CPU's last answer when it is for the same key and no listen() came
/// since (`ListenerCache`), else the listener on this exact address or a wildcard one on the
/// port, remembered for the next accept.
#[inline(always)]
fn listener_owner(key: &ListenerKey) -> u64 {
    let generation = match CW_TCP_LISTEN_GEN.get(0) {
        Some(g) => *g,
        None => return 0,
    };
    let Some(cache) = CW_TCP_LISTENER_CPU.get_ptr_mut(0) else {
        return 0;
    };
    unsafe {
        if (*cache).generation == generation && (*cache).key.same(key) {
            return (*cache).owner;
        }
    }
    let mut owner = unsafe { CW_TCP_LISTENERS.get(key) }.copied();
    if owner.is_none() {
        // Zeros LLVM cannot see (see `opaque`): four known-zero words become a memset call.
        let zero = opaque(0) as u32;
        let wildcard = ListenerKey::from_words(key.netns, [zero; 4], key.port);
        owner = unsafe { CW_TCP_LISTENERS.get(&wildcard) }.copied();
    }
    let owner = owner.unwrap_or(0);
    // Programs do not nest on a CPU (as for the statistics cache), so no one else writes here.
    unsafe {
        (*cache).generation = generation;
        (*cache).key = *key;
        (*cache).owner = owner;
    }
    owner
}

#[inline(always)]
fn listener_key(ctx: &SockOpsContext) -> ListenerKey {
    // local_port is in host order in bpf_sock_ops.
    let port = ctx.local_port() as u16;
    ListenerKey::from_words(unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }, local_addr(ctx), port)
}

/// The socket's local address as IPv6 words in memory order (IPv4-mapped for AF_INET), all
/// zeros when unspecified.
#[inline(always)]
fn local_addr(ctx: &SockOpsContext) -> [u32; 4] {
    const AF_INET: u32 = 2;
    if ctx.family() == AF_INET {
        let ip = ctx.local_ip4();
        // Zeros LLVM cannot see (see `opaque`), or the wildcard's become a memset call.
        let zero = opaque(0) as u32;
        if ip == 0 { [zero; 4] } else { [zero, zero, MAPPED_WORD, ip] }
    } else {
        ctx.local_ip6()
    }
}

/// Counts the connect held in `slot` (from [`pending`]: a socket whose connect() happened before
/// the agent attached, or was not recorded, has none) and frees the slot. An established one's
/// latency: `rtt_ns`, the handshake's round trip, when known, else the clock since the start.
#[inline(always)]
fn finish_connect(slot: *mut PendingConnect, result: u8, rtt_ns: Option<u64>) {
    let (cgroup_id, class, start_ns) =
        unsafe { ((*slot).cgroup_id, (*slot).class, (*slot).start_ns) };
    unsafe { (*slot).start_ns = 0 }; // frees the slot
    let key = TcpStatsKey::new(cgroup_id, class);
    let result = usize::from(result) & (RESULTS - 1);
    let new = if result == usize::from(RESULT_ESTABLISHED) {
        let latency_ns = match rtt_ns {
            Some(ns) => ns,
            None => connect_clock_ns().wrapping_sub(start_ns),
        };
        let bucket = latency_slot(latency_ns) & (LATENCY_SLOTS - 1);
        stats::count(&STATS, &key, |s, shared| unsafe {
            stats::add(&raw mut (*s).connects[result], 1, shared);
            stats::add(&raw mut (*s).latency_sum_ns, latency_ns, shared);
            stats::add(&raw mut (*s).latency[bucket], 1, shared);
        })
    } else {
        stats::count(&STATS, &key, |s, shared| unsafe {
            stats::add(&raw mut (*s).connects[result], 1, shared);
        })
    };
    if new == Some(true) {
        new_key(&key);
    }
}

/// Counts a connection accepted on a listener of `cgroup_id`.
#[inline(always)]
fn count_accept(cgroup_id: u64) {
    let key = TcpStatsKey::new(cgroup_id, CLASS_ACCEPTED);
    let new = stats::count(&STATS, &key, |s, shared| unsafe {
        stats::add(&raw mut (*s).accepts, 1, shared);
    });
    if new == Some(true) {
        new_key(&key);
    }
}

static STATS: stats::Tables<TcpStatsKey, TcpStats> = stats::Tables {
    cache: &CW_TCP_STATS_CPU,
    table: &CW_TCP_STATS,
    epoch_index: config::TCP_STATS_EPOCH,
    lost: counter::LOST_TCP_STATS_TABLE,
    zero: &TcpStats::ZERO,
};

/// Tells userspace a key was counted for the first time on this CPU (see `EVENT_NEW_KEY`).
#[inline(always)]
fn new_key(key: &TcpStatsKey) {
    let ev = TcpEvent::new(key.cgroup_id, EVENT_NEW_KEY, key.class);
    if CW_TCP_EVENTS.output(&ev, NO_WAKEUP).is_err() {
        count(counter::LOST_TCP_RINGBUF_FULL);
    }
}
