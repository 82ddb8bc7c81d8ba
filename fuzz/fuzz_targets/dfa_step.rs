//! The kernel's byte automata, run in userspace over any bytes from any state: no panic, the
//! state stays in range, terminal states stay terminal with their accumulator untouched, and the
//! accumulator never holds more than the timestamp's 14 digits.
#![no_main]
use agent_common::{
    dfa::{expiration, headers, request_line, step_large},
    sdk::Sdk,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else { return };
    let (mut state, mut acc) = (first, 0u64);
    for &b in bytes {
        let (next, next_acc) = step_large(&expiration::TABLE, state, acc, b);
        if state >= expiration::ACCEPT {
            assert_eq!((next, next_acc), (state, acc), "terminal state {state} moved");
        }
        if b == 0 {
            assert_eq!((next, next_acc), (state, acc), "NUL moved state {state}");
        }
        (state, acc) = (next, next_acc);
        assert!(acc < 100_000_000_000_000, "more than 14 digits: {acc}");
    }
    // The header automaton (with the User-Agent's product trie): from any used state, flags
    // are never cleared, the SDK id is set at most once and always names a family.
    let start = first % headers::STATES_USED as u8;
    let mut scan = headers::Scan { state: start, flags: 0, sdk: 0 };
    for &b in bytes {
        let before = scan;
        headers::step(&mut scan, b);
        assert!((scan.state as usize) < headers::STATES_USED);
        assert_eq!(scan.flags & before.flags, before.flags, "flags are never cleared");
        assert!((scan.sdk as usize) < Sdk::ALL.len(), "id {} out of range", scan.sdk);
        if before.sdk != 0 {
            assert_eq!(scan.sdk, before.sdk, "the first User-Agent's id changed");
        }
        if before.state == headers::PIPELINED || before.state == headers::BODY {
            assert_eq!(scan.state, before.state, "terminal state {} moved", before.state);
        }
        if b == 0 {
            assert_eq!(scan, before, "NUL moved state {}", before.state);
        }
    }
    let mut scan = request_line::Scan { state: first, ..Default::default() };
    for &b in bytes {
        let before = scan;
        request_line::step(&mut scan, b);
        assert!((scan.state as usize) < request_line::STATES_USED.max(before.state as usize + 1));
        assert!(scan.role_len <= before.role_len + 1);
    }
});
