//! Go `time.Duration` strings, as zot's configuration writes them.
//!
//! `"1h30m"`, `"90s"`, `"1.5h"`, `"250ms"`; units ns, us, µs, ms, s, m, h.
//! There is no day unit. A bare JSON number counts as nanoseconds, as in Go.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// A non-negative duration read from a Go duration string or a number of
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GoDuration(pub Duration);

/// Parses a Go duration string. Negative durations are refused: no key of
/// Berth's configuration means anything by them.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration {s:?} (use Go duration syntax such as \"90s\", \"1h30m\")");
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err(format!("negative duration {s:?} is not allowed"));
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    // Go's durations are i64 nanoseconds (about 292 years): longer ones are
    // an error there, and here they would overflow `Instant + Duration` in
    // the loops that wait on them.
    let nanos = total * 1e9;
    if nanos.is_nan() || nanos >= MAX_NANOS as f64 {
        return Err(format!(
            "duration {s:?} is out of range (at most {MAX_NANOS}ns)"
        ));
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// The longest duration Go (and so zot's configuration) can express.
const MAX_NANOS: u64 = i64::MAX as u64;

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"1h\" or a number of nanoseconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoDuration, E> {
                parse(s).map(GoDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<GoDuration, E> {
                if n > MAX_NANOS {
                    return Err(E::custom("duration is out of range"));
                }
                Ok(GoDuration(Duration::from_nanos(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<GoDuration, E> {
                u64::try_from(n)
                    .map(|n| GoDuration(Duration::from_nanos(n)))
                    .map_err(|_| E::custom("negative duration is not allowed"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2us").unwrap(), Duration::from_micros(2));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        for bad in ["", "7d", "1", "h", "1h-", "-1h", "1.2.3s", "abc"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// Durations past Go's range are refused (before, `"5124095576030431h"`
    /// parsed, and a loop adding it to `Instant::now()` panicked).
    #[test]
    fn out_of_range_durations_are_refused() {
        for huge in [
            "2562048h",
            "5124095576030431h",
            "9223372036854775808ns",
            "99999999999999999999999999999999999999s",
        ] {
            assert!(parse(huge).is_err(), "{huge}");
        }
        let longest = parse("2562047h").unwrap();
        assert!(std::time::Instant::now().checked_add(longest).is_some());
        let n: Result<GoDuration, _> = serde_json::from_str("18446744073709551615");
        assert!(n.is_err());
        let n: GoDuration = serde_json::from_str("9223372036854775807").unwrap();
        assert!(std::time::Instant::now().checked_add(n.0).is_some());
    }
}
