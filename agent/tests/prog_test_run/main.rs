//! The kernel parsers on crafted packets, through `BPF_PROG_TEST_RUN` (root only; skipped with a
//! printed reason otherwise). Every run must return the allow verdict, and each packet must bump
//! exactly the counters and send exactly the events it justifies.
mod dns;
mod harness;
mod http;
mod loss;
mod packets;

/// The verifier's work per program, against its 1,000,000-instruction limit: a change that eats
/// the headroom fails here, with numbers, before it fails to load on a node.
#[test]
fn verifier_budget() {
    let Some(k) = harness::loaded() else { return };
    for &(name, insns) in &k.verified {
        match insns {
            Some(insns) => println!("{name}: verifier processed {insns} instructions"),
            None => println!("{name}: verifier processed ? instructions (reported from 5.16)"),
        }
    }
    for &(name, insns) in &k.verified {
        let insns = insns.unwrap_or(0);
        assert!(insns < 500_000, "{name}: {insns} instructions verified, half the limit is 500000");
    }
}
