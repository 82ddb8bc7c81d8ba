//! Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with the nightly pinned in
//! agent-ebpf/rust-toolchain.toml, so that the agent binary embeds them (ebpf-build: in
//! target/ebpf/, shared by every build configuration).
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ebpf_build::build(&workspace, "agent-ebpf", &[&workspace.join("agent-common")])
}
