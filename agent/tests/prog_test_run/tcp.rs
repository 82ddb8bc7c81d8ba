//! The TCP programs on real loopback connections: `cw_connect4`, `cw_connect6` and `cw_sock_ops`
//! attached to a test cgroup, a child process in it connecting to loopback addresses the test
//! configured into classes, and the kernel's counts read straight from `CW_TCP_STATS` and every
//! CPU's `CW_TCP_STATS_CPU`. `BPF_PROG_TEST_RUN` does not run `sock_addr` or `sock_ops`
//! programs, hence live traffic; it needs no packet data from a test run, so these run on every
//! kernel `cargo xtask vm-test` boots.
//!
//! Traffic goes to 127.0.0.0/8 and ::1 only; the cgroup is
//! `<cgroup2>/credwatch-test-<pid>-tcp-<name>`, removed at the end, programs detached with it.
//! The child is this test binary again, running [`child`] with its plan in [`CHILD_PLAN`].
use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    fs,
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::PathBuf,
    process::Command,
};

use agent_common::{
    EndpointKey, EndpointKind, EndpointValue, PORT_FLAG_DNS, PORT_FLAG_METADATA, counter, names,
    stats::{CacheSlot, cache_slot_of},
    tcp::{
        CLASS_ACCEPTED, CLASS_AWS_API, CLASS_CLUSTER, CLASS_DNS, CLASS_LOOPBACK, CLASS_METADATA,
        EVENT_NEW_KEY, RESULT_ESTABLISHED, RESULT_REFUSED, STATS_CACHE_SLOTS, STATS_TABLE_SIZE,
        TcpEvent, TcpStats, TcpStatsKey, TcpStatsSlot,
    },
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuValues, RingBuf, lpm_trie::Key},
    programs::{CgroupAttachMode, CgroupSockAddr, SockOps},
    util::nr_cpus,
};

use agent::kernel::connect_hooks;

use crate::{can_run, harness};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// The child's plan, one action a line: `listen ADDR`, `unlisten ADDR` (closes that listener),
/// `connect ADDR` (socket addresses), `cgroup PATH` (moves the child into that cgroup) or
/// `pin` (keeps the child on one CPU, and so the loopback handshakes it makes: their softirq
/// work runs where they were sent).
const CHILD_PLAN: &str = "CREDWATCH_TCP_CHILD_PLAN";
/// The line the child reports on: `RESULTS outcome,outcome,… ACCEPTED n`.
const CHILD_REPORT: &str = "TCP-CHILD";

/// The child (a no-op unless [`CHILD_PLAN`] is set): listens where told, connects where told (a
/// socket per attempt), then reports each attempt's outcome and how many connections its
/// listeners accepted.
#[test]
fn child() {
    let Ok(plan) = std::env::var(CHILD_PLAN) else { return };
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut results = Vec::new();
    for line in plan.lines() {
        if line == "pin" {
            // SAFETY: a zeroed cpu_set_t is the empty set; CPU 0 exists.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0);
            }
            continue;
        }
        let (what, arg) = line.split_once(' ').expect("ACTION ARG");
        if what == "cgroup" {
            fs::write(PathBuf::from(arg).join("cgroup.procs"), "0").expect("joining the cgroup");
            continue;
        }
        let addr: SocketAddr = arg.parse().expect("a socket address");
        match what {
            "listen" => listeners.push(TcpListener::bind(addr).expect("listen")),
            "unlisten" => listeners.retain(|l| l.local_addr().unwrap() != addr),
            "connect" => results.push(match TcpStream::connect(addr) {
                Ok(_) => "established".to_string(),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => "refused".to_string(),
                Err(e) => format!("{e}"),
            }),
            other => panic!("unknown action {other}"),
        }
    }
    let mut accepted = 0;
    for l in &listeners {
        l.set_nonblocking(true).unwrap();
        while l.accept().is_ok() {
            accepted += 1;
        }
    }
    println!("{CHILD_REPORT} RESULTS {} ACCEPTED {accepted}", results.join(","));
}

