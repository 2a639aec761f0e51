//! Ground truth for `teleguard eval`: the labels document `teleguard simulate` writes.
//!
//! ```json
//! {"generator": "teleguard simulate", "seed": 7,
//!  "start": "2024-09-04T00:00:00.000Z", "end": "2024-09-05T00:00:00.000Z",
//!  "entities": [{"profile": "vehicle", "entity": "V001"}],
//!  "labels": [{"type": "teleport", "profile": "vehicle", "entity": "V001",
//!              "start": "2024-09-04T10:00:05.000Z", "end": "2024-09-04T10:00:10.000Z",
//!              "detectors": ["teleport"], "metric": null}]}
//! ```
//!
//! Times are RFC 3339 in the file and epoch milliseconds (UTC) in the structs. Unknown fields
//! are ignored, so a generator may add its own (e.g. its parameters) without breaking readers.

use serde::{Deserialize, Serialize};

/// One labeled run: which entities were watched over which time range, and where the
/// anomalies were injected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSet {
    /// What wrote the document, e.g. `teleguard simulate`.
    #[serde(default)]
    pub generator: String,
    /// The generator's random seed, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Start of the watched time range (inclusive).
    #[serde(rename = "start", with = "rfc3339_millis")]
    pub start_ms: i64,
    /// End of the watched time range (exclusive).
    #[serde(rename = "end", with = "rfc3339_millis")]
    pub end_ms: i64,
    /// Every entity watched over the range, labeled or not: the denominator of false alarms
    /// per entity-hour.
    pub entities: Vec<EntityRef>,
    pub labels: Vec<Label>,
}

/// An entity of a profile, e.g. vehicle `V001`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityRef {
    pub profile: String,
    pub entity: String,
}

/// One injected anomaly: its type, whose readings carry it, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// The anomaly type, e.g. `teleport`, `spike`, `drift`; scores are reported per type.
    #[serde(rename = "type")]
    pub kind: String,
    pub profile: String,
    pub entity: String,
    /// First event time that carries the anomaly (inclusive).
    #[serde(rename = "start", with = "rfc3339_millis")]
    pub start_ms: i64,
    /// Last event time that carries the anomaly (inclusive).
    #[serde(rename = "end", with = "rfc3339_millis")]
    pub end_ms: i64,
    /// The detectors meant to catch it (e.g. `["teleport"]`): their detections count toward
    /// this type's precision.
    pub detectors: Vec<String>,
    /// The metric the anomaly is injected into, for per-metric anomalies.
    #[serde(default)]
    pub metric: Option<String>,
}

/// Why a labels document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl LabelSet {
    /// Reads and checks a labels document.
    pub fn from_json(text: &str) -> Result<LabelSet, LabelsError> {
        let set: LabelSet = serde_json::from_str(text).map_err(|e| LabelsError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })?;
        set.check()?;
        Ok(set)
    }

    /// The document as pretty JSON, the way `teleguard simulate` writes it.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a label set always serialises")
    }

    /// Every inconsistency at once: ranges that end before they start, labels without a type.
    pub fn check(&self) -> Result<(), LabelsError> {
        let mut problems = Vec::new();
        if self.end_ms <= self.start_ms {
            problems.push(format!(
                "end {} is not after start {}",
                crate::time::format_millis(self.end_ms),
                crate::time::format_millis(self.start_ms)
            ));
        }
        for (index, label) in self.labels.iter().enumerate() {
            let which = format!("label {} ({} on {})", index + 1, label.kind, label.entity);
            if label.kind.trim().is_empty() {
                problems.push(format!("label {}: empty type", index + 1));
            }
            if label.end_ms < label.start_ms {
                problems.push(format!("{which}: end is before start"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(LabelsError::Invalid(problems)) }
    }

    /// Entity-hours watched: entities × hours of the document's range.
    pub fn entity_hours(&self) -> f64 {
        self.entities.len() as f64 * (self.end_ms - self.start_ms) as f64 / 3_600_000.0
    }
}

/// Serde for epoch milliseconds written as RFC 3339 UTC text (`2024-09-04T10:00:05.000Z`).
pub mod rfc3339_millis {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::time::format_millis(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        crate::time::parse_iso8601(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"generator":"teleguard simulate","seed":7,"start":"2024-09-04T00:00:00.000Z","end":"2024-09-05T00:00:00.000Z",
        "entities":[{"profile":"vehicle","entity":"V001"}],
        "labels":[{"type":"teleport","profile":"vehicle","entity":"V001","start":"2024-09-04T10:00:05.000Z","end":"2024-09-04T10:00:10.000Z","detectors":["teleport"],"metric":null}]}"#;

    #[test]
    fn the_documented_example_reads_and_writes_back_the_same() {
        let set = LabelSet::from_json(EXAMPLE).unwrap();
        assert_eq!(set.seed, Some(7));
        assert_eq!(set.start_ms, 1_725_408_000_000);
        assert_eq!(set.labels[0].kind, "teleport");
        assert_eq!(set.labels[0].start_ms, 1_725_444_005_000);
        assert_eq!(set.entity_hours(), 24.0);
        let written = set.to_json_pretty();
        assert!(written.contains(r#""start": "2024-09-04T10:00:05.000Z""#), "{written}");
        assert!(written.contains(r#""type": "teleport""#), "{written}");
        assert_eq!(LabelSet::from_json(&written).unwrap(), set);
    }

    #[test]
    fn a_syntax_error_names_line_and_column() {
        let error = LabelSet::from_json("{\n\"generator\": \"x\",\n\"start\": 12,\n").unwrap_err().to_string();
        assert!(error.starts_with("line 3, column "), "{error}");
        assert!(error.contains("expected a string"), "{error}");
    }

    #[test]
    fn inconsistent_ranges_are_all_reported() {
        let text = EXAMPLE
            .replace("2024-09-05T00:00:00.000Z", "2024-09-03T00:00:00.000Z")
            .replace(r#""end":"2024-09-04T10:00:10.000Z""#, r#""end":"2024-09-04T10:00:00.000Z""#);
        let error = LabelSet::from_json(&text).unwrap_err().to_string();
        assert!(error.contains("end 2024-09-03T00:00:00.000Z is not after start"), "{error}");
        assert!(error.contains("label 1 (teleport on V001): end is before start"), "{error}");
    }
}
