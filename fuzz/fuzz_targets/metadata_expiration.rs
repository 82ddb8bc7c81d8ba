//! The packed `YYYYMMDDhhmmss` the kernel assembles from the document's digits: any u64.
#![no_main]
use agent::features::metadata::expiration::unix_seconds;
use libfuzzer_sys::fuzz_target;

/// 9999-12-31T23:59:60Z, the latest instant the format can name.
const LAST: i64 = 253_402_300_800;

fuzz_target!(|packed: u64| {
    if let Some(t) = unix_seconds(packed) {
        assert!((0..=LAST).contains(&t), "{packed} -> {t}");
        // One second later in the packed form is one second later (or an impossible time).
        if packed % 100 < 59 {
            assert_eq!(unix_seconds(packed + 1), Some(t + 1), "{packed}");
        }
    }
});
