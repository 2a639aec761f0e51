//! Detections against labels: precision, recall, F1, detection delay and false alarms per
//! entity-hour, per anomaly type and overall.
//!
//! A detection matches a label when it names the same entity (and the same profile, when it
//! names one) and its event time falls in `[label start, label end + grace]`. Then:
//! - **recall**: a label is detected when a detection by one of its `detectors` (any
//!   detector, when it names none) matches it: a z-score alarm that happens to fall on a
//!   teleport does not make the teleport found. Several detections of one label count once,
//!   and the earliest gives the delay (its time − the label's start).
//! - **precision of type T**: only detections by T's detectors (the union of its labels'
//!   `detectors`) count; true if it matches a label of type T, false if it matches no label
//!   at all, ignored if it only matches labels of other types.
//! - **overall precision**: every detection counts; true if it matches any label.
//! - **false alarms per entity-hour**: false detections / the entity-hours watched.
//!
//! Delay percentiles interpolate linearly between the two nearest ranks (numpy's default).

use super::detections::Detection;
use super::labels::{Label, LabelSet};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How long after a label's end a detection still counts for it, by default: a detector that
/// needs the reading after the anomaly (a stop that ends, a jump back) is one reading late,
/// and our profiles send every 5 to 30 s; a minute covers that without forgiving a miss.
pub const DEFAULT_GRACE_MS: i64 = 60_000;

/// The scores of one anomaly type, or of all of them (`kind` = `overall`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeScore {
    #[serde(rename = "type")]
    pub kind: String,
    pub labels: usize,
    pub detected_labels: usize,
    /// detected labels / labels; `None` without labels.
    pub recall: Option<f64>,
    pub true_detections: usize,
    pub false_detections: usize,
    /// true / (true + false) detections; `None` without any counted detection.
    pub precision: Option<f64>,
    pub f1: Option<f64>,
    pub median_delay_ms: Option<f64>,
    pub p95_delay_ms: Option<f64>,
    /// False detections per entity-hour watched; `None` when nothing was watched.
    pub false_alarms_per_entity_hour: Option<f64>,
}

/// Every type's scores, sorted by type, and the overall ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchReport {
    pub grace_ms: i64,
    pub entity_hours: f64,
    pub by_type: Vec<TypeScore>,
    pub overall: TypeScore,
}

/// Scores `detections` against a labels document; detections with `is_anomaly` false are
/// scores, not detections, and are skipped.
pub fn evaluate(labels: &LabelSet, detections: &[Detection], grace_ms: i64) -> MatchReport {
    evaluate_labels(&labels.labels, labels.entity_hours(), detections, grace_ms)
}

/// The same for labels that do not come as one document (e.g. NAB windows), with the
/// entity-hours watched given.
pub fn evaluate_labels(labels: &[Label], entity_hours: f64, detections: &[Detection], grace_ms: i64) -> MatchReport {
    let by_entity = labels_by_entity(labels);
    let mut first_detection_ms: Vec<Option<i64>> = vec![None; labels.len()];
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut detectors_of_type: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for label in labels {
        tallies.entry(&label.kind).or_default().labels += 1;
        detectors_of_type.entry(&label.kind).or_default().extend(label.detectors.iter().map(String::as_str));
    }
    let mut overall = Tally { labels: labels.len(), ..Tally::default() };

    for detection in detections.iter().filter(|d| d.is_anomaly) {
        let mut matched_types: BTreeSet<&str> = BTreeSet::new();
        for &index in by_entity.get(detection.entity.as_str()).map_or(&[][..], Vec::as_slice) {
            let label = &labels[index];
            if matches(label, detection, grace_ms) {
                matched_types.insert(&label.kind);
                if label.detectors.is_empty() || label.detectors.contains(&detection.detector) {
                    let first = &mut first_detection_ms[index];
                    *first = Some(first.map_or(detection.time_ms, |t| t.min(detection.time_ms)));
                }
            }
        }
        let is_true = !matched_types.is_empty();
        overall.count_detection(is_true);
        for (kind, detectors) in &detectors_of_type {
            if !detectors.contains(detection.detector.as_str()) {
                continue;
            }
            if matched_types.contains(kind) {
                tallies.get_mut(kind).expect("every type has a tally").count_detection(true);
            } else if !is_true {
                tallies.get_mut(kind).expect("every type has a tally").count_detection(false);
            }
        }
    }

    for (label, first) in labels.iter().zip(&first_detection_ms) {
        if let Some(first) = first {
            let delay_ms = first - label.start_ms;
            tallies.get_mut(label.kind.as_str()).expect("every type has a tally").delays_ms.push(delay_ms);
            overall.delays_ms.push(delay_ms);
        }
    }
    MatchReport {
        grace_ms,
        entity_hours,
        by_type: tallies.into_iter().map(|(kind, tally)| tally.score(kind, entity_hours)).collect(),
        overall: overall.score("overall", entity_hours),
    }
}

