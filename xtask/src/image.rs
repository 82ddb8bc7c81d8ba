//! `cargo xtask image`: the container image, built with buildah from the repository's one
//! Containerfile, pulling nothing. The agent is built here as a statically linked release binary
//! for each platform asked for (glibc's static libraries; Debian's aarch64 cross toolchain for
//! arm64), checked to be a static executable of the right architecture that prints its version
//! (under qemu-user-static when it is foreign), and copied into the build context
//! `target/image/<os>-<arch>/credwatch` that the Containerfile's `COPY` reads.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

/// The image `cargo xtask image` tags by default, which the runtime scenario suite runs.
pub const DEFAULT_TAG: &str = "localhost/credwatch:dev";

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Name of the image for this machine's architecture.
    #[arg(long, default_value = DEFAULT_TAG)]
    pub tag: String,
    /// Platforms to build and check the binary for (comma-separated): linux/amd64, linux/arm64.
    #[arg(long, value_delimiter = ',', default_value = "linux/amd64,linux/arm64")]
    pub platforms: Vec<String>,
    /// Also build an image for every platform and collect them in this manifest list (push it
    /// with `buildah manifest push --all NAME docker://REGISTRY/credwatch:VERSION`).
    #[arg(long)]
    pub manifest: Option<String>,
}

impl Default for ImageArgs {
    fn default() -> Self {
        Self {
            tag: DEFAULT_TAG.to_string(),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            manifest: None,
        }
    }
}

/// One architecture the image is built for: its names in the OCI, Rust and ELF worlds.
struct Platform {
    oci_arch: &'static str,
    rust_target: &'static str,
    elf_machine: u16,
    /// For a cross build: the C toolchain prefix (ring's C code and the final link) and the
    /// qemu-user-static binary that runs the result.
    cross: Option<(&'static str, &'static str)>,
}

const PLATFORMS: [Platform; 2] = [
    Platform {
        oci_arch: "amd64",
        rust_target: "x86_64-unknown-linux-gnu",
        elf_machine: 0x3e,
        cross: None,
    },
    Platform {
        oci_arch: "arm64",
        rust_target: "aarch64-unknown-linux-gnu",
        elf_machine: 0xb7,
        cross: Some(("aarch64-linux-gnu", "qemu-aarch64-static")),
    },
];

impl Platform {
    fn named(name: &str) -> anyhow::Result<&'static Platform> {
        let arch = name.strip_prefix("linux/").unwrap_or(name);
        PLATFORMS.iter().find(|p| p.oci_arch == arch).with_context(|| {
            format!("unknown platform {name}: linux/amd64 and linux/arm64 are supported")
        })
    }

    fn is_host(&self) -> bool {
        std::env::consts::ARCH == self.rust_target.split('-').next().unwrap_or_default()
    }
}

/// This machine's platform, `linux/<arch>`, if the image is built for it.
pub fn host_platform() -> anyhow::Result<String> {
    let host = PLATFORMS.iter().find(|p| p.is_host()).context("this machine's architecture")?;
    Ok(format!("linux/{}", host.oci_arch))
}

