//! The agent's one clock. The kernel stamps events with CLOCK_MONOTONIC nanoseconds
//! (`bpf_ktime_get_ns`); metrics that compare with credential expirations need Unix time. Both
//! readings, and the conversion between them, are here.
use std::time::{SystemTime, UNIX_EPOCH};

/// Reads the monotonic and wall clocks, and places kernel timestamps on the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// realtime − monotonic, nanoseconds, read once at start: an event's Unix time does not move
    /// when the wall clock is stepped later (NTP), as the kernel's timestamps do not.
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        Self { offset_ns: read_ns(libc::CLOCK_REALTIME) - read_ns(libc::CLOCK_MONOTONIC) }
    }

    /// Unix seconds of a kernel timestamp (CLOCK_MONOTONIC nanoseconds).
    pub fn unix_seconds(&self, ktime_ns: u64) -> f64 {
        (i128::from(ktime_ns) + self.offset_ns) as f64 / 1e9
    }

    /// Monotonic now, nanoseconds: the clock the kernel stamps events and pending queries with.
    pub fn monotonic_ns(&self) -> u64 {
        read_ns(libc::CLOCK_MONOTONIC) as u64
    }

    /// Wall-clock now, Unix seconds.
    pub fn unix_now(&self) -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn read_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_time_maps_to_wall_time() {
        let clock = Clock::new();
        let mono = clock.monotonic_ns();
        assert!((clock.unix_seconds(mono) - clock.unix_now()).abs() < 1.0);
        assert!(clock.monotonic_ns() >= mono);
    }
}