/// Whether `detection` falls on `label`: the same entity (and profile, when the detection
/// names one), at an event time in `[start, end + grace_ms]`.
pub fn matches(label: &Label, detection: &Detection, grace_ms: i64) -> bool {
    let same_profile = detection.profile.as_deref().is_none_or(|p| p == label.profile);
    label.entity == detection.entity
        && same_profile
        && (label.start_ms..=label.end_ms.saturating_add(grace_ms)).contains(&detection.time_ms)
}

fn labels_by_entity(labels: &[Label]) -> HashMap<&str, Vec<usize>> {
    let mut by_entity: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, label) in labels.iter().enumerate() {
        by_entity.entry(&label.entity).or_default().push(index);
    }
    by_entity
}

/// Counts gathered for one type before they become rates.
#[derive(Debug, Default)]
struct Tally {
    labels: usize,
    true_detections: usize,
    false_detections: usize,
    /// One per detected label: first matching detection − label start.
    delays_ms: Vec<i64>,
}

impl Tally {
    fn count_detection(&mut self, is_true: bool) {
        if is_true {
            self.true_detections += 1;
        } else {
            self.false_detections += 1;
        }
    }

    fn score(mut self, kind: &str, entity_hours: f64) -> TypeScore {
        self.delays_ms.sort_unstable();
        let detected_labels = self.delays_ms.len();
        let ratio = |part: usize, whole: usize| (whole > 0).then(|| part as f64 / whole as f64);
        let recall = ratio(detected_labels, self.labels);
        let precision = ratio(self.true_detections, self.true_detections + self.false_detections);
        let f1 = match (precision, recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        let delays: Vec<f64> = self.delays_ms.iter().map(|&d| d as f64).collect();
        TypeScore {
            kind: kind.to_string(),
            labels: self.labels,
            detected_labels,
            recall,
            true_detections: self.true_detections,
            false_detections: self.false_detections,
            precision,
            f1,
            median_delay_ms: percentile(&delays, 0.5),
            p95_delay_ms: percentile(&delays, 0.95),
            false_alarms_per_entity_hour: (entity_hours > 0.0).then(|| self.false_detections as f64 / entity_hours),
        }
    }
}

/// The `q` quantile of sorted values, interpolating linearly between the nearest ranks.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    debug_assert!(sorted.is_sorted());
    let last = sorted.len().checked_sub(1)?;
    let position = q.clamp(0.0, 1.0) * last as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(last);
    let fraction = position - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::labels::EntityRef;

    const T0: i64 = 1_725_408_000_000; // 2024-09-04T00:00:00Z

    fn label(kind: &str, entity: &str, start_s: i64, end_s: i64, detectors: &[&str]) -> Label {
        Label {
            kind: kind.into(),
            profile: "vehicle".into(),
            entity: entity.into(),
            start_ms: T0 + start_s * 1000,
            end_ms: T0 + end_s * 1000,
            detectors: detectors.iter().map(|d| d.to_string()).collect(),
            metric: None,
        }
    }

    fn detection(entity: &str, at_s: i64, detector: &str) -> Detection {
        Detection {
            entity: entity.into(),
            profile: None,
            time_ms: T0 + at_s * 1000,
            detector: detector.into(),
            metric: None,
            score: None,
            threshold: None,
            is_anomaly: true,
        }
    }

