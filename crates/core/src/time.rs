//! Event-time parsing: epoch seconds or milliseconds, or an ISO 8601 / RFC 3339 string.

use crate::json::Scalar;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::Deserialize;

/// How a profile's timestamp field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Numbers below 10^11 are epoch seconds, larger ones epoch milliseconds; strings are ISO 8601.
    #[default]
    Auto,
    EpochSeconds,
    EpochMillis,
    Iso8601,
}

/// Earliest and latest event times accepted: 1970-01-01 .. 2200-01-01.
const MAX_MS: i64 = 7_258_118_400_000;

/// Parses a JSON timestamp into epoch milliseconds, or says why it cannot.
pub fn parse_timestamp(value: &Scalar<'_>, format: TimeFormat) -> Result<i64, String> {
    let ms = match (value.as_f64(), value, format) {
        (Some(x), _, TimeFormat::Auto | TimeFormat::EpochSeconds | TimeFormat::EpochMillis) => {
            if !x.is_finite() {
                return Err(format!("{value} is not a finite number"));
            }
            let seconds = match format {
                TimeFormat::EpochSeconds => true,
                TimeFormat::EpochMillis => false,
                _ => x.abs() < 1e11,
            };
            if seconds { x * 1000.0 } else { x }.round()
        }
        (None, Scalar::Str(s), TimeFormat::Auto | TimeFormat::Iso8601) => parse_iso8601(s)? as f64,
        (_, other, format) => return Err(format!("expected a timestamp ({format:?}), found {}", other.describe())),
    };
    if !(0.0..=MAX_MS as f64).contains(&ms) {
        return Err(format!("{value} is outside 1970..2200"));
    }
    Ok(ms as i64)
}

/// Parses RFC 3339 text, or a naive ISO 8601 date-time taken as UTC, into epoch milliseconds.
pub fn parse_iso8601(text: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    // Naive forms are taken as UTC: "2024-09-04 10:00:00", "2024-09-04T10:00:00.123".
    for pattern in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, pattern) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!("{text:?} is not an ISO 8601 timestamp (e.g. 2024-09-04T10:00:00Z)"))
}

/// An event time as precise as its input: epoch nanoseconds, and how many decimals of a second
/// the input carried (0 to 9), so that it is written back with the precision it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PreciseTime {
    pub nanos: i64,
    pub decimals: u8,
}

impl PreciseTime {
    /// RFC 3339 UTC with milliseconds, or with micro- or nanoseconds when the input carried
    /// more than three decimals, e.g. `2024-09-04T10:00:00.000000250Z`.
    pub fn format(&self) -> String {
        let digits = match self.decimals {
            0..=3 => SecondsFormat::Millis,
            4..=6 => SecondsFormat::Micros,
            _ => SecondsFormat::Nanos,
        };
        DateTime::<Utc>::from_timestamp_nanos(self.nanos).to_rfc3339_opts(digits, true)
    }
}

/// Parses a JSON timestamp as [`parse_timestamp`] does, keeping what it holds below the
/// millisecond: ISO 8601 text to the nanosecond (with the count of its decimals), fractional
/// epoch numbers to the microsecond (what an `f64` of epoch seconds holds).
pub fn parse_timestamp_precise(value: &Scalar<'_>, format: TimeFormat) -> Result<PreciseTime, String> {
    let ms = parse_timestamp(value, format)?;
    let precise = match (value.as_f64(), value) {
        (None, Scalar::Str(text)) => {
            let nanos = parse_iso8601_nanos(text)?;
            let decimals = text
                .split_once('.')
                .map_or(0, |(_, fraction)| fraction.bytes().take_while(u8::is_ascii_digit).count().min(9) as u8);
            PreciseTime { nanos, decimals }
        }
        (Some(x), _) if x.fract() != 0.0 => {
            let seconds = match format {
                TimeFormat::EpochSeconds => true,
                TimeFormat::EpochMillis => false,
                _ => x.abs() < 1e11,
            };
            let micros = if seconds { x * 1e6 } else { x * 1e3 }.round() as i64;
            PreciseTime { nanos: micros * 1000, decimals: 6 }
        }
        _ => PreciseTime { nanos: ms * 1_000_000, decimals: 3 },
    };
    Ok(precise)
}

