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
