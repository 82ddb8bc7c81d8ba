//! TCP connects and accepts. `cgroup/connect4|6` runs in the connect() call, before any DNAT:
//! it records the address the application asked for, its cgroup and the time in the socket's slot
//! of a direct-mapped table (see `agent_common::tcp::PendingConnect`). `sock_ops` on the same
//! cgroup then reports the outcome, in whatever context the
//! kernel is in (often softirq), which is why nothing there depends on the current task:
//! - ACTIVE_ESTABLISHED: the handshake completed;
//! - RTO with its third argument set: the SYN retransmission timer gave up (timeout);
//! - STATE SYN_SENT → CLOSE: refused when a segment (the RST) arrived, else the application or an
//!   ICMP error ended it;
//! - LISTEN (process context) records which cgroup listens on a port, so that
//!   PASSIVE_ESTABLISHED can attribute accepted connections.
use agent_common::{
    counter,
    tcp::{
        CONNECT_TABLE_SIZE, EVENT_ACCEPT, EVENT_CONNECT, ListenerKey, PendingConnect, RESULT_ERROR,
        RESULT_ESTABLISHED, RESULT_REFUSED, RESULT_TIMEOUT, TcpEvent,
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
    programs::{SockAddrContext, SockOpsContext},
};

use crate::maps::{CW_TCP_CONNECTS, CW_TCP_EVENTS, CW_TCP_LISTENERS, NO_WAKEUP, count};

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
    record_connect(ctx, addr, sa.user_port);
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
    record_connect(ctx, addr, sa.user_port);
}

#[inline(always)]
fn record_connect(ctx: &SockAddrContext, addr: [u8; 16], user_port: u32) {
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
    unsafe {
        *slot = PendingConnect {
            cookie,
            start_ns: now,
            cgroup_id: bpf_get_current_cgroup_id(),
            addr,
            // user_port holds the port in network order in its low 16 bits.
            port: u16::from_be(user_port as u16),
            expired: 0,
            _pad: [0; 5],
        };
    }
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
            emit(cgroup_id, 0, [0; 16], key.port, EVENT_ACCEPT, RESULT_ESTABLISHED);
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

/// Reports the connect held in `slot` (from [`pending`]: a socket whose connect() happened before
/// the agent attached, or was not recorded, has none) and frees the slot.
#[inline(always)]
fn finish_connect(slot: *mut PendingConnect, result: u8) {
    let p = unsafe { *slot };
    unsafe { (*slot).start_ns = 0 }; // frees the slot
    let now = unsafe { bpf_ktime_get_ns() };
    emit(p.cgroup_id, now.wrapping_sub(p.start_ns), p.addr, p.port, EVENT_CONNECT, result);
}

#[inline(always)]
fn emit(cgroup_id: u64, latency_ns: u64, addr: [u8; 16], port: u16, event: u8, result: u8) {
    let ev = TcpEvent { cgroup_id, latency_ns, addr, port, event, result, _pad: [0; 4] };
    if CW_TCP_EVENTS.output(&ev, NO_WAKEUP).is_err() {
        count(counter::LOST_TCP_RINGBUF_FULL);
    }
}
