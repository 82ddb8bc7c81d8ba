//! The ENA driver's own allowance counters (`ethtool -S`: `linklocal_allowance_exceeded` and the
//! other `*_allowance_exceeded`), read at scrape time through the kernel's ethtool ioctl
//! (`SIOCETHTOOL`) in the agent's network namespace. Where no interface is driven by `ena` (any
//! machine outside EC2, or a pod network namespace), there is nothing to export.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// The driver's statistic names and the `allowance` label each is exported under.
pub const ALLOWANCES: [(&str, &str); 5] = [
    ("linklocal_allowance_exceeded", "linklocal"),
    ("pps_allowance_exceeded", "pps"),
    ("conntrack_allowance_exceeded", "conntrack"),
    ("bw_in_allowance_exceeded", "bw_in"),
    ("bw_out_allowance_exceeded", "bw_out"),
];

/// The driver name ENA interfaces report (`ethtool -i`).
pub const ENA_DRIVER: &str = "ena";

/// One counter of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub interface: String,
    pub allowance: &'static str,
    pub value: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EnaError {
    #[error("ethtool {what} on {interface}")]
    Ioctl {
        what: &'static str,
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("{interface}: the driver reported {names} statistic names but {values} values")]
    Mismatch { interface: String, names: usize, values: usize },
    #[error("interface name {0:?} is not valid for ethtool")]
    Name(String),
}

/// The allowance counters among an interface's statistics (names and values in the driver's
/// order). Drivers older than 2.2.10 have none of them; some have only a few.
pub fn allowances(names: &[String], values: &[u64]) -> Vec<(&'static str, u64)> {
    ALLOWANCES
        .iter()
        .filter_map(|&(stat, label)| {
            let i = names.iter().position(|n| n == stat)?;
            Some((label, *values.get(i)?))
        })
        .collect()
}

/// Length of one name in an ethtool string set (`ETH_GSTRING_LEN`).
const GSTRING_LEN: usize = 32;

/// The names of an `ETHTOOL_GSTRINGS` answer: `count` NUL-padded 32-byte fields. A name with no
/// NUL uses all 32 bytes; bytes that are not UTF-8 are replaced (a name, never a value).
pub fn parse_string_set(raw: &[u8], count: usize) -> Vec<String> {
    raw.as_chunks::<GSTRING_LEN>()
        .0
        .iter()
        .take(count)
        .map(|field| {
            let end = field.iter().position(|&b| b == 0).unwrap_or(GSTRING_LEN);
            String::from_utf8_lossy(&field[..end]).into_owned()
        })
        .collect()
}

/// The ENA allowance counters of every interface in this network namespace.
pub fn read_all() -> Vec<Allowance> {
    match Ethtool::open() {
        Ok(socket) => read_from(&socket),
        Err(e) => {
            log::debug!("ENA statistics: no socket for ethtool: {e}");
            Vec::new()
        }
    }
}

/// The driver of `interface` (`ethtool -i`), through the ioctl.
pub fn driver(interface: &str) -> Result<String, EnaError> {
    let socket = Ethtool::open().map_err(|source| EnaError::Ioctl {
        what: "socket",
        interface: interface.to_string(),
        source,
    })?;
    socket.driver(interface)
}

/// Every statistic of `interface` (`ethtool -S`: names and values in the driver's order),
/// through the ioctl. The ethtool netlink interface carries only the standard statistics groups
/// (`ethtool -S --groups`), not the driver's own strings, which is where ENA's allowance counters
/// are: `ethtool -S` reads them with these same ioctls.
pub fn statistics(interface: &str) -> Result<(Vec<String>, Vec<u64>), EnaError> {
    let socket = Ethtool::open().map_err(|source| EnaError::Ioctl {
        what: "socket",
        interface: interface.to_string(),
        source,
    })?;
    socket.statistics(interface)
}

/// What the reader needs of the kernel (a trait so that the absent and present cases can be
/// tested on machines without ENA).
trait Source {
    fn interfaces(&self) -> Vec<String>;
    fn driver(&self, interface: &str) -> Result<String, EnaError>;
    fn statistics(&self, interface: &str) -> Result<(Vec<String>, Vec<u64>), EnaError>;
}

fn read_from(source: &impl Source) -> Vec<Allowance> {
    let mut out = Vec::new();
    for interface in source.interfaces() {
        match source.driver(&interface) {
            Ok(driver) if driver == ENA_DRIVER => {}
            // Not ENA, or no ethtool support (lo): nothing to read.
            _ => continue,
        }
        match source.statistics(&interface) {
            Ok((names, values)) => {
                out.extend(allowances(&names, &values).into_iter().map(|(allowance, value)| {
                    Allowance { interface: interface.clone(), allowance, value }
                }))
            }
            Err(e) => log::debug!("ENA statistics: {e}"),
        }
    }
    out
}

