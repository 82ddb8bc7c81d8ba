//! Ring-buffer records of any size and content.
#![no_main]
use agent::features::metadata::record::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    if let Ok(o) = decode(record) {
        // The role label is bounded whatever the record says its length is.
        assert!(o.role.len() <= 3 * agent_common::ROLE_MAX);
    }
});
