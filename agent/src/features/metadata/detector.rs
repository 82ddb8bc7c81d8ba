//! The credential-refresh storm rule, per (workload, role).
//!
//! A fetch is *early* when the credentials delivered by the previous fetch still had more than
//! `valid_margin` to live. A storm is: within the sliding `window`, at least `min_fetches` early
//! fetches, at a rate of at least `factor` fetches per credential lifetime. A healthy SDK fetches
//! about once per lifetime (a little early, by its refresh window), so it never reaches
//! `min_fetches` early fetches inside a window that is much shorter than the lifetime; an SDK whose
//! refresh window is longer than the lifetime it is given (Java v1 with KIAM) fetches on every
//! request and crosses the threshold within a few requests. The flag clears once the window holds
//! fewer early fetches than that, i.e. at most `window` after the behaviour stops.
use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub window: Duration,
    pub min_fetches: u32,
    pub factor: f64,
    pub valid_margin: Duration,
}

/// Per-key history. Times are Unix seconds (f64), the unit the expirations come in.
#[derive(Debug, Default)]
struct Track {
    early: VecDeque<f64>,
    /// Expiration of the last delivered credentials.
    valid_until: Option<f64>,
    /// Their lifetime at delivery, seconds.
    lifetime: Option<f64>,
    last_seen: f64,
    storm: bool,
}

/// Tracks every (workload, role) key; `K` is whatever identifies the series.
#[derive(Debug)]
pub struct Detector<K> {
    rule: Rule,
    tracks: HashMap<K, Track>,
}

/// A change of a key's storm flag, to be written to the gauge.
#[derive(Debug, PartialEq)]
pub struct FlagChange<K> {
    pub key: K,
    pub storm: bool,
}

impl<K: std::hash::Hash + Eq + Clone> Detector<K> {
    pub fn new(rule: Rule) -> Self {
        Self { rule, tracks: HashMap::new() }
    }

    /// A successful credential fetch at `now`. Returns the flag if it changed.
    pub fn on_fetch(&mut self, key: &K, now: f64) -> Option<FlagChange<K>> {
        let margin = self.rule.valid_margin.as_secs_f64();
        let track = self.tracks.entry(key.clone()).or_default();
        track.last_seen = now;
        if track.valid_until.is_some_and(|until| until - now > margin) {
            track.early.push_back(now);
        }
        self.evaluate(key, now)
    }

    /// The expiration of the credentials just fetched (it arrives after the response event).
    pub fn on_expiration(&mut self, key: &K, now: f64, expires_at: f64) -> Option<FlagChange<K>> {
        let track = self.tracks.entry(key.clone()).or_default();
        track.last_seen = now;
        track.valid_until = Some(expires_at);
        track.lifetime = Some((expires_at - now).max(1.0));
        self.evaluate(key, now)
    }

    /// Re-evaluates every key (so flags clear when fetches stop) and forgets keys idle for
    /// `forget_after`, whose series the caller removes. Returns flag changes and forgotten keys.
    pub fn tick(&mut self, now: f64, forget_after: Duration) -> (Vec<FlagChange<K>>, Vec<K>) {
        let keys: Vec<K> = self.tracks.keys().cloned().collect();
        let changes = keys.iter().filter_map(|k| self.evaluate(k, now)).collect();
        let idle = forget_after.as_secs_f64();
        let forgotten: Vec<K> = self
            .tracks
            .iter()
            .filter(|(_, t)| now - t.last_seen > idle)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &forgotten {
            self.tracks.remove(k);
        }
        (changes, forgotten)
    }

    /// Forgets every key `gone` matches (e.g. keys of a workload whose series were removed).
    pub fn forget(&mut self, gone: impl Fn(&K) -> bool) {
        self.tracks.retain(|k, _| !gone(k));
        if self.tracks.capacity() > 4 * self.tracks.len().max(64) {
            self.tracks.shrink_to_fit();
        }
    }

    #[cfg(test)]
    pub fn is_storm(&self, key: &K) -> bool {
        self.tracks.get(key).is_some_and(|t| t.storm)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tracks.len()
    }