pub fn image(root: &Path, args: &ImageArgs) -> anyhow::Result<()> {
    let platforms =
        args.platforms.iter().map(|p| Platform::named(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let host = PLATFORMS.iter().find(|p| p.is_host()).context("this machine's architecture")?;
    let version = env!("CARGO_PKG_VERSION");
    let context = root.join("target/image");
    for platform in &platforms {
        crate::step(&format!("static release binary for linux/{}", platform.oci_arch));
        let binary = build_static(root, platform)?;
        check_static_executable(&binary, platform)?;
        let printed = run_version(&binary, platform)?;
        ensure!(
            printed == format!("credwatch {version}"),
            "{} --version printed {printed:?}",
            binary.display()
        );
        println!("{}: {printed}", binary.display());
        let dir = context.join(format!("linux-{}", platform.oci_arch));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&binary, dir.join("credwatch"))
            .with_context(|| format!("copying {} into {}", binary.display(), dir.display()))?;
    }
    if platforms.iter().any(|p| p.oci_arch == host.oci_arch) {
        crate::step(&format!("buildah: {} (linux/{})", args.tag, host.oci_arch));
        let previous = image_id(&args.tag);
        buildah_bud(root, &context, host, version, &["--tag", &args.tag])?;
        // The image the tag named before is now untagged: remove it rather than let every
        // build leave one behind (it stays if a container still uses it).
        if let Some(previous) = previous.filter(|id| Some(id) != image_id(&args.tag).as_ref()) {
            let _ = Command::new("buildah").args(["rmi", &previous]).output();
        }
    }
    if let Some(manifest) = &args.manifest {
        crate::step(&format!("buildah: manifest list {manifest}"));
        // A fresh list each time: `buildah bud --manifest` adds to an existing one.
        let _ = Command::new("buildah").args(["manifest", "rm", manifest]).output();
        crate::run(Command::new("buildah").args(["manifest", "create", manifest]))?;
        for platform in &platforms {
            buildah_bud(root, &context, platform, version, &["--manifest", manifest])?;
        }
        crate::run(Command::new("buildah").args(["manifest", "inspect", manifest]))?;
    }
    Ok(())
}

/// `cargo build --release` for the platform's Rust target with glibc linked in statically. An
/// explicit `--target` keeps these artefacts (and their flags) in target/<triple>/ apart from
/// the ordinary debug and release builds, so neither rebuilds the other.
fn build_static(root: &Path, platform: &Platform) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let triple_env = platform.rust_target.to_uppercase().replace('-', "_");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--locked", "-p", "agent", "--target", platform.rust_target])
        .env(format!("CARGO_TARGET_{triple_env}_RUSTFLAGS"), "-C target-feature=+crt-static");
    if let Some((prefix, _)) = platform.cross {
        let cc = format!("{prefix}-gcc");
        let triple_cc = platform.rust_target.replace('-', "_");
        cmd.env(format!("CARGO_TARGET_{triple_env}_LINKER"), &cc)
            .env(format!("CC_{triple_cc}"), &cc)
            .env(format!("AR_{triple_cc}"), format!("{prefix}-ar"));
        if which(&cc).is_none() {
            bail!("{cc} not found: scripts/setup.sh installs Debian's cross toolchain");
        }
    }
    crate::run(&mut cmd)?;
    Ok(root.join("target").join(platform.rust_target).join("release/credwatch"))
}

/// An ELF executable for the platform's machine with no program interpreter: it needs nothing
/// from the image (which has nothing).
fn check_static_executable(path: &Path, platform: &Platform) -> anyhow::Result<()> {
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| elf.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |at: usize| elf.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    ensure!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "{}: not a 64-bit little-endian ELF",
        path.display()
    );
    let machine = u16_at(0x12).context("short ELF header")?;
    ensure!(
        machine == platform.elf_machine,
        "{}: ELF machine {machine:#x}, expected {:#x} for {}",
        path.display(),
        platform.elf_machine,
        platform.oci_arch
    );
    let (phoff, phentsize, phnum) = (
        u64_at(0x20).context("short ELF header")? as usize,
        u16_at(0x36).context("short ELF header")? as usize,
        u16_at(0x38).context("short ELF header")? as usize,
    );
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let p_type = u32_at(phoff + i * phentsize).context("truncated program headers")?;
        ensure!(
            p_type != PT_INTERP,
            "{}: dynamically linked (it has a program interpreter); the image has no libc",
            path.display()
        );
    }
    Ok(())
}

/// `credwatch --version`, natively or under qemu-user-static.
fn run_version(binary: &Path, platform: &Platform) -> anyhow::Result<String> {
    let mut cmd = match platform.cross.filter(|_| !platform.is_host()) {
        Some((_, qemu)) => {
            if which(qemu).is_none() {
                bail!("{qemu} not found: scripts/setup.sh installs qemu-user-static");
            }
            let mut cmd = Command::new(qemu);
            cmd.arg(binary);
            cmd
        }
        None => Command::new(binary),
    };
    let out = cmd.arg("--version").output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn buildah_bud(
    root: &Path,
    context: &Path,
    platform: &Platform,
    version: &str,
    extra: &[&str],
) -> anyhow::Result<()> {
    if which("buildah").is_none() {
        bail!("buildah not found: scripts/setup.sh installs it");
    }
    let mut cmd = Command::new("buildah");
    cmd.args(["bud", "--pull=never", "--platform", &format!("linux/{}", platform.oci_arch)])
        .args(["--build-arg", &format!("TARGETARCH={}", platform.oci_arch)])
        .args(["--label", &format!("org.opencontainers.image.version={version}")])
        .args(extra)
        .arg("--file")
        .arg(root.join("Containerfile"))
        .arg(context);
    crate::run(&mut cmd)
}

/// The id of the local image `name`, if there is one.
fn image_id(name: &str) -> Option<String> {
    let out = Command::new("buildah")
        .args(["images", "--quiet", "--no-trunc", name])
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    String::from_utf8(out.stdout).ok()?.lines().next().map(str::to_string)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}
