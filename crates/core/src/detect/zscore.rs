//! Rolling z-score / 3-sigma per entity and metric (references 003 and 004).
//!
//! A reading is judged against the window of readings *before* it (sample mean and standard
//! deviation), then joins the window. Updates are O(1) amortised: running sums are kept relative
//! to an anchor that moves to the window mean each time the window has been replaced, so
//! rounding neither drifts nor cancels after a level shift.
//!
//! An entity's state is two allocations: the running sums of each of its profile's metrics side
//! by side, and one buffer holding the rings of the metrics it has reported, back to back. Nearly
//! every reading is unremarkable, so the loop over a reading's metrics only judges and pushes;
//! scores and anomalies are written out of line.

use super::settings::ZScoreSettings;
use super::{Detector, EntityMap, Findings, ForPeople, Observation};
use crate::model::{Anomaly, MetricId, Severity, anomaly_id};
use std::sync::Arc;

/// The detector's name on anomalies.
pub const NAME: &str = "zscore";

/// The smallest standard deviation used, relative to the mean's magnitude (at least 1e-9):
/// a window of identical values followed by a different value gives a finite, large z.
const SIGMA_FLOOR_RELATIVE: f64 = 1e-6;

/// The running sums and ring position of one window. Its values live in a ring the owner keeps
/// and passes in, whose length is the window's capacity: a [`RollingWindow`]'s own, or a stretch
/// of an entity's shared buffer in the detector.
#[derive(Debug, Clone, Default)]
struct WindowSums {
    anchor: f64,
    /// Sum of the values minus `anchor`.
    sum: f64,
    /// Sum of the squares of the values minus `anchor`.
    sum_squares: f64,
    /// How many values the window holds, up to the ring's length; 0 until the first push.
    len: usize,
    /// The ring slot the next value goes to: while filling it equals `len`, then it is the
    /// oldest value's. It wraps to 0 every `capacity` pushes, each time the window has been
    /// replaced, and that is when the sums are re-anchored.
    next: usize,
}

impl WindowSums {
    /// Sample mean and variance (n - 1), once the window holds two values.
    fn mean_variance(&self) -> Option<(f64, f64)> {
        let n = self.len;
        if n < 2 {
            return None;
        }
        let n_f = n as f64;
        let shifted_mean = self.sum / n_f;
        let variance = ((self.sum_squares - self.sum * shifted_mean) / (n_f - 1.0)).max(0.0);
        Some((self.anchor + shifted_mean, variance))
    }

    /// Adds `x` to the window whose values are `ring`, replacing the oldest once it is full.
    // Always inlined: it is a handful of instructions on every update, and left to itself the
    // compiler keeps one out-of-line copy for its two callers.
    #[inline(always)]
    fn push(&mut self, ring: &mut [f64], x: f64) {
        let capacity = ring.len();
        if self.len == 0 {
            self.anchor = x;
        }
        let shifted = x - self.anchor;
        let slot = self.next;
        if self.len < capacity {
            self.len += 1;
        } else {
            let old = ring[slot] - self.anchor;
            self.sum -= old;
            self.sum_squares -= old * old;
        }
        ring[slot] = x;
        self.sum += shifted;
        self.sum_squares += shifted * shifted;
        self.next = if slot + 1 == capacity { 0 } else { slot + 1 };
        if self.next == 0 {
            self.reanchor(&ring[..self.len]);
        }
    }

    /// Recomputes the sums exactly around the current mean of `values`.
    #[inline(never)]
    fn reanchor(&mut self, values: &[f64]) {
        let n = values.len() as f64;
        self.anchor = values.iter().sum::<f64>() / n;
        // Both sums in one pass, each added in order starting from -0.0 as `Iterator::sum` does,
        // so they equal two separate sums to the bit while their additions overlap.
        (self.sum, self.sum_squares) = values.iter().fold((-0.0, -0.0), |(sum, sum_squares), v| {
            let shifted = v - self.anchor;
            (sum + shifted, sum_squares + shifted.powi(2))
        });
    }
}

/// The last `capacity` values of one metric, with running sums for mean and variance.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    sums: WindowSums,
    values: Box<[f64]>,
}

impl RollingWindow {
    pub fn new(capacity: usize) -> Self {
        debug_assert!(capacity >= 2);
        RollingWindow { sums: WindowSums::default(), values: vec![0.0; capacity].into_boxed_slice() }
    }

    pub fn len(&self) -> usize {
        self.sums.len
    }

    pub fn is_empty(&self) -> bool {
        self.sums.len == 0
    }

    /// Sample mean and standard deviation (n - 1), once the window holds two values.
    pub fn mean_std(&self) -> Option<(f64, f64)> {
        self.mean_variance().map(|(mean, variance)| (mean, variance.sqrt()))
    }