/// The programs attached to a fresh test cgroup; detached and the cgroup removed on drop.
struct Attached {
    ebpf: Option<Ebpf>,
    cgroup: PathBuf,
    cgroup_id: u64,
    /// Whether this kernel's sock_ops may attribute accepts (`GLOBAL_SOCK_OPS_CGROUP`).
    accepts: bool,
}

impl Drop for Attached {
    fn drop(&mut self) {
        drop(self.ebpf.take()); // detaches (the links are this process's)
        let _ = fs::remove_dir(&self.cgroup);
    }
}

fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// Whether the tests can run: root (else they fail, or skip with the local opt-out).
fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        can_run::cannot_run("attaching eBPF programs to a test cgroup needs root");
        return false;
    }
    true
}

/// What the tests configure: a metadata endpoint and a DNS port on loopback, and ranges inside
/// 127.0.0.0/8 and ::/0 (the range table as `Classifier::cidr_table` computes it for cluster
/// 127.0.0.2/32, 127.0.1.0/24, ::/0 and AWS API 127.0.0.3/32, 127.0.1.7/32: the /32 inside the
/// cluster /24 takes the cluster class, and ::ffff:0:0/96 hides ::/0 from IPv4).
struct Config {
    metadata_port: u16,
    dns_port: u16,
}

const RANGES: [(u32, [u8; 16], u8); 6] = {
    const fn m(v4: [u8; 4]) -> [u8; 16] {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
    }
    [
        (0, [0; 16], CLASS_CLUSTER),
        (96, m([0, 0, 0, 0]), 0),
        (128, m([127, 0, 0, 2]), CLASS_CLUSTER),
        (128, m([127, 0, 0, 3]), CLASS_AWS_API),
        (120, m([127, 0, 1, 0]), CLASS_CLUSTER),
        (128, m([127, 0, 1, 7]), CLASS_CLUSTER),
    ]
};

fn load(config: &Config, sock_ops_cgroup: bool) -> Result<Ebpf, String> {
    let mut ebpf = EbpfLoader::new()
        .override_global(names::GLOBAL_SOCK_OPS_CGROUP, &u8::from(sock_ops_cgroup), true)
        .load(OBJECT)
        .map_err(|e| format!("loading the object: {e}"))?;
    harness::flag_port(&mut ebpf, config.metadata_port, PORT_FLAG_METADATA);
    harness::flag_port(&mut ebpf, config.dns_port, PORT_FLAG_DNS);
    let mut endpoints: HashMap<_, EndpointKey, EndpointValue> =
        HashMap::try_from(ebpf.map_mut(names::MAP_ENDPOINTS).unwrap()).unwrap();
    let value = EndpointValue { kind: EndpointKind::Imds as u8, _pad: [0; 3] };
    endpoints.insert(&EndpointKey::v4([127, 0, 0, 1], config.metadata_port), &value, 0).unwrap();
    let mut trie: LpmTrie<_, [u8; 16], u8> =
        LpmTrie::try_from(ebpf.map_mut(names::MAP_TCP_CIDRS).unwrap()).unwrap();
    for (prefix, net, class) in RANGES {
        trie.insert(&Key::new(prefix, net), &class, 0).unwrap();
    }
    let mut cfg: Array<_, u32> = Array::try_from(ebpf.map_mut(names::MAP_CONFIG).unwrap()).unwrap();
    cfg.set(names::config::TCP_CIDRS, &(RANGES.len() as u32), 0).unwrap();
    let prog: &mut SockOps = ebpf.program_mut(names::PROG_SOCK_OPS).unwrap().try_into().unwrap();
    prog.load().map_err(|e| format!("{}: {e}", names::PROG_SOCK_OPS))?;
    // As the agent does: connect4 and connect6 only where sock_ops does not record connects.
    for &name in connect_hooks(sock_ops_cgroup) {
        let prog: &mut CgroupSockAddr = ebpf.program_mut(name).unwrap().try_into().unwrap();
        prog.load().map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(ebpf)
}

/// The first kernel whose `sock_ops` programs may call `bpf_get_current_cgroup_id` (and
/// `bpf_get_netns_cookie`) among those `cargo xtask vm-test` boots (6.1 may not; 6.8 may).
const SOCK_OPS_CGROUP_SINCE: (u32, u32) = (6, 8);

/// Which program records connects (agent-ebpf's tcp.rs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Recorder {
    /// As the agent chooses: `sock_ops` at TCP_CONNECT_CB where it may read the current cgroup
    /// (connect4 and connect6 not attached), else connect4 and connect6.
    AsTheAgent,
    /// connect4 and connect6, `sock_ops` loaded as on kernels where it may not read the cgroup
    /// (no accepts): that path, checked on every kernel.
    Connect4,
}

