//! cgroup v2: where it is mounted, and which directory a cgroup id names (on cgroup v2 the id
//! the kernel reports is the inode number of the cgroup's directory).
use std::{
    collections::HashMap,
    fs::{self, File},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading /proc/self/mountinfo")]
    Mountinfo(#[source] std::io::Error),
    #[error("no cgroup v2 filesystem is mounted (credwatch needs cgroup v2, kernel 4.15 or later)")]
    NoCgroup2,
    #[error("{0} is not a cgroup directory inside a cgroup v2 mount (such as {1})")]
    NotCgroup2(PathBuf, PathBuf),
    #[error("cgroup path {path}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Finds the cgroup v2 mount point in mountinfo text (field 5 is the mount point; the
/// filesystem type follows the ` - ` separator).
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    cgroup2_mounts_in(mountinfo).into_iter().next()
}

/// Every cgroup v2 mount point, in mountinfo order (a container may see the host's hierarchy
/// mounted a second time, e.g. at /host/sys/fs/cgroup).
pub fn cgroup2_mounts_in(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mount_point = left.split_whitespace().nth(4)?;
            Some(PathBuf::from(unescape_mountinfo(mount_point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN` (a byte: `\000` to
/// `\377`). Anything else after a backslash is kept as it is.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(v) = octal_byte(&bytes[i..]) {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte a `\NNN` escape at the start of `s` stands for. Only octal digits, at most `\377`:
/// digits 8 and 9, or a first digit above 3, would not fit a byte (found by fuzzing; the
/// arithmetic overflowed).
fn octal_byte(s: &[u8]) -> Option<u8> {
    let [b'\\', a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] = *s else {
        return None;
    };
    Some((a - b'0') * 64 + (b - b'0') * 8 + (c - b'0'))
}

pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
    cgroup2_mount_in(&text).ok_or(CgroupError::NoCgroup2)
}

/// The cgroup v2 mount to use and the directory to attach to: the first mount and its root by
/// default; else the given directory, canonical, with the mount that contains it.
pub fn resolve_attach_path(path: Option<&Path>) -> Result<(PathBuf, PathBuf), CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
    let mounts = cgroup2_mounts_in(&text);
    let first = mounts.first().ok_or(CgroupError::NoCgroup2)?;
    let Some(path) = path else {
        return Ok((first.clone(), first.clone()));
    };
    let canonical = fs::canonicalize(path)
        .map_err(|source| CgroupError::Path { path: path.to_path_buf(), source })?;
    let mount = mounts
        .iter()
        .filter(|m| canonical.starts_with(m))
        .max_by_key(|m| m.components().count())
        .filter(|_| canonical.join("cgroup.procs").exists())
        .ok_or_else(|| CgroupError::NotCgroup2(canonical.clone(), first.clone()))?;
    Ok((mount.clone(), canonical))
}

/// cgroup id → path under the mount, for the subtree the agent is attached to. A miss is
/// looked up by file handle ([`CgroupIndex::lookup`]); failing that, the caller rebuilds the
/// index with a (rate-limited) walk.
#[derive(Debug)]
pub struct CgroupIndex {
    mount: PathBuf,
    root: PathBuf,
    paths: HashMap<u64, String>,
    /// The mount's directory, for `open_by_handle_at`; None until first needed, or when it
    /// cannot be opened.
    mount_dir: Option<Result<File, ()>>,
    /// A lookup by handle has succeeded (see [`Self::finds_by_handle`]).
    handles_work: bool,
}

/// `struct file_handle` holding a kernfs handle: on cgroup v2 the 8-byte handle is the cgroup
/// id itself (what `name_to_handle_at` returns for a cgroup directory, type FILEID_KERNFS).
#[repr(C)]
struct KernfsHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    id: u64,
}
const FILEID_KERNFS: libc::c_int = 0xfe;

impl CgroupIndex {
    pub fn new(mount: PathBuf, root: PathBuf) -> Self {
        Self { mount, root, paths: HashMap::new(), mount_dir: None, handles_work: false }
    }

    /// Finds one cgroup by id without walking the tree: the kernel opens the directory from
    /// its handle (needs CAP_DAC_READ_SEARCH, which the agent has) and /proc/self/fd names it.
    /// A walk has to be rate-limited, so a pod that starts right after another would otherwise
    /// go unattributed for up to that limit; this costs two syscalls per new cgroup.
    pub fn lookup(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) {
            let path = self.path_by_handle(id)?;
            let rel = path.strip_prefix(&self.mount).ok()?;
            if !path.starts_with(&self.root) {
                return None;
            }
            self.paths.insert(id, format!("/{}", rel.display()));
        }
        self.get(id)
    }

    fn path_by_handle(&mut self, id: u64) -> Option<PathBuf> {
        let mount = &self.mount;
        let dir = self
            .mount_dir
            .get_or_insert_with(|| {
                File::open(mount).map_err(|e| {
                    log::warn!(
                        "opening {} for cgroup lookups by id: {e}; using walks",
                        mount.display()
                    );
                })
            })
            .as_ref()
            .ok()?;
        let mut handle = KernfsHandle {
            handle_bytes: size_of::<u64>() as libc::c_uint,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a `struct file_handle` whose f_handle holds `handle_bytes` bytes;
        // the kernel reads it and returns a new fd or -1.
        let fd = unsafe {
            libc::open_by_handle_at(
                dir.as_raw_fd(),
                (&raw mut handle).cast(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        self.handles_work = true;
        // SAFETY: fd was just returned by the kernel and belongs to nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
    }

    /// Whether a lookup by handle has found a cgroup here (it needs CAP_DAC_READ_SEARCH and a
    /// cgroup file system): then a miss means the cgroup is gone, not merely that the walk has
    /// not reached it yet.
    pub fn finds_by_handle(&self) -> bool {
        self.handles_work
    }

    /// The path relative to the mount, starting with `/` (as in /proc/PID/cgroup).
    pub fn get(&self, id: u64) -> Option<&str> {
        self.paths.get(&id).map(String::as_str)
    }

    pub fn absolute(&self, id: u64) -> Option<PathBuf> {
        self.get(id).map(|rel| self.mount.join(rel.trim_start_matches('/')))
    }

    /// Walks the subtree again. Directories that vanish during the walk are skipped.
    pub fn rescan(&mut self) {
        let mut paths = HashMap::with_capacity(self.paths.len().max(64));
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            if let Ok(rel) = dir.strip_prefix(&self.mount) {
                paths.insert(meta.ino(), format!("/{}", rel.display()));
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        self.paths = paths;
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Keeps only the ids `keep` accepts. Lookups by handle add one id at a time and walks are
    /// rare, so without this the index would remember every cgroup that ever spoke.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.paths.retain(|&id, _| keep(id));
        if self.paths.capacity() > 4 * self.paths.len().max(64) {
            self.paths.shrink_to_fit();
        }
    }

    /// Whether cgroup `id` still exists at `path` (relative to the mount). A cgroup's id is its
    /// directory's inode, so a new cgroup at the same path is a different one.
    pub fn still_there(&self, id: u64, path: &str) -> bool {
        fs::metadata(self.mount.join(path.trim_start_matches('/'))).is_ok_and(|m| m.ino() == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str =
        "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        assert_eq!(cgroup2_mount_in(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount_in(UNIFIED), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount_in("1 2 0:1 / /x rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn unescapes_octal_in_mount_points() {
        let line = "41 31 0:38 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_in(line), Some(PathBuf::from("/mnt/with space")));
        assert_eq!(unescape_mountinfo("a\\134b\\011c\\377"), "a\\b\tc\u{fffd}");
    }

    /// Fuzzing found `\734` and `\933` overflowing the byte; such text is not an escape.
    #[test]
    fn backslashes_that_are_not_byte_escapes_stay() {
        for s in ["\\734x", "\\933", "\\400", "\\08", "\\12", "\\", "x\\"] {
            assert_eq!(unescape_mountinfo(s), s);
        }
        let line = "35 24 0:30 / /mnt/with\\04Gspace\\734x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_in(line), Some(PathBuf::from("/mnt/with\\04Gspace\\734x")));
    }
}
