//! The trend detector on hand-made signals: a smooth daily cycle is no anomaly, a drift is one
//! anomaly found while it drifts, a random walk is judged by its own bends.

use super::*;
use crate::model::{Enrichment, Reading};
use crate::profile::{Profile, ProfileRegistry, RawProfile};
use std::collections::BTreeMap;

const SECOND: i64 = 1000;
const HOUR: i64 = 3_600_000;

fn profile(trend: &str) -> Arc<Profile> {
    let text = format!(
        r#"
        entity_field = "id"
        timestamp_field = "t"
        metrics = [{{ field = "temperature" }}]
        detectors.trend = {trend}
        "#
    );
    let raw: RawProfile = toml::from_str(&text).expect("profile TOML");
    let registry = ProfileRegistry::with_builtins(BTreeMap::from([("station".to_string(), raw)])).expect("profile");
    registry.by_name("station").expect("station profile").clone()
}

/// A deterministic noise in [-1, 1] (a fixed generator, so the figures below never change).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    /// Roughly normal with standard deviation `sigma` (a sum of uniforms).
    fn gauss(&mut self, sigma: f64) -> f64 {
        let sum: f64 = (0..6).map(|_| self.next()).sum();
        sum / 2.0_f64.sqrt() * sigma
    }
}

/// Runs `signal(t_ms)` every 5 s for `hours`, returns the anomalies.
fn run(profile: &Arc<Profile>, hours: i64, mut signal: impl FnMut(i64) -> f64) -> Vec<Anomaly> {
    let mut detector = TrendDetector::default();
    let mut findings = Findings::keeping_scores();
    let entity: Arc<str> = Arc::from("station-1");
    let enrichment = Enrichment::default();
    let mut t = 0;
    while t < hours * HOUR {
        let reading = Reading {
            profile: profile.id,
            entity: entity.clone(),
            event_time_ms: t,
            position: None,
            metrics: vec![(0, signal(t))],
            attributes: Vec::new(),
        };
        detector.observe(
            Observation { profile, reading: &reading, enrichment: &enrichment, arrival_ms: None },
            &mut findings,
        );
        t += 5 * SECOND;
    }
    if std::env::var("TREND_DEBUG").is_ok() {
        for (i, score) in findings.scores.iter().enumerate().step_by(10) {
            eprintln!("{i} {:.2}", score.score);
        }
    }
    findings.anomalies
}

fn daily_cycle(t_ms: i64) -> f64 {
    20.0 + 4.0 * (t_ms as f64 / (24 * HOUR) as f64 * std::f64::consts::TAU).sin()
}

#[test]
fn the_kink_filter_reads_a_slope_change_exactly_and_ignores_any_quadratic() {
    let filters = KinkFilters::new(120);
    assert_eq!(filters.recent, [60, 40, 20]);
    for (weights, recent) in filters.weights.iter().zip(&filters.recent) {
        let kink = (120 - recent) as f64 - 0.5;
        // A quadratic course plus a slope change of 0.3 per block at the kink.
        let course: Vec<f64> = (0..120)
            .map(|i| {
                let s = i as f64;
                7.0 - 0.02 * s + 0.001 * s * s + 0.3 * (s - kink).max(0.0)
            })
            .collect();
        let change: f64 = weights.iter().zip(&course).map(|(w, y)| w * y).sum();
        assert!((change - 0.3).abs() < 1e-9, "kink {recent} blocks back: {change}");
        let quadratic: f64 =
            weights.iter().enumerate().map(|(i, w)| w * (3.0 + 0.5 * i as f64 - 0.01 * (i * i) as f64)).sum();
        assert!(quadratic.abs() < 1e-9, "a quadratic has no kink: {quadratic}");
    }
}

#[test]
fn a_noisy_daily_cycle_raises_nothing_for_three_days() {
    let profile = profile("{}");
    let mut noise = Noise(7);
    let anomalies = run(&profile, 72, |t| daily_cycle(t) + noise.gauss(0.15));
    assert!(anomalies.is_empty(), "{anomalies:#?}");
}

