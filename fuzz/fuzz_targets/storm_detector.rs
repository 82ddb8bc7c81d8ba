//! The storm detector fed any sequence of fetches, expirations and ticks, with times that jump
//! forwards and backwards and expirations from any packed timestamp (or none). No panic, and the
//! flag changes it reports always flip the flag.
#![no_main]
use std::{collections::HashMap, time::Duration};

use agent::features::metadata::{
    detector::{Detector, FlagChange, Rule},
    expiration::unix_seconds,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((rule, ops)) = data.split_first_chunk::<4>() else { return };
    let rule = Rule {
        window: Duration::from_secs(1 + u64::from(rule[0])),
        min_fetches: 1 + u32::from(rule[1] % 16),
        factor: f64::from(rule[2]) / 4.0,
        valid_margin: Duration::from_secs(u64::from(rule[3])),
    };
    let mut detector = Detector::new(rule);
    let mut flags: HashMap<u8, bool> = HashMap::new();
    let mut now = 1_795_000_000.0;
    let apply = |change: Option<FlagChange<u8>>, flags: &mut HashMap<u8, bool>| {
        if let Some(FlagChange { key, storm }) = change {
            let before = flags.insert(key, storm).unwrap_or(false);
            assert_ne!(before, storm, "key {key}: a change that changes nothing");
        }
    };
    for op in ops.chunks_exact(8) {
        let key = op[1] % 4;
        let dt = f64::from(i16::from_le_bytes([op[2], op[3]])) / 8.0;
        now += dt;
        match op[0] % 4 {
            0 | 1 => apply(detector.on_fetch(&key, now), &mut flags),
            2 => {
                let packed = u64::from(u32::from_le_bytes([op[4], op[5], op[6], op[7]]));
                // Around now, as real documents are: 2026-11-28 plus packed's low digits.
                let expires = unix_seconds(20261128000000 + packed % 1_000_000)
                    .map_or(f64::from_bits(u64::from(packed) << 32), |t| t as f64);
                apply(detector.on_expiration(&key, now, expires), &mut flags);
            }
            _ => {
                let (changes, forgotten) =
                    detector.tick(now, Duration::from_secs(u64::from(op[4])));
                for c in changes {
                    apply(Some(c), &mut flags);
                }
                for k in forgotten {
                    flags.remove(&k);
                }
            }
        }
    }
});
