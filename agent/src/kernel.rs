//! Loading the kernel programs, handing them to the features (which take their maps and fill
//! their configuration there) and attaching them. Dropping [`Kernel`] detaches everything;
//! attachments are bpf_links owned by this process, so they also go away if the process dies.
use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use agent_common::{names, port_word, with_port_flag};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps},
};

/// The kernel object built by agent/build.rs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("loading the eBPF object (is this Linux 5.8+ with BPF ring buffers, and are we root?)")]
    Load(#[source] aya::EbpfError),
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} in the eBPF object is not an array")]
    NotAnArray(&'static str),
    #[error("mapping map {name} into memory (BPF_F_MMAPABLE arrays need Linux 5.5+)")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("opening cgroup {path}")]
    Cgroup {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("too many metadata endpoints: {0} (at most {1})")]
    TooManyEndpoints(usize, u32),
    #[error("too many cluster and AWS API ranges: {0} table entries (at most {1})")]
    TooManyRanges(usize, u32),
    #[error("a second descriptor for map {name}")]
    Dup {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("too many {what}: {entries} (at most {capacity})")]
    TableTooSmall { what: &'static str, entries: usize, capacity: u32 },
}

/// The loaded, attached programs, and the maps the agent reads whatever the features.
pub struct Kernel {
    pub attachment: Attachment,
    pub counters: PerCpuArray<MapData, u64>,
    /// Optional kernel features and whether this kernel has them.
    pub features: Vec<(&'static str, bool)>,
}

/// Owns the programs and their links: dropping it detaches them. The features take the maps
/// they read out of it (a map lives on as long as a program or a descriptor holds it).
pub struct Attachment {
    ebpf: Ebpf,
    pub programs: Vec<&'static str>,
}

impl Attachment {
    /// Takes map `name` out of the object as the typed map userspace reads it through.
    pub fn take_map<T>(&mut self, name: &'static str) -> Result<T, KernelError>
    where
        T: TryFrom<Map, Error = aya::maps::MapError>,
    {
        typed_map(&mut self.ebpf, name)
    }

    /// Map `name`, left in the object: for configuration maps that only need filling.
    pub fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, KernelError> {
        self.ebpf.map_mut(name).ok_or(KernelError::MissingMap(name))
    }

    /// Sets `CW_CONFIG[index]` (each feature writes its own indexes, `names::config`).
    pub fn set_config(&mut self, index: u32, value: u32) -> Result<(), KernelError> {
        let name = names::MAP_CONFIG;
        let map_err = |source| KernelError::Map { name, source };
        let mut config: Array<_, u32> = Array::try_from(self.map_mut(name)?).map_err(map_err)?;
        config.set(index, &value, 0).map_err(map_err)
    }

    /// Adds `flag` to `port`'s flags in `CW_PORTS` (a port can be watched by several features).
    pub fn flag_port(&mut self, port: u16, flag: u8) -> Result<(), KernelError> {
        let name = names::MAP_PORTS;
        let map_err = |source| KernelError::Map { name, source };
        let mut ports: Array<_, u64> = Array::try_from(self.map_mut(name)?).map_err(map_err)?;
        let word = ports.get(&port_word(port), 0).map_err(map_err)?;
        ports.set(port_word(port), &with_port_flag(word, port, flag), 0).map_err(map_err)
    }

    /// Takes map `name` out of the object untyped (e.g. to map it into memory).
    pub fn take_raw_map(&mut self, name: &'static str) -> Result<Map, KernelError> {
        self.ebpf.take_map(name).ok_or(KernelError::MissingMap(name))
    }

    /// A descriptor of its own for array `name`, which stays in the object: for an array several
    /// features write (each advances its own epoch in `CW_CONFIG`).
    pub fn share_map<T>(&self, name: &'static str) -> Result<T, KernelError>
    where
        T: TryFrom<Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map(name).ok_or(KernelError::MissingMap(name))?;
        let Map::Array(data) = map else {
            return Err(KernelError::NotAnArray(name));
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| KernelError::Dup { name, source })?;
        log::debug!("map {name}: another descriptor {}", fd.as_raw_fd());
        let data = MapData::from_fd(fd).map_err(|source| KernelError::Map { name, source })?;
        let map = Map::from_map_data(data).map_err(|source| KernelError::Map { name, source })?;
        T::try_from(map).map_err(|source| KernelError::Map { name, source })
    }
}

/// Kernel features some kernels lack, which the agent works without (see docs/metrics.md,
/// `credwatch_kernel_feature`).
pub const FEATURE_ACCEPT_ATTRIBUTION: &str = "accept_attribution";

/// A duration as the programs read it from `CW_CONFIG`: milliseconds, saturated.
pub fn config_ms(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Loads the programs, then lets `configure` take maps and fill tables (the features, built from
/// the [`Attachment`] before anything runs, so that no packet sees an unconfigured table), then
/// attaches them to `cgroup`.
pub fn load_and_attach<T>(
    cgroup: &Path,
    configure: impl FnOnce(&mut Attachment) -> Result<T, KernelError>,
) -> Result<(Kernel, T), KernelError> {
    raise_memlock_limit();
    // Every program is loaded before any is attached, so that a fallback load starts clean.
    let mut features = vec![(FEATURE_ACCEPT_ATTRIBUTION, true)];
    let mut ebpf = match load(true) {
        Err(KernelError::Program { name: names::PROG_SOCK_OPS, source }) => {
            log::debug!("{}: {source}", names::PROG_SOCK_OPS);
            log::warn!(
                "this kernel's verifier refused {} ({}): sock_ops programs on Linux 6.1 and \
                 older cannot call bpf_get_current_cgroup_id (5.10 not \
                 bpf_get_netns_cookie either); loaded without listener attribution, so accepted \
                 connections are not counted \
                 (credwatch_kernel_feature{{feature=\"{FEATURE_ACCEPT_ATTRIBUTION}\"}} 0)",
                names::PROG_SOCK_OPS,
                refusal(&source.to_string()),
            );
            features[0].1 = false;
            load(false)?
        }
        result => result?,
    };

    let counters = typed_map(&mut ebpf, names::MAP_COUNTERS)?;
    let mut attachment = Attachment { ebpf, programs: Vec::new() };
    let configured = configure(&mut attachment)?;
    let Attachment { mut ebpf, .. } = attachment;

    let cgroup_fd = File::open(cgroup)
        .map_err(|source| KernelError::Cgroup { path: cgroup.display().to_string(), source })?;
    let mut attached = Vec::new();
    for (name, attach_type) in [
        (names::PROG_SKB_EGRESS, CgroupSkbAttachType::Egress),
        (names::PROG_SKB_INGRESS, CgroupSkbAttachType::Ingress),
    ] {
        let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
        prog.attach(&cgroup_fd, attach_type, CgroupAttachMode::default())
            .map_err(|source| KernelError::Program { name, source })?;
        attached.push(name);
    }
    for &name in connect_hooks(features[0].1) {
        let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        prog.attach(&cgroup_fd, CgroupAttachMode::default())
            .map_err(|source| KernelError::Program { name, source })?;
        attached.push(name);
    }
    let name = names::PROG_SOCK_OPS;
    let prog: &mut SockOps = program(&mut ebpf, name)?;
    prog.attach(&cgroup_fd, CgroupAttachMode::default())
        .map_err(|source| KernelError::Program { name, source })?;
    attached.push(name);
    log::info!("attached {} to {}", attached.join(", "), cgroup.display());
    let kernel = Kernel { attachment: Attachment { ebpf, programs: attached }, counters, features };
    Ok((kernel, configured))
}

/// Loads the object and loads (verifies) every program; nothing is configured or attached.
/// `sock_ops_cgroup`: see `names::GLOBAL_SOCK_OPS_CGROUP`.
fn load(sock_ops_cgroup: bool) -> Result<Ebpf, KernelError> {
    let mut ebpf = EbpfLoader::new()
        .override_global(names::GLOBAL_SOCK_OPS_CGROUP, &u8::from(sock_ops_cgroup), true)
        .load(EBPF_OBJECT)
        .map_err(KernelError::Load)?;
    for name in [names::PROG_SKB_EGRESS, names::PROG_SKB_INGRESS] {
        let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
        prog.load().map_err(|source| KernelError::Program { name, source })?;
    }
    let name = names::PROG_SOCK_OPS;
    let prog: &mut SockOps = program(&mut ebpf, name)?;
    prog.load().map_err(|source| KernelError::Program { name, source })?;
    for name in connect_hooks(sock_ops_cgroup) {
        let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        prog.load().map_err(|source| KernelError::Program { name, source })?;
    }
    Ok(ebpf)
}

/// connect4 and connect6, loaded and attached only where `sock_ops` may not read the current
/// cgroup: where it may, it records connects itself (agent-ebpf's tcp.rs), and they would only
/// cost a program run per connect.
pub fn connect_hooks(sock_ops_cgroup: bool) -> &'static [&'static str] {
    if sock_ops_cgroup { &[] } else { &[names::PROG_CONNECT4, names::PROG_CONNECT6] }
}

/// The verifier's complaint about a missing helper ("unknown func bpf_…#N"), if that was it.
fn refusal(log: &str) -> String {
    log.split("unknown func ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map_or_else(|| "see the debug log".to_string(), |helper| format!("unknown {helper}"))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(KernelError::MissingProgram(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })
}

fn typed_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(map).map_err(|source| KernelError::Map { name, source })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones use memory cgroups and
/// ignore it. Raising it is harmless either way.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use agent_common::names;

    use super::EBPF_OBJECT;

    #[test]
    fn refusal_names_the_missing_helper() {
        let log = "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier \
                   output: 0: R1=ctx(id=0,off=0,imm=0) R10=fp0\n; \n42: (85) call \
                   bpf_get_netns_cookie#122\nunknown func bpf_get_netns_cookie#122\n";
        assert_eq!(super::refusal(log), "unknown bpf_get_netns_cookie#122");
        assert_eq!(super::refusal("invalid access"), "see the debug log");
    }

    #[test]
    fn object_has_exactly_the_declared_programs_and_maps() {
        let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("parse the built eBPF object");
        let programs: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
        assert_eq!(programs, names::PROGRAMS.iter().copied().collect());
        // Sections such as .rodata (the automaton tables) are maps too, but not named ones.
        let maps: BTreeSet<&str> =
            obj.maps.keys().map(String::as_str).filter(|m| !m.starts_with('.')).collect();
        assert_eq!(maps, names::MAPS.iter().copied().collect());
    }
}