fn attach(config: &Config, test: &str, recorder: Recorder) -> Attached {
    let cg2 = cgroup2_mount().expect("a cgroup v2 mount");
    let cgroup = cg2.join(format!("credwatch-test-{}-tcp-{test}", std::process::id()));
    fs::create_dir(&cgroup).unwrap();
    let cgroup_id = fs::metadata(&cgroup).unwrap().ino();
    let without_cgroup = || load(config, false).unwrap_or_else(|e| panic!("{e}"));
    // As the agent does: without accept attribution where sock_ops may not read the cgroup.
    let (ebpf, accepts) = match recorder {
        Recorder::Connect4 => (without_cgroup(), false),
        Recorder::AsTheAgent => match load(config, true) {
            Ok(ebpf) => (ebpf, true),
            Err(e) => {
                // Not a silent fallback where the kernel has the helpers: the agent would then
                // lose accepts and pay connect4's run on every connect.
                assert!(
                    !can_run::kernel_at_least(SOCK_OPS_CGROUP_SINCE),
                    "{e}: this kernel's sock_ops may read the cgroup, yet the program was refused"
                );
                eprintln!("{e}: loading without accept attribution");
                (without_cgroup(), false)
            }
        },
    };
    let mut attached = Attached { ebpf: Some(ebpf), cgroup, cgroup_id, accepts };
    let fd = fs::File::open(&attached.cgroup).unwrap();
    let ebpf = attached.ebpf.as_mut().unwrap();
    for &name in connect_hooks(accepts) {
        let prog: &mut CgroupSockAddr = ebpf.program_mut(name).unwrap().try_into().unwrap();
        prog.attach(&fd, CgroupAttachMode::default()).unwrap();
    }
    let prog: &mut SockOps = ebpf.program_mut(names::PROG_SOCK_OPS).unwrap().try_into().unwrap();
    prog.attach(&fd, CgroupAttachMode::default()).unwrap();
    attached
}

impl Attached {
    fn ebpf(&mut self) -> &mut Ebpf {
        self.ebpf.as_mut().unwrap()
    }

    /// Runs the child in the test cgroup: (outcome of each connect, connections accepted).
    fn run(&self, listen: &[&str], connect: &[&str]) -> (Vec<String>, u64) {
        let plan: Vec<String> = listen
            .iter()
            .map(|a| format!("listen {a}"))
            .chain(connect.iter().map(|a| format!("connect {a}")))
            .collect();
        self.run_plan(&plan)
    }

