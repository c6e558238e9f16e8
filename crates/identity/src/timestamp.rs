//! Conversions between `SystemTime` and the whole-second Unix times certificates carry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a time as RFC 3339 in UTC to the second (`2025-01-31T12:00:00Z`), the form used in
/// this crate's error messages and by the CLI when it reports certificate expiry.
pub fn format_utc(at: SystemTime) -> String {
    let secs = unix_seconds(at);
    to_offset_date_time(at)
        .and_then(|at| at.format(&Rfc3339).ok())
        // RFC 3339 has no room for years past 9999; such dates still deserve a readable answer.
        .unwrap_or_else(|| format!("{secs} seconds after the Unix epoch"))
}

/// Whole seconds since the Unix epoch, negative before it, saturating far out of range.
pub(crate) fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

pub(crate) fn from_unix_seconds(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// `None` when the time is outside what an X.509 validity can express, so callers can refuse
/// it with a message instead of panicking inside `time`.
pub(crate) fn to_offset_date_time(at: SystemTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix_seconds(at)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_to_the_second() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert_eq!(format_utc(at), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn unix_seconds_round_trip_on_both_sides_of_the_epoch() {
        for secs in [-86_400, 0, 1_700_000_000] {
            assert_eq!(unix_seconds(from_unix_seconds(secs)), secs);
        }
    }

    #[test]
    fn out_of_range_times_are_refused_not_panicked_on() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000 * 365 * 86_400);
        assert!(to_offset_date_time(far).is_none());
        assert!(format_utc(far).ends_with("seconds after the Unix epoch"));
    }
}
