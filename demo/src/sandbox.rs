//! The demo's private cgroup subtree, shaped like a kubelet's (cgroupfs driver), and the client
//! processes placed in it. Everything is removed on drop; clients are killed by pid.
use std::{
    ffi::CString,
    fs,
    net::SocketAddr,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context as _;

use agent::attribution::{cgroup, identify::from_cgroup_path, labels::Workload};

pub struct Sandbox {
    root: PathBuf,
    /// Private directory for the pods' resolv.conf.
    files: PathBuf,
    leaves: Vec<PathBuf>,
    workloads: Vec<Workload>,
}

impl Sandbox {
    pub fn create(pods: usize) -> anyhow::Result<Self> {
        let mount = cgroup::cgroup2_mount()?;
        let root = mount.join(format!("credwatch-demo-{}", std::process::id()));
        let files = std::env::temp_dir().join(format!("credwatch-demo-{}", std::process::id()));
        fs::create_dir_all(&files).with_context(|| format!("mkdir {}", files.display()))?;
        let mut sandbox =
            Self { root: root.clone(), files, leaves: Vec::new(), workloads: Vec::new() };
        for i in 0..pods {
            let uid = random_uid();
            let cid = random_hex(32);
            let leaf = root.join(format!("kubepods/burstable/pod{uid}/{cid}"));
            fs::create_dir_all(&leaf).with_context(|| format!("mkdir {}", leaf.display()))?;
            // The labels the agent gives it without Kubernetes: pod UID and short container id.
            let relative = leaf.strip_prefix(&mount).unwrap_or(&leaf);
            sandbox.workloads.push(from_cgroup_path(&format!("/{}", relative.display())));
            sandbox.leaves.push(leaf);
            log::debug!("demo pod {i} cgroup created");
        }
        Ok(sandbox)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a pod's resolv.conf (as kubelet does for ClusterFirst pods) and returns its path.
    pub fn resolv_conf(&self, nameserver: std::net::IpAddr) -> anyhow::Result<PathBuf> {
        let path = self.files.join("resolv.conf");
        let text = format!(
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {nameserver}\noptions ndots:5\n"
        );
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub fn workload(&self, i: usize) -> Workload {
        self.workloads[i].clone()
    }

    /// Starts `credwatch-demo demo-client` inside pod `i`'s cgroup (it joins before exec, so its first
    /// request is already attributed), in a mount namespace of its own where `/etc/resolv.conf`
    /// is `resolv_conf` (a pod's: cluster search list, `ndots:5`).
    pub fn spawn_client(
        &self,
        i: usize,
        server: SocketAddr,
        upstream: &str,
        resolv_conf: &Path,
        rate: f64,
    ) -> anyhow::Result<Client> {
        let procs = CString::new(self.leaves[i].join("cgroup.procs").as_os_str().as_bytes())?;
        let resolv = CString::new(resolv_conf.as_os_str().as_bytes())?;
        let exe = std::env::current_exe().context("locating the credwatch-demo binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(["demo-client", "--endpoint", &server.to_string(), "--rate", &rate.to_string()])
            .args(["--upstream", upstream])
            .stdin(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (open, write, close,
        // unshare, mount) on strings allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                join_cgroup(&procs)?;
                private_resolv_conf(&resolv)
            });
        }
        let child = cmd.spawn().context("starting a demo client")?;
        Ok(Client(Some(child)))
    }
}

fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // Writing "0" to cgroup.procs moves the writing process.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
        libc::close(fd);
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A mount namespace of the process's own in which `/etc/resolv.conf` is `resolv`.
fn private_resolv_conf(resolv: &CString) -> std::io::Result<()> {
    let check =
        |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // Keep the bind mount below from propagating back to the host's namespace.
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            resolv.as_ptr(),
            c"/etc/resolv.conf".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Leaf first; rmdir of a cgroup only succeeds once its processes are gone.
        let mut dirs: Vec<PathBuf> = Vec::new();
        for leaf in &self.leaves {
            let mut d = leaf.as_path();
            while d != self.root {
                if !dirs.iter().any(|x| x == d) {
                    dirs.push(d.to_path_buf());
                }
                d = d.parent().unwrap_or(&self.root);
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.push(self.root.clone());
        let _ = fs::remove_dir_all(&self.files);
        for d in dirs {
            if let Err(e) = fs::remove_dir(&d) {
                log::warn!("removing demo cgroup {}: {e}", d.display());
            }
        }
    }
}

/// A demo client process; killed (by its pid) and reaped on stop or drop.
pub struct Client(Option<Child>);

impl Client {
    pub fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most len bytes into the buffer it is given.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
}

fn random_uid() -> String {
    let h = random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
