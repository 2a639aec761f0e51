//! The detections `teleguard eval` scores: NDJSON from `teleguard replay` (anomalies only, or
//! every score with `--all-scores`), or the JSON array `GET /api/anomalies` answers.

use crate::json::Scalar;
use crate::time::{TimeFormat, parse_timestamp};
use serde::Deserialize;

/// One detector's verdict on one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub entity: String,
    pub profile: Option<String>,
    /// Event time of the reading judged.
    pub time_ms: i64,
    pub detector: String,
    pub metric: Option<String>,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    /// False only on `--all-scores` lines for readings the detector found normal: those are
    /// scores, not detections.
    pub is_anomaly: bool,
}

/// A record as written by `teleguard replay` or the HTTP API.
#[derive(Debug, Deserialize)]
struct RawDetection {
    /// The anomaly's id: a lasting finding (an episode) is sent again with its end under the
    /// same id, and is still one detection.
    #[serde(default)]
    id: Option<String>,
    entity: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(alias = "event_time")]
    timestamp: serde_json::Value,
    detector: String,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default, alias = "anomaly_score")]
    score: Option<f64>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    is_anomaly: Option<bool>,
}

/// Why a detections file cannot be read: where, and what is wrong there.
#[derive(Debug, thiserror::Error)]
#[error("{place}: {message}")]
pub struct DetectionsError {
    /// `line N` for NDJSON, `item N` for a JSON array.
    pub place: String,
    pub message: String,
}

/// Reads NDJSON (one record per line), a JSON array of records, or `{"anomalies": [...]}`.
/// Records need `entity`, `timestamp` (or `event_time`; RFC 3339 or epoch milliseconds) and
/// `detector`; `score` (or `anomaly_score`), `threshold`, `profile`, `metric` and
/// `is_anomaly` (true when absent) are optional. A record with the `id` of an earlier one (an
/// episode sent again once it ended) is the same detection and is read once, at its first time.
pub fn parse_detections(text: &str) -> Result<Vec<Detection>, DetectionsError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return parse_array(text, "");
    }
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(text)
        && let Some(items) = object.get("anomalies")
    {
        return parse_array(&items.to_string(), "anomalies ");
    }
    let mut detections = Vec::new();
    let mut seen = FirstSighting::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let place = || format!("line {}", index + 1);
        let raw: RawDetection = serde_json::from_str(line)
            .map_err(|e| DetectionsError { place: place(), message: without_position(&e) })?;
        if seen.is_first(&raw) {
            detections.push(convert(raw).map_err(|message| DetectionsError { place: place(), message })?);
        }
    }
    Ok(detections)
}

fn parse_array(text: &str, prefix: &str) -> Result<Vec<Detection>, DetectionsError> {
    let items: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| DetectionsError {
        place: format!("line {}, column {}", e.line(), e.column()),
        message: without_position(&e),
    })?;
    let mut detections = Vec::new();
    let mut seen = FirstSighting::default();
    for (index, item) in items.iter().enumerate() {
        let place = || format!("{prefix}item {}", index + 1);
        let raw = RawDetection::deserialize(item)
            .map_err(|e| DetectionsError { place: place(), message: without_position(&e) })?;
        if seen.is_first(&raw) {
            detections.push(convert(raw).map_err(|message| DetectionsError { place: place(), message })?);
        }
    }
    Ok(detections)
}

/// The anomaly ids read so far.
#[derive(Default)]
struct FirstSighting(std::collections::HashSet<String>);

impl FirstSighting {
    /// False for a record whose id was read before; records without an id are always new.
    fn is_first(&mut self, raw: &RawDetection) -> bool {
        raw.id.as_ref().is_none_or(|id| self.0.insert(id.clone()))
    }
}

fn convert(raw: RawDetection) -> Result<Detection, String> {
    let timestamp = match &raw.timestamp {
        serde_json::Value::String(text) => Scalar::Str(text.as_str().into()),
        serde_json::Value::Number(n) => {
            n.as_i64().map_or_else(|| Scalar::Float(n.as_f64().unwrap_or(f64::NAN)), Scalar::Int)
        }
        _ => return Err(format!("timestamp: expected RFC 3339 text or epoch milliseconds, found {}", raw.timestamp)),
    };
    let time_ms = parse_timestamp(&timestamp, TimeFormat::Auto).map_err(|e| format!("timestamp: {e}"))?;
    if raw.entity.is_empty() {
        return Err("empty entity".into());
    }
    Ok(Detection {
        entity: raw.entity,
        profile: raw.profile,
        time_ms,
        detector: raw.detector,
        metric: raw.metric,
        score: raw.score,
        threshold: raw.threshold,
        is_anomaly: raw.is_anomaly.unwrap_or(true),
    })
}

