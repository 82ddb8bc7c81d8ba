//! The kernel parsers on crafted packets, through `BPF_PROG_TEST_RUN` (root only: without it, or
//! on a kernel that should support these runs and does not, every test fails unless a local run
//! opts out; see `can_run`). Every run must return the allow verdict, and each packet must bump
//! exactly the counters and send exactly the events it justifies. The TCP programs, which test
//! runs cannot drive, on live loopback connections from a test cgroup (`tcp`).
mod can_run;
mod dns;
mod harness;
mod http;
mod linklocal;
mod loss;
mod packets;
mod sdk;
mod tcp;
mod traffic;

/// The verifier's work per program, against its 1,000,000-instruction limit: a change that eats
/// the headroom fails here, with numbers, before it fails to load on a node. Kernels before 5.16
/// do not report the count: there, only that the programs loaded is checked, and said.
#[test]
fn verifier_budget() {
    let Some(k) = harness::loaded() else { return };
    let release = can_run::kernel_release();
    let reported = can_run::kernel_at_least(can_run::VERIFIED_INSNS_SINCE);
    for &(name, insns) in &k.verified {
        match insns {
            Some(insns) => {
                println!("{name}: verifier processed {insns} instructions");
                assert!(
                    insns < 500_000,
                    "{name}: {insns} instructions verified, half the limit is 500000"
                );
            }
            None if !reported => println!(
                "{name}: verifier processed ? instructions (Linux {release} does not report it; \
                 5.16 and later do): only the load is checked here"
            ),
            None => panic!("{name}: Linux {release} reported no verified-instruction count"),
        }
    }
}
