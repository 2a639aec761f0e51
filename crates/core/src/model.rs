//! The canonical reading and anomaly types that flow between stages.

use serde::Serialize;
use std::sync::Arc;

/// Index of a profile in the [`crate::profile::ProfileRegistry`].
pub type ProfileId = u16;
/// Index of a metric in its profile's metric list.
pub type MetricId = u16;

/// A geographic position in decimal degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

/// One validated telemetry reading in canonical form, whatever profile it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub profile: ProfileId,
    pub entity: Arc<str>,
    /// Event time in milliseconds since the Unix epoch (UTC).
    pub event_time_ms: i64,
    pub position: Option<GeoPoint>,
    /// Named metrics present in this reading, by index into the profile's metric list.
    pub metrics: Vec<(MetricId, f64)>,
    /// String attributes (e.g. `engine_status`), by index into the profile's attribute list.
    pub attributes: Vec<(u16, Arc<str>)>,
}

impl Reading {
    pub fn metric(&self, id: MetricId) -> Option<f64> {
        self.metrics.iter().find(|(m, _)| *m == id).map(|(_, v)| *v)
    }
}

/// Context added to a reading by enrichment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Enrichment {
    pub driver_name: Option<Arc<str>>,
    pub current_zone: Option<Arc<str>>,
}

/// How bad an anomaly is, from how far its score passes the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Minor,
    Major,
    Critical,
}

impl Severity {
    /// Severity from the ratio score / threshold: below 1.5 minor, below 2 major, else critical.
    pub fn from_excess(score: f64, threshold: f64) -> Self {
        let ratio = if threshold > 0.0 { score / threshold } else { f64::INFINITY };
        if ratio >= 2.0 {
            Severity::Critical
        } else if ratio >= 1.5 {
            Severity::Major
        } else {
            Severity::Minor
        }
    }

    /// Severity of a score bounded by `ceiling` (e.g. an isolation score, at most 1): how much
    /// of the room between threshold and ceiling it takes, below 20 % minor, below 40 % major.
    pub fn from_share_of_headroom(score: f64, threshold: f64, ceiling: f64) -> Self {
        let share = (score - threshold) / (ceiling - threshold).max(f64::EPSILON);
        if share >= 0.4 {
            Severity::Critical
        } else if share >= 0.2 {
            Severity::Major
        } else {
            Severity::Minor
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

/// A detector's finding about one reading, with everything a person needs to act on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// Stable id: the same reading (profile, entity, event time) and detector and metric
    /// always give the same id, so re-processing after a crash raises no duplicate.
    pub id: String,
    pub detector: &'static str,
    /// The metric that drove the finding, when the detector looks at one metric.
    pub metric: Option<Arc<str>>,
    pub value: Option<f64>,
    pub score: f64,
    pub threshold: f64,
    pub severity: Severity,
    pub reason: String,
    /// The features that drove the finding, name to value.
    pub features: Vec<(Arc<str>, f64)>,
    /// For findings that last (a stop, a zone visit): when it began and, once it is over,
    /// when it ended. A finding with an end replaces the open one of the same id.
    pub episode: Option<Episode>,
}

/// The time span of a finding that lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Episode {
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// A hash that never changes between runs, builds or machines (FNV-1a, 64 bits), over
/// `parts` each followed by a separator byte so that ("ab", "c") and ("a", "bc") differ.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The stable id of an anomaly: the event time in milliseconds as 12 hex digits, then a hash
/// of its parts as 16. Ids of one time sort together, so a store indexing them appends near
/// the end of the index instead of touching a random page for every anomaly.
pub fn anomaly_id(profile: &str, entity: &str, event_time_ms: i64, detector: &str, metric: &str) -> String {
    let hash = stable_hash(&[
        profile.as_bytes(),
        entity.as_bytes(),
        &event_time_ms.to_le_bytes(),
        detector.as_bytes(),
        metric.as_bytes(),
    ]);
    format!("{:012x}{hash:016x}", event_time_ms.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_id_is_stable_and_distinguishes_parts() {
        let a = anomaly_id("drone", "d1", 1000, "zscore", "altitude");
        assert_eq!(a, anomaly_id("drone", "d1", 1000, "zscore", "altitude"));
        assert_ne!(a, anomaly_id("drone", "d1", 1001, "zscore", "altitude"));
        assert_ne!(a, anomaly_id("drone", "d1", 1000, "zscore", "velocity"));
        assert_ne!(anomaly_id("a", "bc", 0, "z", ""), anomaly_id("ab", "c", 0, "z", ""));
        assert_eq!(a.len(), 28);
        assert!(a.starts_with("0000000003e8"), "{a}");
        assert!(anomaly_id("drone", "d1", 999, "zscore", "z") < anomaly_id("drone", "d1", 1000, "zscore", "a"));
    }

    #[test]
    fn severity_grows_with_excess() {
        assert_eq!(Severity::from_excess(3.2, 3.0), Severity::Minor);
        assert_eq!(Severity::from_excess(4.6, 3.0), Severity::Major);
        assert_eq!(Severity::from_excess(9.0, 3.0), Severity::Critical);
    }
}