    /// Sample mean and variance (n - 1), once the window holds two values.
    pub fn mean_variance(&self) -> Option<(f64, f64)> {
        self.sums.mean_variance()
    }

    pub fn push(&mut self, x: f64) {
        self.sums.push(&mut self.values, x);
    }
}

/// One metric's window within an entity's state.
#[derive(Debug, Clone, Default)]
struct MetricWindow {
    sums: WindowSums,
    /// Where the metric's ring starts in the entity's `rings`; set by its first push.
    ring_start: usize,
}

/// Every window of one entity: the sums of each of its profile's metrics, and the rings of the
/// metrics it has reported back to back in one buffer. A ring is added when its metric first
/// arrives, so a metric the entity never reports (or the detector does not watch) costs none.
#[derive(Debug)]
struct EntityWindows {
    capacity: usize,
    metrics: Box<[MetricWindow]>,
    rings: Vec<f64>,
}

impl EntityWindows {
    fn new(metric_count: usize, capacity: usize) -> Self {
        debug_assert!(capacity >= 2);
        EntityWindows { capacity, metrics: vec![MetricWindow::default(); metric_count].into(), rings: Vec::new() }
    }

    fn sums(&self, metric: usize) -> &WindowSums {
        &self.metrics[metric].sums
    }

    fn push(&mut self, metric: usize, x: f64) {
        let window = &mut self.metrics[metric];
        // Only a push makes a window non-empty, so an empty window has no ring yet.
        if window.sums.len == 0 {
            window.ring_start = self.rings.len();
            self.rings.reserve_exact(self.capacity);
            self.rings.resize(window.ring_start + self.capacity, 0.0);
        }
        let ring = &mut self.rings[window.ring_start..window.ring_start + self.capacity];
        window.sums.push(ring, x);
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
#[derive(Debug)]
pub struct ZScoreDetector {
    windows: EntityMap<EntityWindows>,
    /// The names of an anomaly's features, made once instead of allocated for every anomaly.
    feature_names: [Arc<str>; 4],
}

impl Default for ZScoreDetector {
    fn default() -> Self {
        ZScoreDetector { windows: EntityMap::default(), feature_names: ["value", "mean", "std", "z"].map(Arc::from) }
    }
}

impl ZScoreDetector {
    /// Number of entities with state.
    pub fn entities(&self) -> usize {
        self.windows.len()
    }
}

/// A reading of one metric judged against the window before it.
struct Judgement {
    metric: MetricId,
    x: f64,
    mean: f64,
    variance: f64,
    window_len: usize,
    is_anomaly: bool,
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
        let ZScoreDetector { windows, feature_names } = self;
        let windows = windows.get_or_insert_with(reading.profile, &reading.entity, || {
            EntityWindows::new(profile.metrics.len(), settings.window.get())
        });
        let threshold_squared = settings.threshold * settings.threshold;
        for &(metric, x) in &reading.metrics {
            let metric_index = usize::from(metric);
            if !settings.watched[metric_index] {
                continue;
            }
            let window = windows.sums(metric_index);
            if let Some((mean, variance)) = window.mean_variance() {
                // Compare squares first: the square root and division only for anomalies and
                // kept scores.
                let floor = sigma_floor(mean);
                let deviation = x - mean;
                let is_anomaly = deviation * deviation > threshold_squared * variance.max(floor * floor);
                if is_anomaly || findings.keeps_scores() {
                    let judgement = Judgement { metric, x, mean, variance, window_len: window.len, is_anomaly };
                    record(observation, settings, feature_names, judgement, findings);
                }
            }
            windows.push(metric_index, x);
        }
    }
}

/// Puts a judgement's score, and the anomaly if it is one, into `findings`. Out of line (and
/// marked cold) so that the loop over a reading's metrics stays small and in registers.
#[cold]
#[inline(never)]
fn record(
    observation: Observation<'_>,
    settings: &ZScoreSettings,
    feature_names: &[Arc<str>; 4],
    judgement: Judgement,
    findings: &mut Findings,
) {
    let Observation { profile, reading, .. } = observation;
    let Judgement { metric, x, mean, variance, window_len, is_anomaly } = judgement;
    let std = variance.sqrt();
    let z = z_score(x, mean, std);
    findings.score(NAME, || Some(profile.metric_name(metric).clone()), z.abs(), settings.threshold, is_anomaly);
    if !is_anomaly {
        return;
    }
    let name = profile.metric_name(metric);
    let direction = if z > 0.0 { "above" } else { "below" };
    let score = z.abs();
    let [value_name, mean_name, std_name, z_name] = feature_names;
    findings.anomalies.push(Anomaly {
        id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, name),
        detector: NAME,
        metric: Some(name.clone()),
        value: Some(x),
        score,
        threshold: settings.threshold,
        severity: Severity::from_excess(score, settings.threshold),
        reason: format!(
            "{name} {} is {}σ {direction} the mean {} of the last {window_len} readings",
            ForPeople(x),
            ForPeople(score),
            ForPeople(mean),
        ),
        features: vec![
            (value_name.clone(), x),
            (mean_name.clone(), mean),
            (std_name.clone(), std),
            (z_name.clone(), z),
        ],
        episode: None,
    });
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

