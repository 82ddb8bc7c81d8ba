//! `--cluster-cidr`/`--aws-api-cidr` values: any text, then membership of any address.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent::features::tcp::classify::Cidr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (addr, text) = data.split_at(data.len().min(16));
    let Ok(text) = std::str::from_utf8(text) else { return };
    let Ok(cidr) = text.parse::<Cidr>() else { return };
    let again: Cidr = cidr.to_string().parse().expect("Display parses back");
    assert_eq!(again, cidr);
    let mut bytes = [0u8; 16];
    bytes[..addr.len()].copy_from_slice(addr);
    let v6 = IpAddr::V6(Ipv6Addr::from(bytes));
    let v4 = IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]));
    let _ = (cidr.contains(v4), cidr.contains(v6));
    // A range contains its own base address.
    let (base, _) = text.trim().split_once('/').unwrap();
    assert!(cidr.contains(base.parse().unwrap()), "{text}");
});
