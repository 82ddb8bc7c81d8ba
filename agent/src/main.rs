static EBPF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));
fn main() {
    let mut ebpf = aya::EbpfLoader::new()
        .verifier_log_level(aya::VerifierLogLevel::STATS)
        .load(EBPF)
        .expect("load");
    for (name, prog) in ebpf.programs_mut() {
        let p: &mut aya::programs::CgroupSkb = prog.try_into().unwrap();
        match p.load() {
            Ok(()) => println!("{name} loaded"),
            Err(e) => println!("{name}: {e:#?}"),
        }
    }
}
