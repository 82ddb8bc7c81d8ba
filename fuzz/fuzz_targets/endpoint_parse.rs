//! `--metadata-endpoint` values: any text. What parses must print back to itself.
#![no_main]
use agent::endpoints::EndpointSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = text.parse::<EndpointSpec>() {
        assert_ne!(spec.addr.port(), 0);
        let again: EndpointSpec = spec.to_string().parse().expect("Display parses back");
        assert_eq!(again, spec);
        let _ = spec.key();
    }
});