/// [`parse_iso8601`] to the nanosecond.
fn parse_iso8601_nanos(text: &str) -> Result<i64, String> {
    let nanos = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.timestamp_nanos_opt(),
        Err(_) => ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|pattern| NaiveDateTime::parse_from_str(text, pattern).ok())
            .and_then(|t| t.and_utc().timestamp_nanos_opt()),
    };
    nanos.ok_or_else(|| format!("{text:?} is not an ISO 8601 timestamp (e.g. 2024-09-04T10:00:00Z)"))
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. `2024-09-04T10:00:00.000Z`.
pub fn format_millis(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The current wall-clock time in epoch milliseconds.
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    fn json(text: &'static str) -> Scalar<'static> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn auto_tells_seconds_from_millis() {
        assert_eq!(parse_timestamp(&json(r#"1725446400000"#), TimeFormat::Auto), Ok(1_725_446_400_000));
        assert_eq!(parse_timestamp(&json(r#"1725446400"#), TimeFormat::Auto), Ok(1_725_446_400_000));
        assert_eq!(parse_timestamp(&json(r#"1725446400.5"#), TimeFormat::Auto), Ok(1_725_446_400_500));
    }

    #[test]
    fn iso_forms_parse_as_utc() {
        let expected = Ok(1_725_444_000_000);
        assert_eq!(parse_timestamp(&json(r#""2024-09-04T10:00:00Z""#), TimeFormat::Auto), expected);
        assert_eq!(parse_timestamp(&json(r#""2024-09-04T12:00:00+02:00""#), TimeFormat::Iso8601), expected);
        assert_eq!(parse_timestamp(&json(r#""2024-09-04 10:00:00""#), TimeFormat::Auto), expected);
        assert_eq!(parse_timestamp(&json(r#""2024-09-04T10:00:00.000""#), TimeFormat::Auto), expected);
    }

    #[test]
    fn rejects_wrong_types_and_absurd_times() {
        assert!(parse_timestamp(&json(r#""yesterday""#), TimeFormat::Auto).is_err());
        assert!(parse_timestamp(&json(r#"true"#), TimeFormat::Auto).is_err());
        assert!(parse_timestamp(&json(r#"-5"#), TimeFormat::Auto).is_err());
        assert!(parse_timestamp(&json(r#"1e300"#), TimeFormat::Auto).is_err());
        assert!(parse_timestamp(&json(r#""2024-09-04T10:00:00Z""#), TimeFormat::EpochMillis).is_err());
    }

    #[test]
    fn precise_times_keep_what_the_input_carried() {
        let precise = |text: &'static str| parse_timestamp_precise(&json(text), TimeFormat::Auto).unwrap();
        let ns = precise(r#""2024-09-04T10:00:00.000000250Z""#);
        assert_eq!(ns, PreciseTime { nanos: 1_725_444_000_000_000_250, decimals: 9 });
        assert_eq!(ns.format(), "2024-09-04T10:00:00.000000250Z");
        assert_eq!(precise(r#""2024-09-04T12:00:00.123456+02:00""#).format(), "2024-09-04T10:00:00.123456Z");
        // Second or millisecond input is written as before: with milliseconds.
        assert_eq!(precise(r#""2024-09-04T10:00:00Z""#).format(), "2024-09-04T10:00:00.000Z");
        assert_eq!(precise("1725444000123").format(), "2024-09-04T10:00:00.123Z");
        assert_eq!(precise("1725444000.25").format(), "2024-09-04T10:00:00.250000Z");
        // The millisecond a reading gets is the one its precise time falls in.
        assert_eq!(precise(r#""2024-09-04 10:00:00.999999999""#).nanos / 1_000_000, 1_725_444_000_999);
        assert!(parse_timestamp_precise(&json(r#""noon""#), TimeFormat::Auto).is_err());
    }

    #[test]
    fn formats_millis_as_rfc3339() {
        assert_eq!(format_millis(1_725_444_000_000), "2024-09-04T10:00:00.000Z");
    }
}
