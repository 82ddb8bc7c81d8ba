//! Query names as the kernel sends them: any bytes.
#![no_main]
use agent::features::dns::record::name_from_wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|wire: &[u8]| {
    if let Some(name) = name_from_wire(wire) {
        // A label value: printable ASCII, bounded, lower case (escapes are `\DDD`).
        assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name:?}");
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
        assert!(name.len() <= 4 * wire.len(), "{name:?}");
    }
});