    /// Runs the child in the test cgroup with its plan (see [`CHILD_PLAN`]).
    fn run_plan(&self, plan: &[String]) -> (Vec<String>, u64) {
        let procs =
            CString::new(self.cgroup.join("cgroup.procs").into_os_string().into_encoded_bytes())
                .unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["tcp::child", "--exact", "--nocapture", "--test-threads=1"]);
        cmd.env(CHILD_PLAN, plan.join("\n"));
        // SAFETY: between fork and exec only async-signal-safe calls (open, write, close) on
        // memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        let out = cmd.output().expect("running the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        let report = stdout
            .lines()
            .find_map(|l| l.split_once(CHILD_REPORT).map(|(_, r)| r.trim().to_string()))
            .unwrap_or_else(|| panic!("the child did not report: {stdout}"));
        let fields: Vec<&str> = report.split(' ').collect();
        let ["RESULTS", results, "ACCEPTED", accepted] = fields[..] else {
            panic!("the child said {report}");
        };
        let results = results.split(',').filter(|r| !r.is_empty()).map(String::from).collect();
        (results, accepted.parse().unwrap())
    }

    fn shared(&mut self) -> BTreeMap<(u64, u8), TcpStats> {
        let table: HashMap<_, TcpStatsKey, TcpStats> =
            HashMap::try_from(self.ebpf().map(names::MAP_TCP_STATS).unwrap()).unwrap();
        table.iter().map(|r| r.unwrap()).map(|(k, v)| ((k.cgroup_id, k.class), v)).collect()
    }

    fn cached(&mut self) -> Vec<(usize, u32, TcpStatsSlot)> {
        let cache: PerCpuArray<_, TcpStatsSlot> =
            PerCpuArray::try_from(self.ebpf().map(names::MAP_TCP_STATS_CPU).unwrap()).unwrap();
        let mut out = Vec::new();
        for index in 0..STATS_CACHE_SLOTS {
            for (cpu, slot) in cache.get(&index, 0).unwrap().iter().enumerate() {
                if slot.key.cgroup_id != 0 {
                    out.push((cpu, index, *slot));
                }
            }
        }
        out
    }

    /// Every count of this test's cgroup, shared table and caches added up, by class.
    fn counts(&mut self) -> BTreeMap<u8, TcpStats> {
        self.counts_of(self.cgroup_id)
    }

    /// The same for any cgroup (one below the test's).
    fn counts_of(&mut self, cgroup_id: u64) -> BTreeMap<u8, TcpStats> {
        let mut all = BTreeMap::new();
        let shared = self.shared().into_iter().map(|((c, class), s)| (c, class, s));
        let cached =
            self.cached().into_iter().map(|(_, _, s)| (s.key.cgroup_id, s.key.class, s.stats));
        for (c, class, s) in shared.chain(cached) {
            if c == cgroup_id {
                add(all.entry(class).or_insert(TcpStats::ZERO), &s);
            }
        }
        all
    }

    fn counter(&mut self, index: u32) -> u64 {
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf().map(names::MAP_COUNTERS).unwrap()).unwrap();
        counters.get(&index, 0).unwrap().iter().sum()
    }

    /// The (cgroup, class) of every new-key event sent.
    fn new_keys(&mut self) -> BTreeSet<(u64, u8)> {
        let mut ring: RingBuf<_> =
            RingBuf::try_from(self.ebpf().map_mut(names::MAP_TCP_EVENTS).unwrap()).unwrap();
        let mut keys = BTreeSet::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), size_of::<TcpEvent>());
            // SAFETY: length checked; TcpEvent is plain old data.
            let ev: TcpEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            assert_eq!(ev.event, EVENT_NEW_KEY);
            keys.insert((ev.cgroup_id, ev.class));
        }
        keys
    }

    fn set_epoch(&mut self, epoch: u32) {
        let mut cfg: Array<_, u32> =
            Array::try_from(self.ebpf().map_mut(names::MAP_CONFIG).unwrap()).unwrap();
        cfg.set(names::config::TCP_STATS_EPOCH, &epoch, 0).unwrap();
    }

    /// Holds `key`'s cache slot on every CPU with another key, active at `epoch`.
    fn hold_cache_slot(&mut self, key: &TcpStatsKey, epoch: u64) {
        let mut cache: PerCpuArray<_, TcpStatsSlot> =
            PerCpuArray::try_from(self.ebpf().map_mut(names::MAP_TCP_STATS_CPU).unwrap()).unwrap();
        let filler = CacheSlot {
            key: TcpStatsKey { cgroup_id: u64::MAX, class: key.class, _pad: [0; 7] },
            active_epoch: epoch,
            stats: TcpStats::ZERO,
        };
        let values =
            PerCpuValues::try_from(vec![filler; nr_cpus().unwrap().get() as usize]).unwrap();
        let index = cache_slot_of(key.cgroup_id, u16::from(key.class), STATS_CACHE_SLOTS);
        cache.set(index, values, 0).unwrap();
    }
}

