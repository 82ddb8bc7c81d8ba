//! Ring-buffer records of any size and content, as if the kernel (or a bug) wrote them.
#![no_main]
use agent::features::dns::record::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    let _ = decode(record);
});
