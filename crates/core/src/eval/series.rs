//! Our detectors over a univariate series (one value per timestamp, as in a NAB data file):
//! the `series` profile, and one detector's score for every row.

use crate::detect::{DetectorSet, Findings, Observation};
use crate::model::{Enrichment, Reading};
use crate::profile::{Profile, RawProfile};
use std::sync::Arc;

/// The name of the profile a univariate series is read with, unless a config file defines
/// its own `[profiles.series]` (e.g. to tune `detectors.zscore`).
pub const SERIES_PROFILE: &str = "series";

/// One metric, `value`, without bounds; the rolling z-score on by default like every profile,
/// and sequence novelty with its default settings.
const SERIES_PROFILE_TOML: &str = r#"
description = "one univariate series, a value per timestamp (e.g. a NAB data file)"
entity_field = "series"
metrics = [{ field = "value" }]
detectors.novelty = {}
"#;

/// The built-in `series` profile, before validation.
pub fn series_profile() -> RawProfile {
    toml::from_str(SERIES_PROFILE_TOML).expect("the series profile parses")
}

/// What one detector said about one row; `score` is `None` while it warms up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowScore {
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    pub is_anomaly: bool,
}

/// Feeds `rows` (event time in ms, value) in order as readings of `entity` under `profile`
/// (whose first metric takes the value) and keeps `detector`'s judgement of each.
pub fn detect_series(
    profile: &Profile,
    detectors: &mut DetectorSet,
    entity: &str,
    rows: &[(i64, f64)],
    detector: &str,
) -> Vec<RowScore> {
    debug_assert!(!profile.metrics.is_empty(), "a series profile has a metric");
    let entity: Arc<str> = entity.into();
    let enrichment = Enrichment::default();
    let mut findings = Findings::keeping_scores();
    let mut reading = Reading {
        profile: profile.id,
        entity,
        event_time_ms: 0,
        position: None,
        metrics: vec![(0, 0.0)],
        attributes: Vec::new(),
    };
    rows.iter()
        .map(|&(time_ms, value)| {
            reading.event_time_ms = time_ms;
            reading.metrics[0].1 = value;
            findings.clear();
            detectors.observe(
                Observation { profile, reading: &reading, enrichment: &enrichment, arrival_ms: None },
                &mut findings,
            );
            findings.scores.iter().find(|s| s.detector == detector).map_or(
                RowScore { score: None, threshold: None, is_anomaly: false },
                |s| RowScore { score: Some(s.score), threshold: Some(s.threshold), is_anomaly: s.is_anomaly },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::isolation_forest::ModelRegistry;
    use crate::profile::ProfileRegistry;
    use std::collections::BTreeMap;

    #[test]
    fn a_flat_series_with_one_jump_is_flagged_at_the_jump() {
        let registry =
            ProfileRegistry::with_builtins(BTreeMap::from([(SERIES_PROFILE.to_string(), series_profile())])).unwrap();
        let profile = registry.by_name(SERIES_PROFILE).unwrap();
        let mut detectors = DetectorSet::standard(Arc::new(ModelRegistry::default()));
        let mut rows: Vec<(i64, f64)> = (0..150).map(|i| (i * 300_000, 10.0 + f64::from(i as i32 % 2))).collect();
        rows[140].1 = 50.0;
        let scores = detect_series(profile, &mut detectors, "a/b.csv", &rows, "zscore");
        assert_eq!(scores.len(), 150);
        assert_eq!(scores[119].score, None, "no verdict before the window is full");
        assert!(scores[140].is_anomaly && scores[140].score.unwrap() > 5.0);
        assert_eq!(scores.iter().filter(|s| s.is_anomaly).count(), 1);
        assert_eq!(scores[140].threshold, Some(5.0));
    }
}