/// serde_json's message without its trailing "at line L column C", which we say ourselves.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_ndjson_with_all_scores_keeps_normal_readings_as_scores() {
        let text = r#"{"entity":"s1","timestamp":"2024-09-04T10:00:00.000Z","detector":"zscore","record":3,"metric":"value","score":1.5,"threshold":3.0,"is_anomaly":false}

{"entity":"s1","timestamp":"2024-09-04T10:00:05.000Z","detector":"zscore","record":4,"metric":"value","score":4.5,"threshold":3.0,"is_anomaly":true}
"#;
        let detections = parse_detections(text).unwrap();
        assert_eq!(detections.len(), 2);
        assert!(!detections[0].is_anomaly && detections[1].is_anomaly);
        assert_eq!(detections[1].time_ms, 1_725_444_005_000);
        assert_eq!(detections[1].score, Some(4.5));
    }

    #[test]
    fn an_episode_sent_again_with_its_end_is_one_detection() {
        let text = r#"{"id":"e1","entity":"s1","timestamp":"2024-09-04T10:00:00.000Z","detector":"zscore"}
{"id":"e2","entity":"s1","timestamp":"2024-09-04T10:00:05.000Z","detector":"zscore"}
{"id":"e1","entity":"s1","timestamp":"2024-09-04T10:05:00.000Z","detector":"zscore"}
{"entity":"s1","timestamp":"2024-09-04T10:06:00.000Z","detector":"zscore"}
{"entity":"s1","timestamp":"2024-09-04T10:06:00.000Z","detector":"zscore"}
"#;
        let detections = parse_detections(text).unwrap();
        let times: Vec<i64> = detections.iter().map(|d| d.time_ms - 1_725_444_000_000).collect();
        assert_eq!(times, [0, 5_000, 360_000, 360_000], "e1 once, at its start; records without ids all count");
    }

    #[test]
    fn api_answers_read_as_anomalies() {
        let array = r#"[{"id":"a","profile":"vehicle","entity":"V001","timestamp":"2024-09-04T10:00:05.000Z","detector":"teleport","anomaly_score":900.0,"threshold":400.0}]"#;
        let wrapped = format!(r#"{{"anomalies": {array}}}"#);
        for text in [array, wrapped.as_str()] {
            let detections = parse_detections(text).unwrap();
            assert_eq!(detections[0].profile.as_deref(), Some("vehicle"));
            assert_eq!(detections[0].score, Some(900.0));
            assert!(detections[0].is_anomaly);
        }
        let event_time = r#"[{"entity":"V001","event_time":1725444005000,"detector":"teleport"}]"#;
        assert_eq!(parse_detections(event_time).unwrap()[0].time_ms, 1_725_444_005_000);
    }

    #[test]
    fn a_bad_record_is_named_by_its_line() {
        let text = "{\"entity\":\"s1\",\"timestamp\":\"2024-09-04T10:00:00Z\",\"detector\":\"zscore\"}\n{\"entity\":\"s1\",\"detector\":\"zscore\"}\n";
        assert_eq!(parse_detections(text).unwrap_err().to_string(), "line 2: missing field `timestamp`");
        let text = "{\"entity\":\"s1\",\"timestamp\":\"soon\",\"detector\":\"zscore\"}";
        let error = parse_detections(text).unwrap_err().to_string();
        assert!(error.starts_with("line 1: timestamp: \"soon\" is not an ISO 8601 timestamp"), "{error}");
        let error = parse_detections("[{\"entity\": 5}]").unwrap_err().to_string();
        assert!(error.starts_with("item 1: invalid type: integer `5`, expected a string"), "{error}");
        assert!(parse_detections("{not json").unwrap_err().to_string().starts_with("line 1: "));
    }
}
