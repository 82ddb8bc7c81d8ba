//! The kernel sends an expiration as the decimal number `YYYYMMDDhhmmss` (UTC). This turns it
//! into Unix time, rejecting impossible dates (crate::clock places the event itself on the wall
//! clock, so remaining lifetime is measured at the moment the response passed).

/// Unix seconds for a packed `YYYYMMDDhhmmss`, or None for an impossible date or time.
pub fn unix_seconds(packed: u64) -> Option<i64> {
    let sec = (packed % 100) as u32;
    let min = (packed / 100 % 100) as u32;
    let hour = (packed / 10_000 % 100) as u32;
    let day = (packed / 1_000_000 % 100) as u32;
    let month = (packed / 100_000_000 % 100) as u32;
    let year = (packed / 10_000_000_000) as i64;
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's civil-from-days inverse).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(unix_seconds(19700101000000), Some(0));
        assert_eq!(unix_seconds(20000229120000), Some(951_825_600));
        assert_eq!(unix_seconds(20261128101500), Some(1_795_860_900));
    }

    #[test]
    fn impossible_dates_are_rejected() {
        for bad in [
            20261328101500,
            20261100101500,
            20230229000000,
            20261128241500,
            20261128106000,
            19691231235959,
            0,
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }
}