fn add(to: &mut TcpStats, s: &TcpStats) {
    for (a, b) in to.connects.iter_mut().zip(s.connects) {
        *a += b;
    }
    to.accepts += s.accepts;
    to.latency_sum_ns += s.latency_sum_ns;
    for (a, b) in to.latency.iter_mut().zip(s.latency) {
        *a += b;
    }
}

/// A port nothing listens on (TCP), which the kernel just handed out.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Also free for UDP and IPv6, so no test peer shares it.
    let _ = UdpSocket::bind(("127.0.0.1", port));
    port
}

fn free_port6() -> u16 {
    TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap().port()
}

/// Expected counts: connects per (class, result), from what the child saw.
fn expect(plan: &[(String, u8)], results: &[String]) -> BTreeMap<u8, [u64; 4]> {
    assert_eq!(plan.len(), results.len(), "{results:?}");
    let mut want: BTreeMap<u8, [u64; 4]> = BTreeMap::new();
    for ((addr, class), result) in plan.iter().zip(results) {
        let slot = match result.as_str() {
            "established" => RESULT_ESTABLISHED,
            "refused" => RESULT_REFUSED,
            other => panic!("{addr}: {other}, which this test does not expect"),
        };
        want.entry(*class).or_default()[usize::from(slot)] += 1;
    }
    want
}

#[test]
fn connects_are_counted_by_class_and_result_and_accepts_by_listener() {
    connects_by_class_and_result(Recorder::AsTheAgent);
}

/// The same with connect4 and connect6 recording connects, as on kernels up to 6.1, which is
/// otherwise only checked on those kernels (`cargo xtask vm-test`).
#[test]
fn connects_recorded_by_connect4_are_counted_by_class_and_result() {
    connects_by_class_and_result(Recorder::Connect4);
}

