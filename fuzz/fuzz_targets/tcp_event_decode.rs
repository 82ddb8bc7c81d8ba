//! Ring-buffer records of any size and content.
#![no_main]
use agent::features::tcp::record::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    let _ = decode(record);
});
