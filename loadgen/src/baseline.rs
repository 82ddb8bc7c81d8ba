//! `baseline`: empty programs attached where credwatch attaches its own, held until SIGTERM or
//! SIGINT and then detached: what the benchmarks compare credwatch against (the floor any agent
//! observing at these hooks pays). The programs are unshipped-ebpf's, embedded by build.rs.
use std::{fs::File, path::Path};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps},
};

/// The object built by build.rs from unshipped-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/unshipped-ebpf"));

/// An empty `cgroup_skb` program (attached egress and ingress): the baseline of `bench fastpath`.
pub const PROG_EMPTY_SKB: &str = "cw_bench_empty";
/// Empty programs at credwatch's other hooks (`--all-hooks`).
pub const PROG_EMPTY_CONNECT4: &str = "cw_bench_empty_connect4";
pub const PROG_EMPTY_CONNECT6: &str = "cw_bench_empty_connect6";
pub const PROG_EMPTY_SOCK_OPS: &str = "cw_bench_empty_sock_ops";
/// For tests: a connect4 program that rewrites one destination (`redirect`).
pub const PROG_REDIRECT_CONNECT4: &str = "cw_test_redirect_connect4";
/// Every program of the object (the test below checks it holds exactly these).
#[cfg(test)]
pub const PROGRAMS: &[&str] = &[
    PROG_EMPTY_SKB,
    PROG_EMPTY_CONNECT4,
    PROG_EMPTY_CONNECT6,
    PROG_EMPTY_SOCK_OPS,
    PROG_REDIRECT_CONNECT4,
];

/// Attaches the empty `cgroup_skb` program both ways to `cgroup` (with `all_hooks`, the empty
/// connect4, connect6 and sock_ops programs too), prints `ready`, waits for SIGTERM or SIGINT and
/// detaches. Refuses a cgroup v2 root: benchmarks attach only to subtrees they create.
pub fn run(cgroup: &Path, all_hooks: bool) -> Result<String, String> {
    if is_cgroup2_root(cgroup) {
        return Err(format!("{} is a cgroup v2 root; refusing", cgroup.display()));
    }
    // Blocked before anything is attached: a signal that comes early is waited for, not fatal.
    let signals = block_stop_signals()?;
    raise_memlock_limit();
    let mut ebpf = Ebpf::load(OBJECT).map_err(|e| format!("loading the baseline programs: {e}"))?;
    let cgroup_fd =
        File::open(cgroup).map_err(|e| format!("opening cgroup {}: {e}", cgroup.display()))?;
    let mut attached = Vec::new();
    let prog: &mut CgroupSkb = program(&mut ebpf, PROG_EMPTY_SKB)?;
    prog.load().map_err(|e| format!("{PROG_EMPTY_SKB}: {e}"))?;
    for attach_type in [CgroupSkbAttachType::Egress, CgroupSkbAttachType::Ingress] {
        prog.attach(&cgroup_fd, attach_type, CgroupAttachMode::default())
            .map_err(|e| format!("{PROG_EMPTY_SKB}: {e}"))?;
    }
    attached.push(PROG_EMPTY_SKB);
    if all_hooks {
        for name in [PROG_EMPTY_CONNECT4, PROG_EMPTY_CONNECT6] {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(|e| format!("{name}: {e}"))?;
            prog.attach(&cgroup_fd, CgroupAttachMode::default())
                .map_err(|e| format!("{name}: {e}"))?;
            attached.push(name);
        }
        let prog: &mut SockOps = program(&mut ebpf, PROG_EMPTY_SOCK_OPS)?;
        prog.load().map_err(|e| format!("{PROG_EMPTY_SOCK_OPS}: {e}"))?;
        prog.attach(&cgroup_fd, CgroupAttachMode::default())
            .map_err(|e| format!("{PROG_EMPTY_SOCK_OPS}: {e}"))?;
        attached.push(PROG_EMPTY_SOCK_OPS);
    }
    println!("ready");
    let signal = wait(&signals)?;
    // Dropping the object closes the links: the programs are detached.
    drop(ebpf);
    let names: Vec<String> = attached.iter().map(|n| format!("{n:?}")).collect();
    Ok(format!(r#"{{"op":"baseline","attached":[{}],"signal":{signal}}}"#, names.join(",")))
}

/// `redirect`: attaches the test program that rewrites IPv4 connects to `from` into `to` (as
/// Cilium's socket-level load balancing does) to `cgroup`, prints `ready`, waits for SIGTERM or
/// SIGINT and detaches. Refuses a cgroup v2 root, like `run`.
pub fn redirect(
    cgroup: &Path,
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
) -> Result<String, String> {
    if is_cgroup2_root(cgroup) {
        return Err(format!("{} is a cgroup v2 root; refusing", cgroup.display()));
    }
    // Test addresses only (loopback, TEST-NET-1): nothing may be sent to a real one.
    for a in [&from, &to] {
        let [a0, a1, a2, _] = a.ip().octets();
        if !(a.ip().is_loopback() || (a0, a1, a2) == (192, 0, 2)) {
            return Err(format!("{a}: only loopback or 192.0.2.0/24 addresses"));
        }
    }
    let signals = block_stop_signals()?;
    raise_memlock_limit();
    // bpf_sock_addr holds both in network order (the port in the low 16 bits).
    let addr = |a: &std::net::SocketAddrV4| u32::from_ne_bytes(a.ip().octets());
    let port = |a: &std::net::SocketAddrV4| u32::from(u16::from_ne_bytes(a.port().to_be_bytes()));
    let mut ebpf = aya::EbpfLoader::new()
        .override_global("CW_REDIRECT_FROM_ADDR", &addr(&from), true)
        .override_global("CW_REDIRECT_FROM_PORT", &port(&from), true)
        .override_global("CW_REDIRECT_TO_ADDR", &addr(&to), true)
        .override_global("CW_REDIRECT_TO_PORT", &port(&to), true)
        .load(OBJECT)
        .map_err(|e| format!("loading the redirect program: {e}"))?;
    let cgroup_fd =
        File::open(cgroup).map_err(|e| format!("opening cgroup {}: {e}", cgroup.display()))?;
    let name = PROG_REDIRECT_CONNECT4;
    let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
    prog.load().map_err(|e| format!("{name}: {e}"))?;
    prog.attach(&cgroup_fd, CgroupAttachMode::default()).map_err(|e| format!("{name}: {e}"))?;
    println!("ready");
    let signal = wait(&signals)?;
    drop(ebpf);
    Ok(format!(r#"{{"op":"redirect","from":"{from}","to":"{to}","signal":{signal}}}"#))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("{name} missing from the object"))?;
    prog.try_into().map_err(|e| format!("{name}: {e}"))
}

/// Whether `path` is where a cgroup v2 hierarchy is mounted (its root cgroup).
fn is_cgroup2_root(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false; // does not exist: opening it fails with a clearer error
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(2) == Some(&"cgroup2") && Path::new(f[1]).canonicalize().is_ok_and(|m| m == path)
    })
}

/// Blocks SIGTERM and SIGINT for this thread (the only one), so that [`wait`] receives them.
fn block_stop_signals() -> Result<libc::sigset_t, String> {
    // SAFETY: the set is initialised by sigemptyset before use; the calls only read and write it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!("blocking SIGTERM: {}", std::io::Error::from_raw_os_error(rc)));
        }
        Ok(set)
    }
}