fn connects_by_class_and_result(recorder: Recorder) {
    if !root() {
        return;
    }
    // One test at a time in this binary: the packet tests count on the sockets made meanwhile.
    let _others = harness::loaded();
    let config = Config { metadata_port: free_port(), dns_port: free_port() };
    let (open, open6, closed) = (free_port(), free_port6(), free_port());
    let (md, dns) = (config.metadata_port, config.dns_port);
    let mut k = attach(&config, &format!("classes-{recorder:?}"), recorder);
    // (address connected to, the class the kernel must count it under)
    let plan: Vec<(String, u8)> = [
        (format!("127.0.0.1:{open}"), CLASS_LOOPBACK),
        (format!("127.0.0.1:{open}"), CLASS_LOOPBACK),
        (format!("127.0.0.1:{open}"), CLASS_LOOPBACK),
        (format!("127.0.0.1:{closed}"), CLASS_LOOPBACK),
        (format!("127.0.0.1:{closed}"), CLASS_LOOPBACK),
        (format!("127.0.0.2:{closed}"), CLASS_CLUSTER),
        (format!("127.0.0.3:{closed}"), CLASS_AWS_API),
        // An AWS API /32 inside the cluster /24: cluster, as classify checks cluster first.
        (format!("127.0.1.7:{closed}"), CLASS_CLUSTER),
        (format!("127.0.1.8:{closed}"), CLASS_CLUSTER),
        (format!("[::1]:{open6}"), CLASS_CLUSTER), // ::/0 is a cluster range...
        (format!("[::1]:{open6}"), CLASS_CLUSTER),
        (format!("[::ffff:127.0.0.1]:{open}"), CLASS_LOOPBACK), // ...IPv4-mapped is not in it
        (format!("[::ffff:127.0.0.3]:{closed}"), CLASS_AWS_API),
        (format!("127.0.0.1:{md}"), CLASS_METADATA),
        (format!("127.0.0.1:{md}"), CLASS_METADATA),
        (format!("127.0.0.2:{md}"), CLASS_CLUSTER), // the endpoint's port, not its address
        (format!("[::ffff:127.0.0.1]:{md}"), CLASS_METADATA),
        (format!("127.0.0.1:{dns}"), CLASS_DNS), // a DNS port wins over loopback...
        (format!("[::1]:{dns}"), CLASS_DNS),     // ...and over a range
    ]
    .into();
    let listen = [format!("127.0.0.1:{open}"), format!("[::1]:{open6}"), format!("127.0.0.1:{md}")];
    let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
    let connect: Vec<&str> = plan.iter().map(|(a, _)| a.as_str()).collect();
    let (results, accepted) = k.run(&listen, &connect);

    let want = expect(&plan, &results);
    assert_eq!(want[&CLASS_LOOPBACK], [4, 2, 0, 0], "the child's outcomes: {results:?}");
    assert_eq!(accepted, 4 + 2 + 3);
    let counts = k.counts();
    let got: BTreeMap<u8, [u64; 4]> = counts
        .iter()
        .filter(|&(&class, _)| class != CLASS_ACCEPTED)
        .map(|(&class, s)| (class, s.connects))
        .collect();
    assert_eq!(got, want);
    for (class, s) in &counts {
        let established = s.connects[usize::from(RESULT_ESTABLISHED)];
        assert_eq!(s.latency.iter().sum::<u64>(), established, "class {class}: one latency each");
        assert_eq!(s.latency_sum_ns > 0, established > 0, "class {class}");
    }
    let accepts = counts.get(&CLASS_ACCEPTED).map_or(0, |s| s.accepts);
    if k.accepts {
        assert_eq!(accepts, accepted, "accepts of the listeners in the cgroup");
    } else {
        if recorder == Recorder::AsTheAgent {
            can_run::predates("this kernel's sock_ops cannot read the cgroup: accepts not counted");
        }
        assert_eq!(accepts, 0);
    }
    let keys: BTreeSet<(u64, u8)> = counts.keys().map(|&class| (k.cgroup_id, class)).collect();
    assert_eq!(k.new_keys(), keys, "a new-key event for each key counted, none for others");
    for lost in
        [counter::LOST_TCP_TABLE, counter::LOST_TCP_STATS_TABLE, counter::LOST_TCP_RINGBUF_FULL]
    {
        assert_eq!(k.counter(lost), 0, "counter {lost}");
    }
}

/// Cgroups below a test's cgroup, removed (before it) on drop.
struct Pods(Vec<PathBuf>);

