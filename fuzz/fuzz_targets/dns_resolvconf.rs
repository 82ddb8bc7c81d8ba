//! A pod's /etc/resolv.conf is the pod's to write: any bytes. Then the search-list analysis with
//! what was parsed, over names taken from the same input.
#![no_main]
use agent::features::dns::{expansion::Expansion, resolvconf::parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let conf = parse(&text);
    assert!(conf.ndots <= 15);
    for s in &conf.search {
        assert!(!s.is_empty() && !s.ends_with('.'), "{s:?}");
        assert_eq!(*s, s.to_ascii_lowercase());
    }
    let mut expansion = Expansion::default();
    for (i, name) in text.split_whitespace().enumerate() {
        let _ = expansion.is_expansion(&conf, &name.to_ascii_lowercase(), i as f64);
    }
});
