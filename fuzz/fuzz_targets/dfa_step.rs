//! The kernel's byte automata, run in userspace over any bytes from any state: no panic, the
//! state stays in range, terminal states stay terminal with their accumulator untouched, and the
//! accumulator never holds more than the timestamp's 14 digits.
#![no_main]
use agent_common::dfa::{STATES, expiration, headers, request_line, step_flags, step_large};
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
    let (mut state, mut flags) = (first % STATES as u8, 0u8);
    for &b in bytes {
        let (next, next_flags) = step_flags(&headers::TABLE, state, flags, b);
        assert!((next as usize) < STATES);
        assert_eq!(next_flags & flags, flags, "flags are never cleared");
        if state == headers::PIPELINED || state == headers::BODY {
            assert_eq!(next, state, "terminal state {state} moved");
        }
        (state, flags) = (next, next_flags);
    }
    let mut scan = request_line::Scan { state: first, ..Default::default() };
    for &b in bytes {
        let before = scan;
        request_line::step(&mut scan, b);
        assert!((scan.state as usize) < request_line::STATES_USED.max(before.state as usize + 1));
        assert!(scan.role_len <= before.role_len + 1);
    }
});
