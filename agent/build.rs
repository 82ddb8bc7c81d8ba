//! Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with the nightly pinned in
//! agent-ebpf/rust-toolchain.toml, so that the agent binary embeds them (ebpf-build: in
//! target/ebpf/, shared by every build configuration).
use std::path::Path;

fn main() -> anyhow::Result<()> {
    // Read when the script runs, not when it is compiled: a target directory reused from
    // another checkout would otherwise build that checkout's programs.
    let workspace = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("..");
    ebpf_build::build(&workspace, "agent-ebpf", &[&workspace.join("agent-common")])
}