    #[test]
    fn each_metric_keeps_its_own_window_whatever_subset_a_reading_carries() {
        // Drone readings with a changing subset of the seven metrics, the last one only from
        // reading 120 on; every score must be the one a window of that metric alone gives.
        let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
        let profile = registry.by_name("drone").unwrap();
        let settings = profile.detectors.zscore.as_ref().unwrap();
        let late_metric: MetricId = 6;
        let mut detector = ZScoreDetector::default();
        let mut references: Vec<RollingWindow> =
            (0..profile.metrics.len()).map(|_| RollingWindow::new(settings.window.get())).collect();
        let mut judged = vec![0; profile.metrics.len()];
        let mut seen = vec![false; profile.metrics.len()];
        let mut anomalies = 0;
        for i in 0..400_u32 {
            let metrics: Vec<(MetricId, f64)> = (0..7_u16)
                .filter(|&m| if m == late_metric { i >= 120 } else { (i + u32::from(m)) % (u32::from(m) + 2) != 0 })
                .map(|m| {
                    let spike = if i % 37 == 0 { 50.0 } else { 0.0 };
                    (m, 100.0 * f64::from(m) + f64::from((i * (u32::from(m) + 3)) % 11) + spike)
                })
                .collect();
            let reading = Reading {
                profile: profile.id,
                entity: "d-1".into(),
                event_time_ms: i64::from(i) * 1000,
                position: None,
                metrics,
                attributes: vec![],
            };
            let mut findings = Findings::keeping_scores();
            let enrichment = Enrichment::default();
            detector.observe(Observation { profile, reading: &reading, enrichment: &enrichment }, &mut findings);

            let mut expected = Vec::new();
            for &(metric, x) in &reading.metrics {
                seen[usize::from(metric)] = true;
                let reference = &mut references[usize::from(metric)];
                if let Some((mean, variance)) = reference.mean_variance() {
                    let floor = sigma_floor(mean);
                    let is_anomaly =
                        (x - mean) * (x - mean) > settings.threshold * settings.threshold * variance.max(floor * floor);
                    expected.push((metric, z_score(x, mean, variance.sqrt()).abs(), is_anomaly));
                    judged[usize::from(metric)] += 1;
                }
                reference.push(x);
            }
            let got: Vec<(MetricId, f64, bool)> = findings
                .scores
                .iter()
                .map(|s| (profile.metric_id(s.metric.as_deref().unwrap()).unwrap(), s.score, s.is_anomaly))
                .collect();
            assert_eq!(got, expected, "reading {i}");
            let expected_anomalies: Vec<MetricId> = expected.iter().filter(|e| e.2).map(|e| e.0).collect();
            let flagged: Vec<MetricId> =
                findings.anomalies.iter().map(|a| profile.metric_id(a.metric.as_deref().unwrap()).unwrap()).collect();
            assert_eq!(flagged, expected_anomalies, "reading {i}");
            anomalies += flagged.len();

            // A ring only for the metrics seen so far.
            let windows = detector.windows.get(profile.id, "d-1").unwrap();
            let rings = seen.iter().filter(|&&s| s).count() * settings.window.get();
            assert_eq!(windows.rings.len(), rings, "reading {i}");
        }
        assert!(judged.iter().all(|&n| n > 100), "{judged:?}");
        assert!(anomalies > 20, "the spikes are flagged: {anomalies}");
        assert_eq!(detector.windows.get(profile.id, "d-1").unwrap().rings.len(), 7 * settings.window.get());
        assert_eq!(judged[usize::from(late_metric)], 400 - 120 - 2, "never judged on its first two readings");
    }

    #[test]
    fn reanchored_sums_are_the_plain_sums_to_the_bit() {
        // `reanchor` folds from -0.0 to match `Iterator::sum`; this pins that start.
        assert!(std::iter::empty::<f64>().sum::<f64>().is_sign_negative());
        let mut window = RollingWindow::new(7);
        for i in 0..7 * 5 {
            window.push(1e6 + f64::from(i).sin() * 3.0);
        }
        let sums = &window.sums;
        let values = &window.values;
        assert_eq!(sums.next, 0, "just re-anchored");
        let sum: f64 = values.iter().map(|v| v - sums.anchor).sum();
        let sum_squares: f64 = values.iter().map(|v| (v - sums.anchor).powi(2)).sum();
        assert_eq!((sums.sum.to_bits(), sums.sum_squares.to_bits()), (sum.to_bits(), sum_squares.to_bits()));
    }
}
