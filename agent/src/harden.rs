//! Process hardening applied before the agent touches the kernel or the network.
//!
//! Credential secrets never reach this process (see SECURITY.md), but a core file would hold
//! whatever its memory did: pod UIDs, role names, DNS names, the mapped ring buffers. So no core
//! files, and no ptrace or `/proc/<pid>/mem` access to the agent except by privileged processes.

/// Turns core dumps off for this process:
/// - `RLIMIT_CORE` 0 (soft and hard): no core file, and core_pattern pipe handlers that honour
///   the limit (systemd-coredump, apport) store nothing;
/// - `PR_SET_DUMPABLE` 0: no core at all while `fs.suid_dumpable` is 0 (the default), and only
///   privileged processes may ptrace the agent or read its memory through /proc.
///
/// Neither affects what the agent needs: reading `/proc/<pid>/root/etc/resolv.conf` of other
/// processes depends on *their* dumpability and on the agent's capabilities, not its own.
pub fn disable_core_dumps() -> std::io::Result<()> {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads the struct it is given; prctl with PR_SET_DUMPABLE takes integers.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Changes this test process too, which is harmless: tests need no core dumps.
    #[test]
    fn core_dumps_are_off_afterwards() {
        super::disable_core_dumps().unwrap();
        // SAFETY: PR_GET_DUMPABLE takes no pointer; getrlimit writes into the struct given.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
        let mut limit = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) }, 0);
        assert_eq!((limit.rlim_cur, limit.rlim_max), (0, 0));
    }
}

/// Capability numbers (linux/capability.h).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SETPCAP: u32 = 8;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// What the agent still needs once its programs are attached, and why.
const KEPT: &[(u32, &str)] = &[
    // /proc/<pid>/root/etc/resolv.conf of pod processes that run as other users.
    (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    // Walking cgroups and reading those files whatever their permission bits.
    (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
];

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("{0} threads: capabilities are per thread, so they must be dropped while there is one")]
    Threads(usize),
    #[error("{what}")]
    Syscall {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What [`drop_capabilities`] did.
#[derive(Debug)]
pub struct Dropped {
    /// The capabilities kept, by name.
    pub kept: Vec<&'static str>,
    /// Whether the bounding set was shrunk too. That needs `CAP_SETPCAP`, which the
    /// least-privilege profile does not grant: there the bounding set stays what the container
    /// runtime made it (the profile's own list), which no_new_privs makes unusable (no execve
    /// can raise the permitted set again).
    pub bounding_set_shrunk: bool,
}

/// Drops every capability except [`KEPT`], from the effective, permitted, inheritable and
/// ambient sets, and from the bounding set when it holds `CAP_SETPCAP` to do it (see
/// [`Dropped::bounding_set_shrunk`]), and sets no_new_privs. `CAP_BPF` is kept only where the kernel still asks
/// for it on every `bpf()` call (older kernels with unprivileged BPF disabled check it even for
/// lookups on a descriptor the process holds; 6.1 and 6.18 do not, tested), which `bpf_works`
/// tells by using one of the agent's own descriptors with `CAP_BPF` and `CAP_SYS_ADMIN` out of
/// the effective set (reversible: the permitted set is unchanged then).
pub fn drop_capabilities(bpf_works: impl FnOnce() -> bool) -> Result<Dropped, CapabilityError> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads != 1 {
        return Err(CapabilityError::Threads(threads));
    }
    let sys = |what, rc: libc::c_long| {
        if rc < 0 {
            Err(CapabilityError::Syscall { what, source: std::io::Error::last_os_error() })
        } else {
            Ok(())
        }
    };
    let (effective, permitted) =
        capget().map_err(|source| CapabilityError::Syscall { what: "capget", source })?;
    let without_bpf = effective & !(bit(CAP_BPF) | bit(CAP_SYS_ADMIN));
    sys("capset (probe)", capset(without_bpf, permitted))?;
    let needs_bpf = !bpf_works();
    sys("capset (restore)", capset(effective, permitted))?;

    let mut keep: u64 = KEPT.iter().map(|&(cap, _)| bit(cap)).fold(0, |a, b| a | b);
    let mut names: Vec<&'static str> = KEPT.iter().map(|&(_, name)| name).collect();
    if needs_bpf {
        keep |= bit(CAP_BPF);
        names.push("CAP_BPF");
    }
    // The bounding set first: shrinking it needs CAP_SETPCAP, which goes next. Without it
    // (least-privilege profile) it is left as the runtime set it.
    let bounding_set_shrunk = effective & bit(CAP_SETPCAP) != 0;
    if bounding_set_shrunk {
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(40);
        for cap in (0..=last_cap).filter(|&c| keep & bit(c) == 0) {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
            sys("PR_CAPBSET_DROP", rc.into())?;
        }
    }
    // SAFETY: as above. EINVAL on kernels without ambient capabilities (before 4.3) is fine.
    let _ = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    sys("capset", capset(keep, keep))?;
    // SAFETY: as above.
    sys(
        "PR_SET_NO_NEW_PRIVS",
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into(),
    )?;
    Ok(Dropped { kept: names, bounding_set_shrunk })
}

const fn bit(cap: u32) -> u64 {
    1 << cap
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` (version 3: two of them).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// This thread's effective and permitted sets.
fn capget() -> std::io::Result<(u64, u64)> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: the kernel writes two CapData for version 3, which is what `data` holds.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    Ok((join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted)))
}

/// Sets this thread's effective and permitted sets; inheritable becomes empty. Returns the raw
/// syscall result.
fn capset(effective: u64, permitted: u64) -> libc::c_long {
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: effective as u32, permitted: permitted as u32, inheritable: 0 },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: the kernel reads the header and two CapData.
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }
}