#[test]
fn a_drift_on_a_daily_cycle_is_one_anomaly_found_while_it_drifts() {
    let profile = profile("{}");
    let mut noise = Noise(11);
    // From hour 10, the reading drifts 2 °C in 2 h (13 times its noise), then snaps back.
    let start = 10 * HOUR;
    let anomalies = run(&profile, 20, |t| {
        let drift =
            if (start..start + 2 * HOUR).contains(&t) { 2.0 * (t - start) as f64 / (2 * HOUR) as f64 } else { 0.0 };
        daily_cycle(t) + drift + noise.gauss(0.15)
    });
    let opened: Vec<&Anomaly> = anomalies.iter().filter(|a| a.episode.is_some_and(|e| e.end_ms.is_none())).collect();
    assert_eq!(opened.len(), 1, "one episode: {anomalies:#?}");
    let at = opened[0].episode.unwrap().start_ms;
    assert!(at > start && at < start + HOUR, "found while it drifted, at {} min", (at - start) / 60_000);
    let slope = opened[0].features.iter().find(|(n, _)| &**n == "slope_change_per_hour").unwrap().1;
    assert!(slope > 0.5 && slope < 2.0, "slope change {slope} °C/h (the drift's is 1)");
    assert!(opened[0].reason.contains("turned upward"), "{}", opened[0].reason);
}

#[test]
fn a_steep_drift_is_found_within_a_sixth_of_the_window_and_a_random_walk_is_judged_by_its_own_bends() {
    let profile = profile("{}");
    let mut noise = Noise(5);
    let start = 8 * HOUR;
    let anomalies = run(&profile, 12, |t| {
        let drift = if t >= start { -2.4 * (t - start) as f64 / HOUR as f64 } else { 0.0 };
        daily_cycle(t) + drift + noise.gauss(0.15)
    });
    let first = anomalies.first().expect("the drift is found");
    let minutes = (first.episode.unwrap().start_ms - start) / 60_000;
    assert!((5..=25).contains(&minutes), "found {minutes} min after it began");
    assert!(first.reason.contains("turned downward"), "{}", first.reason);

    // A random walk (barometric pressure) bends by itself: its own bends set its scale.
    let mut noise = Noise(3);
    let mut level = 1013.0;
    let anomalies = run(&profile, 48, |_| {
        level += noise.gauss(0.02);
        level + noise.gauss(0.3)
    });
    assert!(anomalies.is_empty(), "{anomalies:#?}");
}

#[test]
fn nothing_is_judged_before_a_window_and_its_learning_and_a_gap_starts_the_window_again() {
    let profile = profile("{ learning_blocks = 0 }");
    // A steep ramp from the first reading: with no learning, the first judged window (after
    // 120 one-minute blocks) sees only a straight line, no kink.
    let anomalies = run(&profile, 3, |t| 20.0 + t as f64 / HOUR as f64);
    assert!(anomalies.is_empty(), "{anomalies:#?}");

    let settings = profile.detectors.trend.as_ref().unwrap();
    let mut state = MetricState::new(settings);
    let mut judged = 0;
    for minute in 0..200 {
        // A reading per minute; after minute 150 a gap of 10 minutes.
        let t = if minute < 150 { minute * 60 * SECOND } else { (minute + 10) * 60 * SECOND };
        judged += usize::from(state.observe(20.0 + (minute % 3) as f64 * 0.1, t, settings).is_some());
    }
    // Block b completes with the reading of minute b + 1; the window is full with block 119
    // (minute 120) and judged up to block 149, which the reading after the gap completes;
    // then the window starts again and 49 blocks do not fill it.
    assert_eq!(judged, 31);
}

#[test]
fn bad_settings_are_refused_with_what_to_do() {
    let raw: RawProfile = toml::from_str(
        r#"
        entity_field = "id"
        timestamp_field = "t"
        metrics = [{ field = "temperature" }]
        detectors.trend = { window_blocks = 6, threshold = -1.0, metrics = ["humidity"] }
        "#,
    )
    .unwrap();
    let error = ProfileRegistry::with_builtins(BTreeMap::from([("station".to_string(), raw)])).unwrap_err().to_string();
    assert!(error.contains("window_blocks 6 at least 12"), "{error}");
    assert!(error.contains("threshold -1 must be a number above 0"), "{error}");
    assert!(error.contains("unknown metric `humidity`"), "{error}");
}
