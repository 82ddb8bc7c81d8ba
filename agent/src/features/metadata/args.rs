//! The storm rule's command-line flags (part of `credwatch run`).
use clap::Args;

use crate::features::metadata::detector::Rule;

/// The storm rule (docs/metrics.md#credential-refresh-storm): within `window`, at least
/// `min_fetches` credential fetches happened while the previously delivered credentials still
/// had more than `valid_margin` to live, and that rate is at least `factor` times one fetch
/// per credential lifetime.
#[derive(Args, Debug, Clone)]
pub struct DetectorArgs {
    /// Sliding window the storm rule looks at, seconds.
    #[arg(long, env = "CREDWATCH_STORM_WINDOW", default_value_t = 120)]
    pub storm_window: u64,

    /// Early fetches within the window needed to flag a storm.
    #[arg(long, env = "CREDWATCH_STORM_MIN_FETCHES", default_value_t = 5)]
    pub storm_min_fetches: u32,

    /// How many times above one fetch per lifetime the early-fetch rate must be.
    #[arg(long, env = "CREDWATCH_STORM_FACTOR", default_value_t = 10.0)]
    pub storm_factor: f64,

    /// A fetch is early when the previous credentials had more than this left, seconds.
    #[arg(long, env = "CREDWATCH_STORM_VALID_MARGIN", default_value_t = 60)]
    pub storm_valid_margin: u64,
}

impl From<&DetectorArgs> for Rule {
    fn from(a: &DetectorArgs) -> Self {
        Self {
            window: std::time::Duration::from_secs(a.storm_window.max(1)),
            min_fetches: a.storm_min_fetches.max(1),
            factor: a.storm_factor.max(0.0),
            valid_margin: std::time::Duration::from_secs(a.storm_valid_margin),
        }
    }
}