    /// Two vehicles watched for 10 hours (20 entity-hours), three labels.
    fn tiny_case() -> (LabelSet, Vec<Detection>) {
        let labels = LabelSet {
            generator: "hand".into(),
            seed: None,
            start_ms: T0,
            end_ms: T0 + 10 * 3_600_000,
            entities: ["V1", "V2"].map(|e| EntityRef { profile: "vehicle".into(), entity: e.into() }).to_vec(),
            labels: vec![
                label("teleport", "V1", 100, 110, &["teleport"]),
                label("teleport", "V2", 1000, 1010, &["teleport"]),
                label("spike", "V1", 5000, 5100, &["zscore"]),
            ],
        };
        let detections = vec![
            detection("V1", 104, "teleport"),  // teleport label 1, delay 4 s
            detection("V1", 130, "teleport"),  // label 1 again, 20 s after its end: within grace
            detection("V1", 200, "teleport"),  // 90 s after the end: false
            detection("V2", 105, "teleport"),  // V2 has no label then: false
            detection("V1", 5010, "zscore"),   // spike, delay 10 s
            detection("V1", 5050, "teleport"), // matches the spike only: ignored for teleport
            detection("V1", 7000, "zscore"),   // false
            Detection { is_anomaly: false, ..detection("V1", 1000, "zscore") }, // a score, not a detection
        ];
        (labels, detections)
    }

    #[test]
    fn a_tiny_hand_made_case_scores_as_computed_by_hand() {
        let (labels, detections) = tiny_case();
        let report = evaluate(&labels, &detections, DEFAULT_GRACE_MS);
        assert_eq!(report.entity_hours, 20.0);

        let spike = &report.by_type[0];
        assert_eq!((spike.kind.as_str(), spike.labels, spike.detected_labels), ("spike", 1, 1));
        assert_eq!((spike.true_detections, spike.false_detections), (1, 1));
        assert_eq!((spike.recall, spike.precision, spike.f1), (Some(1.0), Some(0.5), Some(2.0 / 3.0)));
        assert_eq!((spike.median_delay_ms, spike.p95_delay_ms), (Some(10_000.0), Some(10_000.0)));
        assert_eq!(spike.false_alarms_per_entity_hour, Some(1.0 / 20.0));

        let teleport = &report.by_type[1];
        assert_eq!((teleport.labels, teleport.detected_labels), (2, 1));
        assert_eq!((teleport.true_detections, teleport.false_detections), (2, 2));
        assert_eq!((teleport.recall, teleport.precision, teleport.f1), (Some(0.5), Some(0.5), Some(0.5)));
        assert_eq!(teleport.median_delay_ms, Some(4_000.0));
        assert_eq!(teleport.false_alarms_per_entity_hour, Some(0.1));

        let overall = &report.overall;
        assert_eq!((overall.labels, overall.detected_labels), (3, 2));
        // True: 104, 130, 5010, 5050; false: 200, V2 105, 7000.
        assert_eq!((overall.true_detections, overall.false_detections), (4, 3));
        let (p, r) = (4.0 / 7.0, 2.0 / 3.0);
        assert_eq!((overall.precision, overall.recall), (Some(p), Some(r)));
        assert!((overall.f1.unwrap() - 2.0 * p * r / (p + r)).abs() < 1e-15);
        // Delays 4 s and 10 s: median 7 s, p95 4 + 0.95 × 6 = 9.7 s.
        assert_eq!(overall.median_delay_ms, Some(7_000.0));
        assert!((overall.p95_delay_ms.unwrap() - 9_700.0).abs() < 1e-9);
        assert_eq!(overall.false_alarms_per_entity_hour, Some(3.0 / 20.0));
    }

    #[test]
    fn grace_and_profile_decide_a_match() {
        let (labels, _) = tiny_case();
        let late = [detection("V1", 130, "teleport")];
        assert_eq!(evaluate(&labels, &late, 0).overall.true_detections, 0);
        assert_eq!(evaluate(&labels, &late, 20_000).overall.true_detections, 1);
        let other_profile = [Detection { profile: Some("drone".into()), ..detection("V1", 104, "teleport") }];
        assert_eq!(evaluate(&labels, &other_profile, 0).overall.false_detections, 1);
    }

    #[test]
    fn nothing_to_count_is_none_not_zero() {
        let (mut labels, _) = tiny_case();
        labels.labels.clear();
        labels.entities.clear();
        let report = evaluate(&labels, &[], DEFAULT_GRACE_MS);
        assert!(report.by_type.is_empty());
        assert_eq!((report.overall.recall, report.overall.precision, report.overall.f1), (None, None, None));
        assert_eq!(report.overall.false_alarms_per_entity_hour, None);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
        assert!((percentile(&[0.0, 10.0, 20.0, 30.0, 40.0], 0.95).unwrap() - 38.0).abs() < 1e-12);
    }
}