impl Drop for Pods {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Each CPU remembers the last listener an accept was attributed to (agent-ebpf's tcp.rs,
/// `listener_owner`); a listen() anywhere must make it look again. Here, on one CPU, pod A
/// listens on a port and is connected to twice, closes its listener, and pod B listens on the
/// same port and is connected to once: the third accept is B's. Remembered without the
/// listen() invalidating it, all three would be A's.
#[test]
fn accepts_follow_a_port_listened_on_again_by_another_cgroup() {
    if !root() {
        return;
    }
    let _others = harness::loaded();
    let config = Config { metadata_port: free_port(), dns_port: free_port() };
    let mut k = attach(&config, "relisten", Recorder::AsTheAgent);
    if !k.accepts {
        can_run::predates("this kernel's sock_ops cannot read the cgroup: accepts not counted");
        return;
    }
    let pods = Pods(vec![k.cgroup.join("a"), k.cgroup.join("b")]);
    let mut ids = Vec::new();
    for dir in &pods.0 {
        fs::create_dir(dir).unwrap();
        ids.push(fs::metadata(dir).unwrap().ino());
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let (a, b) = (pods.0[0].display(), pods.0[1].display());
    let plan: Vec<String> = [
        "pin".to_string(),
        format!("cgroup {a}"),
        format!("listen {addr}"),
        format!("connect {addr}"),
        format!("connect {addr}"),
        format!("unlisten {addr}"),
        format!("cgroup {b}"),
        format!("listen {addr}"),
        format!("connect {addr}"),
    ]
    .into();
    let (results, accepted) = k.run_plan(&plan);
    assert_eq!(results, ["established"; 3], "the child's outcomes");
    assert_eq!(accepted, 1, "B's listener accepted the last connection");
    let accepts =
        |k: &mut Attached, id| k.counts_of(id).get(&CLASS_ACCEPTED).map_or(0, |s| s.accepts);
    assert_eq!((accepts(&mut k, ids[0]), accepts(&mut k, ids[1])), (2, 1), "accepts of A and B");
    drop(pods);
}

#[test]
fn a_held_cache_slot_sends_counts_to_the_shared_table_and_a_full_table_counts_the_loss() {
    if !root() {
        return;
    }
    let _others = harness::loaded();
    let config = Config { metadata_port: free_port(), dns_port: free_port() };
    let (open, closed) =
        (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut k = attach(&config, "shared", Recorder::AsTheAgent);
    let key = |class| TcpStatsKey { cgroup_id: k.cgroup_id, class, _pad: [0; 7] };
    let (loopback, dns) = (key(CLASS_LOOPBACK), key(CLASS_DNS));
    k.hold_cache_slot(&loopback, 0);

    // Held by another key active at the current epoch (0): counted in the shared table.
    let (results, _) = k.run(&[&open], &[&open, &open, &closed]);
    assert_eq!(results, ["established", "established", "refused"]);
    assert_eq!(k.shared()[&(k.cgroup_id, CLASS_LOOPBACK)].connects, [2, 1, 0, 0]);
    let cgroup_id = k.cgroup_id;
    let mine = |s: &TcpStatsSlot, class| s.key.cgroup_id == cgroup_id && s.key.class == class;
    assert!(!k.cached().iter().any(|(_, _, s)| mine(s, CLASS_LOOPBACK)));

    // Two epochs later the holder is idle (userspace has read it): the key takes the slot and
    // counts there from zero; the shared entry keeps what it had.
    k.set_epoch(2);
    let (results, _) = k.run(&[&open], &[&open]);
    assert_eq!(results, ["established"]);
    assert_eq!(k.shared()[&(k.cgroup_id, CLASS_LOOPBACK)].connects, [2, 1, 0, 0]);
    let in_cache: Vec<_> =
        k.cached().into_iter().filter(|(_, _, s)| mine(s, CLASS_LOOPBACK)).collect();
    assert_eq!(in_cache.len(), 1, "{in_cache:?}");
    assert_eq!(in_cache[0].2.stats.connects, [1, 0, 0, 0]);
    assert_eq!(in_cache[0].2.active_epoch, 2);

    // The shared table full, the DNS key's slot held by a key active at epoch 2: not counted,
    // but counted as lost.
    k.hold_cache_slot(&dns, 2);
    let mut fillers = 0u64;
    {
        let mut table: HashMap<_, TcpStatsKey, TcpStats> =
            HashMap::try_from(k.ebpf().map_mut(names::MAP_TCP_STATS).unwrap()).unwrap();
        let filler = |i: u64| TcpStatsKey { cgroup_id: 1 << 62 | i, class: 0, _pad: [0; 7] };
        while table.insert(&filler(fillers), &TcpStats::ZERO, 0).is_ok() {
            fillers += 1;
        }
    }
    assert!(fillers > 0 && fillers < u64::from(STATS_TABLE_SIZE));
    let (results, _) = k.run(&[], &[&format!("127.0.0.1:{}", config.dns_port)]);
    assert_eq!(results, ["refused"]);
    assert!(!k.shared().contains_key(&(k.cgroup_id, CLASS_DNS)));
    assert!(!k.cached().iter().any(|(_, _, s)| mine(s, CLASS_DNS)));
    assert_eq!(k.counter(counter::LOST_TCP_STATS_TABLE), 1);
}
