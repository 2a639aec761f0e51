//! What `teleguard eval` prints: a table per anomaly type and overall, then NAB's scores; or
//! the same as one JSON object.

use serde::Serialize;
use std::fmt::Write as _;
use teleguard_core::detect::for_people;
use teleguard_core::eval::matching::{MatchReport, TypeScore};
use teleguard_core::eval::nab::NabScore;

/// Everything one evaluation found.
#[derive(Debug, Serialize)]
pub struct Evaluation {
    #[serde(flatten)]
    pub matching: MatchReport,
    /// NAB's score per detector and profile; empty for our own labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nab: Vec<NabRow>,
}

/// One detector's NAB score under one profile.
#[derive(Debug, Serialize)]
pub struct NabRow {
    pub detector: String,
    pub profile: String,
    #[serde(flatten)]
    pub score: NabScore,
    /// The same at the detector's own threshold (the one it raises anomalies at live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_own_threshold: Option<NabScore>,
}

pub fn print(evaluation: &Evaluation, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(evaluation)?);
    } else {
        print!("{}", table(evaluation));
    }
    Ok(())
}

fn table(evaluation: &Evaluation) -> String {
    let mut out = String::new();
    let report = &evaluation.matching;
    let _ = writeln!(
        out,
        "{:<24} {:>7} {:>8} {:>7} {:>9} {:>6} {:>7} {:>7} {:>10} {:>10} {:>16}",
        "type",
        "labels",
        "detected",
        "recall",
        "precision",
        "F1",
        "true",
        "false",
        "median",
        "p95 delay",
        "false alarms/e·h"
    );
    for score in report.by_type.iter().chain([&report.overall]) {
        let _ = writeln!(out, "{}", row(score));
    }
    let _ = writeln!(
        out,
        "(a detection counts for a label from its start to {} after its end; {} entity-hours watched)",
        seconds(report.grace_ms as f64),
        for_people(report.entity_hours)
    );
    if !evaluation.nab.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:<20} {:>9} {:>10} {:>16} {:>14}   at own threshold",
            "NAB score of", "profile", "score", "threshold", "windows found", "false pos. rows"
        );
        for nab in &evaluation.nab {
            let found = format!("{} of {}", nab.score.detected_windows, nab.score.windows);
            let own = nab.at_own_threshold.as_ref().map_or("-".into(), |own| {
                let score = own.score.map_or("-".into(), |s| format!("{s:.2}"));
                format!(
                    "{score} at {:.4} ({} of {}, {} false pos.)",
                    own.threshold, own.detected_windows, own.windows, own.false_positive_rows
                )
            });
            let _ = writeln!(
                out,
                "{:<24} {:<20} {:>9} {:>10.4} {:>16} {:>14}   {own}",
                nab.detector,
                nab.profile,
                nab.score.score.map_or("-".into(), |s| format!("{s:.2}")),
                nab.score.threshold,
                found,
                nab.score.false_positive_rows
            );
        }
        let _ = writeln!(
            out,
            "(NAB: 0 = the null detector, 100 = perfect; the threshold, on scores mapped to [0, 1] by \
             score / (score + detector threshold) (novelty's scores are in [0, 1] already), maximises \
             each profile's score; \"at own threshold\" detects what the detector flags live)"
        );
    }
    out
}

fn row(score: &TypeScore) -> String {
    let rate = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
    let delay = |x: Option<f64>| x.map_or("-".into(), seconds);
    format!(
        "{:<24} {:>7} {:>8} {:>7} {:>9} {:>6} {:>7} {:>7} {:>10} {:>10} {:>16}",
        score.kind,
        score.labels,
        score.detected_labels,
        rate(score.recall),
        rate(score.precision),
        rate(score.f1),
        score.true_detections,
        score.false_detections,
        delay(score.median_delay_ms),
        delay(score.p95_delay_ms),
        score.false_alarms_per_entity_hour.map_or("-".into(), |x| format!("{x:.4}")),
    )
}

/// Milliseconds as seconds, minutes or hours, whichever reads best.
fn seconds(ms: f64) -> String {
    let secs = ms / 1000.0;
    if secs.abs() >= 7200.0 {
        format!("{} h", for_people(secs / 3600.0))
    } else if secs.abs() >= 120.0 {
        format!("{} min", for_people(secs / 60.0))
    } else {
        format!("{} s", for_people(secs))
    }
}