/// Waits for one of the blocked signals; returns its number.
fn wait(set: &libc::sigset_t) -> Result<i32, String> {
    let mut signal = 0;
    // SAFETY: sigwait reads the initialised set and writes the signal number.
    let rc = unsafe { libc::sigwait(set, &mut signal) };
    if rc != 0 {
        return Err(format!("waiting for SIGTERM: {}", std::io::Error::from_raw_os_error(rc)));
    }
    Ok(signal)
}

/// Kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct it is given; failing leaves the limit as it was.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{OBJECT, PROGRAMS};

    /// The non-shipped object holds exactly the declared programs, and no map (the agent's
    /// own test checks the shipped object the same way, against agent_common::names).
    #[test]
    fn object_has_exactly_the_declared_programs_and_no_maps() {
        let obj = aya_obj::Object::parse(OBJECT).expect("parse the built eBPF object");
        let programs: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
        assert_eq!(programs, PROGRAMS.iter().copied().collect());
        let maps: Vec<&String> = obj.maps.keys().filter(|m| !m.starts_with('.')).collect();
        assert!(maps.is_empty(), "{maps:?}");
    }

    #[test]
    fn recognises_a_cgroup2_root() {
        let Some(root) = std::fs::read_to_string("/proc/self/mounts").ok().and_then(|m| {
            m.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
            })
        }) else {
            println!("SKIPPED recognises_a_cgroup2_root: no cgroup v2 mounted");
            return;
        };
        // The check, not run(): were it wrong, run() would attach to the root.
        assert!(super::is_cgroup2_root(std::path::Path::new(&root)));
        assert!(!super::is_cgroup2_root(std::path::Path::new("/proc")));
        assert!(!super::is_cgroup2_root(std::path::Path::new("/no/such/cgroup")));
    }
}
