//! Rolling z-score / 3-sigma per entity and metric (references 003 and 004).
//!
//! A reading is judged against the window of readings *before* it (sample mean and standard
//! deviation), then joins the window. Updates are O(1) amortised: running sums are kept relative
//! to an anchor that moves to the window mean each time the window has been replaced, so
//! rounding neither drifts nor cancels after a level shift.

use super::{Detector, EntityMap, Findings, Observation, for_people};
use crate::model::{Anomaly, Severity, anomaly_id};
use std::sync::Arc;

/// The detector's name on anomalies.
pub const NAME: &str = "zscore";

/// The smallest standard deviation used, relative to the mean's magnitude (at least 1e-9):
/// a window of identical values followed by a different value gives a finite, large z.
const SIGMA_FLOOR_RELATIVE: f64 = 1e-6;

/// The last `capacity` values of one metric, with running sums for mean and variance.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    values: Vec<f64>,
    capacity: usize,
    next: usize,
    anchor: f64,
    sum: f64,
    sum_squares: f64,
    pushes_since_anchor: usize,
}

impl RollingWindow {
    pub fn new(capacity: usize) -> Self {
        debug_assert!(capacity >= 2);
        RollingWindow {
            values: Vec::with_capacity(capacity),
            capacity,
            next: 0,
            anchor: 0.0,
            sum: 0.0,
            sum_squares: 0.0,
            pushes_since_anchor: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sample mean and standard deviation (n - 1), once the window holds two values.
    pub fn mean_std(&self) -> Option<(f64, f64)> {
        self.mean_variance().map(|(mean, variance)| (mean, variance.sqrt()))
    }

    /// Sample mean and variance (n - 1), once the window holds two values.
    pub fn mean_variance(&self) -> Option<(f64, f64)> {
        let n = self.values.len();
        if n < 2 {
            return None;
        }
        let n_f = n as f64;
        let shifted_mean = self.sum / n_f;
        let variance = ((self.sum_squares - self.sum * shifted_mean) / (n_f - 1.0)).max(0.0);
        Some((self.anchor + shifted_mean, variance))
    }

    pub fn push(&mut self, x: f64) {
        if self.values.is_empty() {
            self.anchor = x;
        }
        let shifted = x - self.anchor;
        if self.values.len() < self.capacity {
            self.values.push(x);
        } else {
            let old = self.values[self.next] - self.anchor;
            self.sum -= old;
            self.sum_squares -= old * old;
            self.values[self.next] = x;
            self.next = (self.next + 1) % self.capacity;
        }
        self.sum += shifted;
        self.sum_squares += shifted * shifted;
        self.pushes_since_anchor += 1;
        if self.pushes_since_anchor >= self.capacity {
            self.reanchor();
        }
    }

    /// Recomputes the sums exactly around the current mean.
    fn reanchor(&mut self) {
        let n = self.values.len() as f64;
        self.anchor = self.values.iter().sum::<f64>() / n;
        self.sum = self.values.iter().map(|v| v - self.anchor).sum();
        self.sum_squares = self.values.iter().map(|v| (v - self.anchor).powi(2)).sum();
        self.pushes_since_anchor = 0;
    }
}

/// The smallest σ used for a window with this mean.
fn sigma_floor(mean: f64) -> f64 {
    (SIGMA_FLOOR_RELATIVE * mean.abs()).max(1e-9)
}

/// The z of `x` against a window's mean and standard deviation, with the σ floor applied.
pub fn z_score(x: f64, mean: f64, std: f64) -> f64 {
    (x - mean) / std.max(sigma_floor(mean))
}

/// Rolling z-score over every metric of every profile that enables it.
#[derive(Debug, Default)]
pub struct ZScoreDetector {
    windows: EntityMap<Vec<Option<RollingWindow>>>,
}

impl ZScoreDetector {
    /// Number of entities with state.
    pub fn entities(&self) -> usize {
        self.windows.len()
    }
}

impl Detector for ZScoreDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, .. } = observation;
        let Some(settings) = &profile.detectors.zscore else {
            return;
        };
        let windows =
            self.windows.get_or_insert_with(reading.profile, &reading.entity, || vec![None; profile.metrics.len()]);
        for &(metric, x) in &reading.metrics {
            if !settings.watched[usize::from(metric)] {
                continue;
            }
            let window = windows[usize::from(metric)].get_or_insert_with(|| RollingWindow::new(settings.window.get()));
            if let Some((mean, variance)) = window.mean_variance() {
                // Compare squares first: the square root and division only for anomalies and
                // kept scores.
                let floor = sigma_floor(mean);
                let deviation = x - mean;
                let is_anomaly =
                    deviation * deviation > settings.threshold * settings.threshold * variance.max(floor * floor);
                if !is_anomaly && !findings.keeps_scores() {
                    window.push(x);
                    continue;
                }
                let std = variance.sqrt();
                let z = z_score(x, mean, std);
                findings.score(
                    NAME,
                    || Some(profile.metric_name(metric).clone()),
                    z.abs(),
                    settings.threshold,
                    is_anomaly,
                );
                if is_anomaly {
                    let name = profile.metric_name(metric);
                    let direction = if z > 0.0 { "above" } else { "below" };
                    let score = z.abs();
                    findings.anomalies.push(Anomaly {
                        id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, name),
                        detector: NAME,
                        metric: Some(name.clone()),
                        value: Some(x),
                        score,
                        threshold: settings.threshold,
                        severity: Severity::from_excess(score, settings.threshold),
                        reason: format!(
                            "{name} {} is {}σ {direction} the mean {} of the last {} readings",
                            for_people(x),
                            for_people(score),
                            for_people(mean),
                            window.len()
                        ),
                        features: vec![
                            (Arc::from("value"), x),
                            (Arc::from("mean"), mean),
                            (Arc::from("std"), std),
                            (Arc::from("z"), z),
                        ],
                        episode: None,
                    });
                }
            }
            window.push(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Enrichment, Reading};
    use crate::profile::ProfileRegistry;

