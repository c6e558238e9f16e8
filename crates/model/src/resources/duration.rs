//! Gateway API durations (GEP-2257): `10s`, `500ms`, `1h30m`; and days (`7d`), the one
//! extension, so certificate and token lifetimes read naturally. The same syntax serves
//! every YAML field and every command-line flag.

use super::checked::{deserialize_with, FromText};
use std::fmt;
use std::str::FromStr;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// A duration written as GEP-2257 says: one to four parts, each one to five digits
/// followed by `h`, `m`, `s` or `ms` (`10s`, `500ms`, `1h30m`, `0s`), or `d` for days (`7d`,
/// `1d12h`). Millisecond precision, at most `99999h59m59s999ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    millis: u64,
}

impl Duration {
    pub const ZERO: Duration = Duration { millis: 0 };
    /// The longest duration GEP-2257 can write.
    pub const MAX: Duration = Duration {
        millis: 99_999 * HOUR + 59 * MINUTE + 59 * SECOND + 999,
    };

    /// For defaults written in code; callers keep values within [`Duration::MAX`].
    pub(crate) const fn from_millis(millis: u64) -> Duration {
        Duration { millis }
    }

    pub(crate) const fn from_secs(secs: u64) -> Duration {
        Duration::from_millis(secs * SECOND)
    }

    pub fn as_millis(self) -> u64 {
        self.millis
    }

    pub fn is_zero(self) -> bool {
        self.millis == 0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Duration, String> {
        parse(text).map_err(|reason| {
            format!("invalid duration {text:?}: {reason}; write it like 10s, 500ms, 1h30m or 7d")
        })
    }
}

fn parse(text: &str) -> Result<Duration, &'static str> {
    if text.is_empty() {
        return Err("it is empty");
    }
    let mut rest = text;
    let mut parts = 0;
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("each part must start with a whole number (no sign, no fraction)");
        }
        if digits > 5 {
            return Err("each part has at most five digits");
        }
        let (number, tail) = rest.split_at(digits);
        let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(letters);
        let unit = match unit {
            "d" => DAY,
            "h" => HOUR,
            "m" => MINUTE,
            "s" => SECOND,
            "ms" => 1,
            "" => return Err("each number needs a unit: d, h, m, s or ms"),
            _ => return Err("the units are d, h, m, s and ms"),
        };
        parts += 1;
        if parts > 4 {
            return Err("at most four parts are allowed");
        }
        // Five digits times a day fits easily in u64; the parse cannot fail.
        let number: u64 = number.parse().map_err(|_| "not a number")?;
        millis += number * unit;
        rest = tail;
    }
    if millis > Duration::MAX.millis {
        return Err("it is longer than the maximum, 99999h59m59s999ms");
    }
    Ok(Duration { millis })
}

/// Formats the way GEP-2257 asks: each unit at most once, largest first, `0s` for zero.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0s");
        }
        let parts = [
            (self.millis / HOUR, "h"),
            (self.millis % HOUR / MINUTE, "m"),
            (self.millis % MINUTE / SECOND, "s"),
            (self.millis % SECOND, "ms"),
        ];
        for (value, unit) in parts {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromText for Duration {
    const EXPECTING: &'static str = "a duration like 10s, 500ms, 1h30m or 7d";

    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

/// A [`Duration`] that must be longer than zero (connect timeouts, TTLs, intervals).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NonZeroDuration(Duration);

impl NonZeroDuration {
    pub(crate) const fn from_secs(secs: u64) -> NonZeroDuration {
        NonZeroDuration(Duration::from_secs(secs))
    }

    pub fn get(self) -> Duration {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        self.0.as_millis()
    }
}

impl fmt::Display for NonZeroDuration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromText for NonZeroDuration {
    const EXPECTING: &'static str = "a duration longer than zero, like 10s";

    fn from_text(text: &str) -> Result<Self, String> {
        let duration: Duration = text.parse()?;
        if duration.is_zero() {
            return Err(format!("duration {text:?} must be longer than zero"));
        }
        Ok(NonZeroDuration(duration))
    }
}

deserialize_with!(text: Duration, NonZeroDuration);

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> u64 {
        text.parse::<Duration>().unwrap().as_millis()
    }

    #[test]
    fn parses_gep_2257_examples() {
        assert_eq!(millis("0s"), 0);
        assert_eq!(millis("10s"), 10_000);
        assert_eq!(millis("500ms"), 500);
        assert_eq!(millis("1h"), 3_600_000);
        assert_eq!(millis("1h30m"), 5_400_000);
        assert_eq!(millis("1h30m30s500ms"), 5_430_500);
        // Leading zeroes are decimal, and parts may repeat or come in any order.
        assert_eq!(millis("00060m"), 3_600_000);
        assert_eq!(millis("01h"), 3_600_000);
        assert_eq!(millis("30s1m"), 90_000);
        assert_eq!(millis("99999h59m59s999ms"), Duration::MAX.as_millis());
    }

    #[test]
    fn days_are_the_one_extension() {
        assert_eq!(millis("7d"), 7 * 24 * 3_600_000);
        assert_eq!(millis("1d12h"), 36 * 3_600_000);
        // Still within the maximum GEP-2257 can write.
        assert!("4167d".parse::<Duration>().is_err());
        assert_eq!(Duration::from_millis(millis("7d")).to_string(), "168h");
    }

    #[test]
    fn rejects_what_gep_2257_forbids() {
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "+1s",
            "1us",
            "1H",
            "100000s",
            "1h2m3s4ms5ms",
            " 1s",
            "1s ",
            "99999h99999m",
        ] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(
                err.starts_with(&format!("invalid duration {bad:?}")),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn formats_largest_unit_first() {
        assert_eq!(Duration::ZERO.to_string(), "0s");
        assert_eq!(Duration::from_millis(5_400_000).to_string(), "1h30m");
        assert_eq!(Duration::from_millis(3_600_001).to_string(), "1h1ms");
        assert_eq!(Duration::MAX.to_string(), "99999h59m59s999ms");
    }

    #[test]
    fn format_then_parse_round_trips() {
        let gep = regex::Regex::new("^([0-9]{1,5}(h|m|s|ms)){1,4}$").unwrap();
        // A walk that hits every unit boundary and a spread of values up to the maximum.
        let mut value = 0u64;
        let mut step = 1u64;
        while value <= Duration::MAX.as_millis() {
            let duration = Duration::from_millis(value);
            let text = duration.to_string();
            assert!(gep.is_match(&text), "{text} is not a GEP-2257 duration");
            assert_eq!(text.parse::<Duration>(), Ok(duration), "{text}");
            value += step;
            step = step * 21 / 20 + 1;
        }
        for value in (0..5_000).chain(3_595_000..3_605_000) {
            let duration = Duration::from_millis(value);
            assert_eq!(duration.to_string().parse::<Duration>(), Ok(duration));
        }
    }

    #[test]
    fn non_zero_duration_rejects_zero() {
        let err = NonZeroDuration::from_text("0ms").unwrap_err();
        assert!(err.contains("longer than zero"), "{err}");
        assert_eq!(NonZeroDuration::from_text("2s").unwrap().as_millis(), 2_000);
    }
}
