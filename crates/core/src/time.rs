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
    fn formats_millis_as_rfc3339() {
        assert_eq!(format_millis(1_725_444_000_000), "2024-09-04T10:00:00.000Z");
    }
}