    fn feed(detector: &mut ZScoreDetector, profile: &str, entity: &str, values: &[f64]) -> Vec<Vec<Anomaly>> {
        let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
        let profile = registry.by_name(profile).unwrap();
        values
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let reading = Reading {
                    profile: profile.id,
                    entity: entity.into(),
                    event_time_ms: i as i64 * 1000,
                    position: None,
                    metrics: vec![(0, x)],
                    attributes: vec![],
                };
                let mut findings = Findings::default();
                let enrichment = Enrichment::default();
                detector.observe(Observation { profile, reading: &reading, enrichment: &enrichment }, &mut findings);
                findings.anomalies
            })
            .collect()
    }

    #[test]
    fn ten_flat_readings_then_a_jump_is_an_anomaly() {
        let mut detector = ZScoreDetector::default();
        let mut values = vec![20.0; 10];
        values.push(100.0);
        let results = feed(&mut detector, "environment", "s1", &values);
        assert!(results[..10].iter().all(Vec::is_empty), "the same value again is not an anomaly");
        let anomaly = &results[10][0];
        assert_eq!(anomaly.detector, "zscore");
        assert_eq!(anomaly.metric.as_deref(), Some("temperature"));
        assert!(anomaly.score.is_finite() && anomaly.score > 3.0);
        assert!(anomaly.reason.starts_with("temperature 100 is "), "{}", anomaly.reason);
        assert!(anomaly.reason.ends_with("above the mean 20 of the last 10 readings"), "{}", anomaly.reason);
    }

    #[test]
    fn first_two_readings_are_never_judged() {
        let mut detector = ZScoreDetector::default();
        let results = feed(&mut detector, "environment", "s1", &[1.0, 1000.0]);
        assert!(results.iter().all(Vec::is_empty));
    }

    #[test]
    fn hand_computed_z_uses_the_window_before_the_point() {
        // Window [10, 12, 14]: mean 12, sample std 2. 19 gives z = 3.5 > 3; 17 gives 2.5.
        let mut detector = ZScoreDetector::default();
        let results = feed(&mut detector, "environment", "s1", &[10.0, 12.0, 14.0, 19.0]);
        assert!((results[3][0].score - 3.5).abs() < 1e-12);
        let mut detector = ZScoreDetector::default();
        assert!(feed(&mut detector, "environment", "s1", &[10.0, 12.0, 14.0, 17.0])[3].is_empty());
    }

    #[test]
    fn entities_do_not_share_state() {
        let mut detector = ZScoreDetector::default();
        feed(&mut detector, "environment", "a", &[20.0; 10]);
        let other = feed(&mut detector, "environment", "b", &[500.0, 500.0, 500.0]);
        assert!(other.iter().all(Vec::is_empty));
        assert_eq!(detector.entities(), 2);
    }

    #[test]
    fn window_forgets_old_values_and_stays_exact() {
        let mut window = RollingWindow::new(3);
        for x in [1e9, 1e9 + 1.0, 1e9 + 2.0, 5.0, 6.0, 7.0] {
            window.push(x);
        }
        let (mean, std) = window.mean_std().unwrap();
        assert!((mean - 6.0).abs() < 1e-6 && (std - 1.0).abs() < 1e-6, "{mean} {std}");
        for i in 0..1000 {
            window.push(f64::from(i % 7));
        }
        let exact: Vec<f64> = (997..1000).map(|i| f64::from(i % 7)).collect();
        let exact_mean = exact.iter().sum::<f64>() / 3.0;
        assert!((window.mean_std().unwrap().0 - exact_mean).abs() < 1e-9);
    }
}
