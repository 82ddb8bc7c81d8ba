//! The kernel's byte automata, run in userspace over any bytes from any state: no panic, the
//! state stays in range, terminal states stay terminal with their accumulator untouched, and the
//! accumulator never holds more than the timestamp's 14 digits.
#![no_main]
use agent_common::dfa::{STATES, expiration, step, token_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else { return };
    for (table, accept) in
        [(&expiration::TABLE, expiration::ACCEPT), (&token_header::TABLE, token_header::ACCEPT)]
    {
        let (mut state, mut acc) = (first % STATES as u8, 0u64);
        for &b in bytes {
            let (next, next_acc) = step(table, state, acc, b);
            assert!((next as usize) < STATES);
            if state >= accept {
                assert_eq!((next, next_acc), (state, acc), "terminal state {state} moved");
            }
            if b == 0 {
                assert_eq!((next, next_acc), (state, acc), "NUL moved state {state}");
            }
            (state, acc) = (next, next_acc);
            assert!(acc < 100_000_000_000_000, "more than 14 digits: {acc}");
        }
    }
});