    fn evaluate(&mut self, key: &K, now: f64) -> Option<FlagChange<K>> {
        let rule = self.rule;
        let track = self.tracks.get_mut(key)?;
        let window = rule.window.as_secs_f64();
        while track.early.front().is_some_and(|&t| now - t > window) {
            track.early.pop_front();
        }
        let early = track.early.len() as f64;
        // Fetches per lifetime at the observed rate: early / window × lifetime.
        let per_lifetime = track.lifetime.map_or(f64::INFINITY, |l| early / window * l);
        let storm = early >= f64::from(rule.min_fetches) && per_lifetime >= rule.factor;
        (storm != track.storm).then(|| {
            track.storm = storm;
            FlagChange { key: key.clone(), storm }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule {
            window: Duration::from_secs(120),
            min_fetches: 5,
            factor: 10.0,
            valid_margin: Duration::from_secs(60),
        }
    }

    /// Fetches every `every` seconds, each delivering credentials with `lifetime` left.
    fn run(
        d: &mut Detector<&'static str>,
        start: f64,
        n: u32,
        every: f64,
        lifetime: f64,
    ) -> Vec<bool> {
        (0..n)
            .map(|i| {
                let t = start + f64::from(i) * every;
                d.on_fetch(&"k", t);
                d.on_expiration(&"k", t, t + lifetime);
                d.is_storm(&"k")
            })
            .collect()
    }

    #[test]
    fn java_v1_with_kiam_credentials_is_a_storm_from_the_sixth_fetch() {
        let mut d = Detector::new(rule());
        let flags = run(&mut d, 0.0, 10, 1.0, 900.0);
        // the first fetch is not early; fetches 2..=6 are the five early ones
        assert_eq!(flags, [false, false, false, false, false, true, true, true, true, true]);
    }

    #[test]
    fn one_fetch_per_lifetime_is_healthy() {
        let mut d = Detector::new(rule());
        // refreshes 5 min before expiry of 15-min credentials: early, but once per 10 min
        assert!(run(&mut d, 0.0, 12, 600.0, 900.0).iter().all(|s| !s));
        let mut d = Detector::new(rule());
        assert!(run(&mut d, 0.0, 3, 3600.0, 21600.0).iter().all(|s| !s));
    }

    #[test]
    fn fetching_after_expiry_is_not_early() {
        let mut d = Detector::new(rule());
        // credentials live 30 s, fetched every 40 s: never while still valid
        assert!(run(&mut d, 0.0, 20, 40.0, 30.0).iter().all(|s| !s));
    }

    #[test]
    fn short_lifetimes_need_the_rate_factor_too() {
        let mut d = Detector::new(rule());
        // 100-s credentials fetched every 20 s while 80 s remain: 6 early per 120 s window is
        // 5 fetches per lifetime, below the factor of 10
        assert!(run(&mut d, 0.0, 20, 20.0, 100.0).iter().all(|s| !s));
    }

    #[test]
    fn the_flag_clears_when_the_storm_stops() {
        let mut d = Detector::new(rule());
        run(&mut d, 0.0, 10, 1.0, 900.0);
        assert!(d.is_storm(&"k"));
        let (changes, forgotten) = d.tick(60.0, Duration::from_secs(3600));
        assert!(changes.is_empty() && forgotten.is_empty());
        let (changes, _) = d.tick(130.0, Duration::from_secs(3600));
        assert_eq!(changes, vec![FlagChange { key: "k", storm: false }]);
        let (_, forgotten) = d.tick(4000.0, Duration::from_secs(3600));
        assert_eq!(forgotten, vec!["k"]);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn fetches_without_expiration_still_count_once_one_is_known() {
        let mut d = Detector::new(rule());
        d.on_fetch(&"k", 0.0);
        d.on_expiration(&"k", 0.0, 900.0);
        for t in 1..=5 {
            d.on_fetch(&"k", f64::from(t)); // documents without a parsable Expiration
        }
        assert!(d.is_storm(&"k"));
    }
}
