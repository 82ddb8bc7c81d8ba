//! TCP connects and accepts, counted here per (cgroup, destination class): nothing crosses to
//! userspace per connection. `cgroup/connect4|6` runs in the connect() call, before any DNAT: it
//! classifies the address the application asked for (metadata endpoint, DNS port, configured
//! range, loopback, external) and records the class, its cgroup and the time in the socket's slot
//! of a direct-mapped table (see `agent_common::tcp::PendingConnect`). `sock_ops` on the same
//! cgroup then counts the outcome (`CW_TCP_STATS` through `stats`), in whatever context the
//! kernel is in (often softirq), which is why nothing there depends on the current task:
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
    EndpointKey, PORT_FLAG_DNS, PORT_FLAG_METADATA, counter,
    names::config,
    tcp::{
        CLASS_ACCEPTED, CLASS_DNS, CLASS_EXTERNAL, CLASS_LOOPBACK, CLASS_METADATA,
        CONNECT_TABLE_SIZE, EVENT_NEW_KEY, LATENCY_BOUNDS_NS, LATENCY_SLOTS, ListenerKey,
        PendingConnect, RESULT_ERROR, RESULT_ESTABLISHED, RESULT_REFUSED, RESULT_TIMEOUT, RESULTS,
        TcpEvent, TcpStats, TcpStatsKey,
    },
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns,
    },
    maps::lpm_trie::Key,
    programs::{SockAddrContext, SockOpsContext},
};

use crate::{
    maps::{
        CW_CONFIG, CW_ENDPOINTS, CW_PORTS, CW_TCP_CIDRS, CW_TCP_CONNECTS, CW_TCP_EVENTS,
        CW_TCP_LISTENERS, CW_TCP_STATS, CW_TCP_STATS_CPU, NO_WAKEUP, count,
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
const STALE_NS: u64 = 300_000_000_000;

/// connect() on an IPv4 TCP socket.
pub fn connect4(ctx: &SockAddrContext) {
    let sa = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return;
    }
    let ip = sa.user_ip4.to_ne_bytes(); // network order in memory
    let mut addr = [0u8; 16];
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12..].copy_from_slice(&ip);
    record_connect(ctx, &addr, sa.user_port);
}

/// connect() on an IPv6 TCP socket (IPv4-mapped addresses included).
pub fn connect6(ctx: &SockAddrContext) {
    let sa = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return;
    }
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = sa.user_ip6[i].to_ne_bytes();
        addr[i * 4..i * 4 + 4].copy_from_slice(&w);
        i += 1;
    }
    record_connect(ctx, &addr, sa.user_port);
}

#[inline(always)]
fn record_connect(ctx: &SockAddrContext, addr: &[u8; 16], user_port: u32) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(slot) = CW_TCP_CONNECTS.get_ptr_mut(slot_of(cookie)) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let held = unsafe { (*slot).start_ns };
    if held != 0 && unsafe { (*slot).cookie } != cookie && now.wrapping_sub(held) < STALE_NS {
        // Another connect in progress holds the slot: this one is not recorded.
        count(counter::LOST_TCP_TABLE);
        return;
    }
    // user_port holds the port in network order in its low 16 bits.
    let class = class_of(addr, u16::from_be(user_port as u16));
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
fn class_of(addr: &[u8; 16], port: u16) -> u8 {
    let flags = CW_PORTS.get(u32::from(port)).map_or(0, |f| *f);
    if flags & PORT_FLAG_METADATA != 0
        && unsafe { CW_ENDPOINTS.get(&EndpointKey::new(*addr, port)) }.is_some()
    {
        return CLASS_METADATA;
    }
    if flags & PORT_FLAG_DNS != 0 {
        return CLASS_DNS;
    }
    // The range lookup (a trie walk in a helper) only when ranges are configured.
    if CW_CONFIG.get(config::TCP_CIDRS).is_some_and(|n| *n != 0)
        && let Some(class) = CW_TCP_CIDRS.get(&Key::new(128, *addr))
        && *class != CLASS_EXTERNAL
    {
        return *class;
    }
    if is_loopback(addr) { CLASS_LOOPBACK } else { CLASS_EXTERNAL }
}