impl Source for Ethtool {
    fn interfaces(&self) -> Vec<String> {
        interfaces()
    }
    fn driver(&self, interface: &str) -> Result<String, EnaError> {
        Ethtool::driver(self, interface)
    }
    fn statistics(&self, interface: &str) -> Result<(Vec<String>, Vec<u64>), EnaError> {
        Ethtool::statistics(self, interface)
    }
}

/// Interface names in this network namespace (`if_nameindex`).
fn interfaces() -> Vec<String> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut names = Vec::new();
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(std::ffi::CStr::from_ptr((*entry).if_name).to_string_lossy().into_owned());
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
        names
    }
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETH_SS_STATS: u32 = 1;
/// Room for statistics added between the count and the read (a queue count change): older
/// kernels write as many as they have at the time of each call, whatever was asked for.
const HEADROOM: usize = 256;

#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// A datagram socket to issue ethtool ioctls on.
struct Ethtool(OwnedFd);

impl Ethtool {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// `cmd` with `data` (whose first u32 is the command) on `interface`.
    fn ioctl(&self, interface: &str, what: &'static str, data: *mut u8) -> Result<(), EnaError> {
        let name = CString::new(interface).map_err(|_| EnaError::Name(interface.to_string()))?;
        let bytes = name.as_bytes_with_nul();
        if bytes.len() > libc::IFNAMSIZ {
            return Err(EnaError::Name(interface.to_string()));
        }
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: data.cast(), _pad: [0; 16] };
        req.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: SIOCETHTOOL reads the ifreq and the buffer it points to, which the callers
        // size for the command (checked against the counts the kernel gave).
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if rc < 0 {
            let source = io::Error::last_os_error();
            return Err(EnaError::Ioctl { what, interface: interface.to_string(), source });
        }
        Ok(())
    }

    fn drvinfo(&self, interface: &str) -> Result<DrvInfo, EnaError> {
        // SAFETY: all-zero is a valid DrvInfo.
        let mut info: DrvInfo = unsafe { std::mem::zeroed() };
        info.cmd = ETHTOOL_GDRVINFO;
        self.ioctl(interface, "GDRVINFO", (&raw mut info).cast())?;
        Ok(info)
    }

    fn driver(&self, interface: &str) -> Result<String, EnaError> {
        let info = self.drvinfo(interface)?;
        Ok(parse_string_set(&info.driver, 1).pop().unwrap_or_default())
    }

    /// The statistics' names and values, in the driver's order. The count can change between
    /// the calls (a queue count change): tried again then.
    fn statistics(&self, interface: &str) -> Result<(Vec<String>, Vec<u64>), EnaError> {
        let mut last = None;
        for _ in 0..3 {
            let count = self.drvinfo(interface)?.n_stats as usize;
            match self.statistics_of(interface, count) {
                Ok((names, values)) if names.len() == count => return Ok((names, values)),
                Ok((names, values)) => {
                    last = Some(EnaError::Mismatch {
                        interface: interface.to_string(),
                        names: names.len(),
                        values: values.len(),
                    })
                }
                Err(e @ EnaError::Mismatch { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(EnaError::Mismatch {
            interface: interface.to_string(),
            names: 0,
            values: 0,
        }))
    }

    /// One GSTRINGS and one GSTATS call asking for `count` entries. Recent kernels (6.18 here)
    /// answer none when the count asked for is not the one they have (a buffer sized for an
    /// older count is never overrun); older ones write as many as they have, whatever was asked:
    /// the buffers have room for more.
    fn statistics_of(
        &self,
        interface: &str,
        count: usize,
    ) -> Result<(Vec<String>, Vec<u64>), EnaError> {
        let room = count + HEADROOM;
        // struct ethtool_gstrings { cmd, string_set, len, data[] }
        let mut strings = vec![0u8; 12 + room * GSTRING_LEN];
        strings[..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
        strings[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
        strings[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
        self.ioctl(interface, "GSTRINGS", strings.as_mut_ptr())?;
        let names_len = u32::from_ne_bytes(strings[8..12].try_into().unwrap_or_default()) as usize;
        // struct ethtool_stats { cmd, n_stats, data[] (u64) }
        let mut stats = vec![0u64; 1 + room];
        let head = (u64::from(count as u32) << 32) | u64::from(ETHTOOL_GSTATS);
        stats[0] = if cfg!(target_endian = "little") { head } else { head.rotate_left(32) };
        self.ioctl(interface, "GSTATS", stats.as_mut_ptr().cast())?;
        let n_stats =
            if cfg!(target_endian = "little") { stats[0] >> 32 } else { stats[0] & 0xffff_ffff };
        // More than the buffers hold would have been an overrun: not read past them.
        let (names_len, n_stats) = (names_len.min(room), (n_stats as usize).min(room));
        if names_len != n_stats {
            return Err(EnaError::Mismatch {
                interface: interface.to_string(),
                names: names_len,
                values: n_stats,
            });
        }
        let names = parse_string_set(&strings[12..], names_len);
        Ok((names, stats[1..=n_stats].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A string set as the kernel returns it: each name NUL-padded to 32 bytes.
    fn string_set(names: &[&str]) -> Vec<u8> {
        let mut raw = Vec::new();
        for n in names {
            let mut field = [0u8; GSTRING_LEN];
            field[..n.len()].copy_from_slice(n.as_bytes());
            raw.extend_from_slice(&field);
        }
        raw
    }

    /// An ENA interface's statistic names in the order the driver lists them (global, then the
    /// ENI allowance counters, then per queue and admin queue; drivers/net/ethernet/amazon/ena/
    /// ena_ethtool.c), transcribed, not captured: no ENA interface is reachable here.
    const RECORDED_2_8: &[&str] = &[
        "tx_timeout",
        "suspend",
        "resume",
        "wd_expired",
        "interface_up",
        "interface_down",
        "admin_q_pause",
        "bw_in_allowance_exceeded",
        "bw_out_allowance_exceeded",
        "pps_allowance_exceeded",
        "conntrack_allowance_exceeded",
        "linklocal_allowance_exceeded",
        "conntrack_allowance_available",
        "queue_0_tx_cnt",
        "queue_0_tx_bytes",
        "queue_0_tx_queue_stop",
        "queue_0_rx_cnt",
        "queue_1_tx_cnt",
        "ena_admin_q_aborted_cmd",
        "ena_admin_q_submitted_cmd",
    ];

    #[test]
    fn recorded_string_set_and_values() {
        let raw = string_set(RECORDED_2_8);
        let names = parse_string_set(&raw, RECORDED_2_8.len());
        assert_eq!(names, RECORDED_2_8);
        let values: Vec<u64> = (0..names.len() as u64).map(|i| 1000 + i).collect();
        assert_eq!(
            allowances(&names, &values),
            vec![
                ("linklocal", 1011),
                ("pps", 1009),
                ("conntrack", 1010),
                ("bw_in", 1007),
                ("bw_out", 1008),
            ]
        );
    }

    #[test]
    fn older_drivers_have_some_or_none() {
        // ENA 2.2.10 added the first four; linklocal came with 2.2.11's firmware counters.
        let names: Vec<String> =
            ["tx_timeout", "bw_in_allowance_exceeded", "pps_allowance_exceeded", "queue_0_tx_cnt"]
                .map(String::from)
                .to_vec();
        assert_eq!(allowances(&names, &[1, 2, 3, 4]), vec![("pps", 3), ("bw_in", 2)]);
        let none: Vec<String> = ["tx_timeout", "queue_0_tx_cnt"].map(String::from).to_vec();
        assert!(allowances(&none, &[5, 6]).is_empty());
        // Fewer values than names: the missing ones are not invented.
        assert!(allowances(&names, &[1]).is_empty());
    }

    #[test]
    fn string_set_edge_cases() {
        let mut raw = string_set(&["a"]);
        raw.extend_from_slice(&[b'x'; GSTRING_LEN]); // no NUL: the whole field
        raw.extend_from_slice(&[0xff, 0xfe, 0]); // a short tail: not a name
        let names = parse_string_set(&raw, 5);
        assert_eq!(names, vec!["a".to_string(), "x".repeat(GSTRING_LEN)]);
        assert_eq!(parse_string_set(&raw, 1), vec!["a".to_string()]);
        let bad = string_set(&["\u{fffd}"]);
        assert_eq!(parse_string_set(&bad, 1), vec!["\u{fffd}".to_string()]);
    }

    /// Interfaces with their drivers and statistics, as a node would have them.
    type FakeInterface = (&'static str, Option<&'static str>, Vec<(&'static str, u64)>);
    struct Fake(Vec<FakeInterface>);

    impl Source for Fake {
        fn interfaces(&self) -> Vec<String> {
            self.0.iter().map(|(n, _, _)| n.to_string()).collect()
        }
        fn driver(&self, interface: &str) -> Result<String, EnaError> {
            let (_, driver, _) = self.0.iter().find(|(n, _, _)| *n == interface).unwrap();
            driver.map(String::from).ok_or_else(|| EnaError::Ioctl {
                what: "GDRVINFO",
                interface: interface.to_string(),
                source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            })
        }
        fn statistics(&self, interface: &str) -> Result<(Vec<String>, Vec<u64>), EnaError> {
            let (_, _, stats) = self.0.iter().find(|(n, _, _)| *n == interface).unwrap();
            Ok(stats.iter().map(|&(n, v)| (n.to_string(), v)).unzip())
        }
    }

    #[test]
    fn absent_without_ena_interfaces() {
        let node = Fake(vec![
            ("lo", None, vec![]),
            ("eth0", Some("virtio_net"), vec![("rx_queue_0_packets", 5)]),
            // A veth named like a counter's interface, with a look-alike statistic: not ENA.
            ("veth1", Some("veth"), vec![("linklocal_allowance_exceeded", 7)]),
        ]);
        assert!(read_from(&node).is_empty());
        assert!(read_from(&Fake(vec![])).is_empty());
    }

    #[test]
    fn every_ena_interface_and_only_those() {
        let ena = |n| {
            vec![
                ("tx_timeout", 0),
                ("pps_allowance_exceeded", n),
                ("linklocal_allowance_exceeded", n + 1),
            ]
        };
        let node = Fake(vec![
            ("lo", None, vec![]),
            ("ens5", Some("ena"), ena(10)),
            ("eni1a2b3c4d5e6", Some("veth"), vec![("linklocal_allowance_exceeded", 99)]),
            ("ens6", Some("ena"), ena(20)),
        ]);
        let got: Vec<(String, &str, u64)> =
            read_from(&node).into_iter().map(|a| (a.interface, a.allowance, a.value)).collect();
        assert_eq!(
            got,
            vec![
                ("ens5".to_string(), "linklocal", 11),
                ("ens5".to_string(), "pps", 10),
                ("ens6".to_string(), "linklocal", 21),
                ("ens6".to_string(), "pps", 20),
            ]
        );
    }

    /// The real ioctl path: whatever this machine has, every counter read comes from an
    /// interface whose driver is `ena`, and loopback answers without an ENA driver.
    #[test]
    fn real_interfaces_read_without_error() {
        let socket = Ethtool::open().expect("a datagram socket");
        let names = interfaces();
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
        assert_ne!(socket.driver("lo").ok().as_deref(), Some(ENA_DRIVER));
        for a in read_all() {
            assert_eq!(socket.driver(&a.interface).unwrap(), ENA_DRIVER);
        }
        assert!(matches!(socket.driver("no-such-if0"), Err(EnaError::Ioctl { .. })));
        assert!(matches!(socket.driver(&"x".repeat(20)), Err(EnaError::Name(_))));
    }

    /// The ioctl path against a real ethtool statistics source: a veth pair in a network
    /// namespace of its own (a thread's, gone with the thread), whose statistics (peer_ifindex
    /// and the XDP queue counters) must read exactly as `ethtool -S` prints them. The links stay
    /// down: no traffic changes a value between the two reads. Needs root (CAP_NET_ADMIN).
    #[test]
    fn a_veths_statistics_read_as_ethtool_prints_them() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var_os("CREDWATCH_ALLOW_SKIPS").is_some() {
                eprintln!("SKIPPED: a veth in a test network namespace needs root");
                return;
            }
            panic!("a veth in a test network namespace needs root (CREDWATCH_ALLOW_SKIPS=1 skips)");
        }
        std::thread::spawn(|| {
            // SAFETY: unshare(2) on this thread only: its network namespace becomes a new one,
            // which goes when the thread (its only user) ends.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare(CLONE_NEWNET)");
            let run = |args: &[&str]| {
                let out = std::process::Command::new(args[0]).args(&args[1..]).output();
                let out = out.unwrap_or_else(|e| panic!("{args:?}: {e}"));
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
                text
            };
            run(&["ip", "link", "add", "cwtest0", "type", "veth", "peer", "name", "cwtest1"]);
            let (names, values) = statistics("cwtest0").expect("statistics of cwtest0");
            // ethtool(8) is the reference: `ethtool -S` prints "     name: value" per statistic.
            let printed: Vec<(String, u64)> = run(&["ethtool", "-S", "cwtest0"])
                .lines()
                .skip(1)
                .map(|l| {
                    let (n, v) = l.trim().rsplit_once(": ").unwrap_or_else(|| panic!("{l:?}"));
                    (n.to_string(), v.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
                })
                .collect();
            let read: Vec<(String, u64)> = names.into_iter().zip(values).collect();
            assert_eq!(read, printed);
            // SAFETY: a NUL-terminated name; if_nametoindex resolves it in this namespace.
            let peer = unsafe { libc::if_nametoindex(c"cwtest1".as_ptr()) };
            assert!(read.contains(&("peer_ifindex".to_string(), u64::from(peer))), "{read:?}");
            assert_eq!(driver("cwtest0").unwrap(), "veth");
            // The namespace has lo and two veths: no ENA, nothing to export.
            let mut here = interfaces();
            here.sort();
            assert_eq!(here, ["cwtest0", "cwtest1", "lo"]);
            assert!(read_all().is_empty());
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
}