/// 127.0.0.0/8 (IPv4-mapped) or ::1.
#[inline(always)]
fn is_loopback(addr: &[u8; 16]) -> bool {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    if word(0) != 0 || word(4) != 0 {
        return false;
    }
    let third = word(8);
    (third == u32::from_ne_bytes([0, 0, 0xff, 0xff]) && addr[12] == 127)
        || (third == 0 && word(12) == u32::from_ne_bytes([0, 0, 0, 1]))
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
        // Ask for the state and timeout callbacks on this socket only.
        let flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG;
        let _ = ctx.set_cb_flags(flags as i32);
    } else if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        if let Some(slot) = pending(ctx) {
            finish_connect(slot, RESULT_ESTABLISHED);
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
            finish_connect(slot, result);
        }
    } else if op == BPF_SOCK_OPS_TCP_LISTEN_CB {
        if unsafe { core::ptr::read_volatile(&CW_SOCK_OPS_CGROUP) } == 0 {
            return; // no listeners, so no accepts: this kernel cannot tell their cgroup here
        }
        // listen() runs in the listening process: the current cgroup is the owner's.
        let key = listener_key(ctx);
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        if CW_TCP_LISTENERS.insert(&key, &cgroup_id, 0).is_err() {
            count(counter::LOST_TCP_TABLE);
        }
    } else if op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        if unsafe { core::ptr::read_volatile(&CW_SOCK_OPS_CGROUP) } == 0 {
            return; // no listeners recorded (above); also keeps bpf_get_netns_cookie dead code
        }
        // The listener on this exact address, else a wildcard one on the port.
        let mut key = listener_key(ctx);
        let mut owner = unsafe { CW_TCP_LISTENERS.get(&key) }.copied();
        if owner.is_none() {
            key.addr = [0; 16];
            owner = unsafe { CW_TCP_LISTENERS.get(&key) }.copied();
        }
        if let Some(cgroup_id) = owner {
            count_accept(cgroup_id);
        }
    }
}

#[inline(always)]
fn listener_key(ctx: &SockOpsContext) -> ListenerKey {
    ListenerKey {
        netns: unsafe { bpf_get_netns_cookie(ctx.as_ptr()) },
        addr: local_addr(ctx),
        // local_port is in host order in bpf_sock_ops.
        port: ctx.local_port() as u16,
        _pad: [0; 6],
    }
}

/// The socket's local address as IPv6 (IPv4-mapped for AF_INET), all zeros when unspecified.
#[inline(always)]
fn local_addr(ctx: &SockOpsContext) -> [u8; 16] {
    const AF_INET: u32 = 2;
    let mut addr = [0u8; 16];
    if ctx.family() == AF_INET {
        let ip = ctx.local_ip4();
        if ip != 0 {
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..].copy_from_slice(&ip.to_ne_bytes());
        }
    } else {
        let words = ctx.local_ip6();
        let mut i = 0;
        while i < 4 {
            addr[i * 4..i * 4 + 4].copy_from_slice(&words[i].to_ne_bytes());
            i += 1;
        }
    }
    addr
}

/// Counts the connect held in `slot` (from [`pending`]: a socket whose connect() happened before
/// the agent attached, or was not recorded, has none) and frees the slot.
#[inline(always)]
fn finish_connect(slot: *mut PendingConnect, result: u8) {
    let (cgroup_id, class, start_ns) =
        unsafe { ((*slot).cgroup_id, (*slot).class, (*slot).start_ns) };
    unsafe { (*slot).start_ns = 0 }; // frees the slot
    let key = TcpStatsKey { cgroup_id, class, _pad: [0; 7] };
    let Some(entry) = stats_entry(&key) else {
        return;
    };
    let result = usize::from(result) & (RESULTS - 1);
    unsafe { entry.add(|s| &raw mut (*s).connects[result], 1) };
    if result == usize::from(RESULT_ESTABLISHED) {
        let latency_ns = unsafe { bpf_ktime_get_ns() }.wrapping_sub(start_ns);
        let bucket = latency_slot(latency_ns);
        unsafe {
            entry.add(|s| &raw mut (*s).latency_sum_ns, latency_ns);
            entry.add(|s| &raw mut (*s).latency[bucket], 1);
        }
    }
    if entry.new {
        new_key(&key);
    }
}

/// Counts a connection accepted on a listener of `cgroup_id`.
#[inline(always)]
fn count_accept(cgroup_id: u64) {
    let key = TcpStatsKey { cgroup_id, class: CLASS_ACCEPTED, _pad: [0; 7] };
    let Some(entry) = stats_entry(&key) else {
        return;
    };
    unsafe { entry.add(|s| &raw mut (*s).accepts, 1) };
    if entry.new {
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

#[inline(always)]
fn stats_entry(key: &TcpStatsKey) -> Option<stats::Entry<TcpStats>> {
    stats::entry(&STATS, key)
}

/// The histogram slot of a latency, without a branch per bound (as `dns::record_stats`): the
/// number of bounds below it.
#[inline(always)]
fn latency_slot(latency_ns: u64) -> usize {
    let mut slot = 0u64;
    let mut i = 0;
    while i < LATENCY_BOUNDS_NS.len() {
        // 1 when latency_ns > bound (both below 2^63).
        slot += opaque(LATENCY_BOUNDS_NS[i].wrapping_sub(latency_ns & (u64::MAX >> 1))) >> 63;
        i += 1;
    }
    slot as usize & (LATENCY_SLOTS - 1)
}

/// Tells userspace a key was counted for the first time on this CPU (see `EVENT_NEW_KEY`).
#[inline(always)]
fn new_key(key: &TcpStatsKey) {
    let ev =
        TcpEvent { cgroup_id: key.cgroup_id, event: EVENT_NEW_KEY, class: key.class, _pad: [0; 6] };
    if CW_TCP_EVENTS.output(&ev, NO_WAKEUP).is_err() {
        count(counter::LOST_TCP_RINGBUF_FULL);
    }
}
