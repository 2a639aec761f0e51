//! A simulated stretch of every profile replayed through every detector with the built-in
//! settings, scored against its labels the way `teleguard eval` scores `teleguard replay`:
//! the precision, recall and false-alarm figures an operator is promised (issue 15, item 1).
//! Deterministic per seed, so the figures are asserted, not timed.

use std::collections::HashSet;
use std::sync::Arc;
use teleguard_core::detect::isolation_forest::ModelRegistry;
use teleguard_core::detect::{DetectorSet, Findings, Observation};
use teleguard_core::enrich::{Enricher, parse_drivers};
use teleguard_core::eval::detections::Detection;
use teleguard_core::eval::labels::LabelSet;
use teleguard_core::eval::matching::{DEFAULT_GRACE_MS, MatchReport, evaluate, matches};
use teleguard_core::geo::{BUNDLED_GEOFENCES, GeofenceIndex};
use teleguard_core::model::Anomaly;
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::simulate::{SIMULATED_PROFILES, SimMessage, SimSettings, Simulator};
use teleguard_core::validate::validate;

const START_MS: i64 = 1_725_408_000_000; // 2024-09-04T00:00:00Z

/// Simulates `hours` of every profile and replays it: each message validated, enriched and
/// observed by the standard detectors in event-time order; an anomaly sent again with its
/// end (same id) is one detection, as `teleguard eval` reads replay output.
fn replayed_day(seed: u64, hours: i64, anomaly_rate: f64) -> MatchReport {
    let (labels, detections) = simulated_and_detected(seed, hours, anomaly_rate);
    evaluate(&labels, &detections, DEFAULT_GRACE_MS)
}

/// The labels of `hours` of every profile, and what the standard detectors said of it.
fn simulated_and_detected(seed: u64, hours: i64, anomaly_rate: f64) -> (LabelSet, Vec<Detection>) {
    let (labels, found) = simulated_and_found(&SIMULATED_PROFILES, seed, hours, anomaly_rate);
    (labels, found.into_iter().map(|(detection, _)| detection).collect())
}

/// The labels of `hours` of `profiles`, and each anomaly the standard detectors raised, once,
/// as a detection and as itself.
fn simulated_and_found(
    profiles: &[&str],
    seed: u64,
    hours: i64,
    anomaly_rate: f64,
) -> (LabelSet, Vec<(Detection, Anomaly)>) {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    let drivers = parse_drivers(include_str!("../../../data/drivers.json")).unwrap();
    let enricher = Enricher::new(&drivers, GeofenceIndex::from_geojson(BUNDLED_GEOFENCES).unwrap());
    let settings = SimSettings { anomaly_rate, ..SimSettings::new(profiles, seed, START_MS) };
    let mut simulator = Simulator::new(&settings).unwrap();
    let mut detectors = DetectorSet::standard(Arc::new(ModelRegistry::default()));
    let mut findings = Findings::default();
    let mut detections = Vec::new();
    let mut seen_ids = HashSet::new();
    let end_ms = START_MS + hours * 3_600_000;
    let mut batch: Vec<SimMessage> = Vec::new();
    let mut until_ms = START_MS;
    while until_ms < end_ms {
        until_ms = (until_ms + 60_000).min(end_ms);
        batch.clear();
        simulator.emit_until(until_ms - 1, &mut batch);
        for message in &batch {
            let profile = registry.by_name(message.profile).unwrap();
            let reading = validate(profile, &message.payload).expect("simulated messages are valid");
            let enrichment = enricher.enrich(profile, &reading);
            findings.clear();
            detectors.observe(
                Observation { profile, reading: &reading, enrichment: &enrichment, arrival_ms: None },
                &mut findings,
            );
            for anomaly in findings.anomalies.drain(..) {
                if seen_ids.insert(anomaly.id.clone()) {
                    let detection = Detection {
                        entity: reading.entity.to_string(),
                        profile: Some(message.profile.to_string()),
                        time_ms: reading.event_time_ms,
                        detector: anomaly.detector.to_string(),
                        metric: anomaly.metric.as_deref().map(str::to_string),
                        score: Some(anomaly.score),
                        threshold: Some(anomaly.threshold),
                        is_anomaly: true,
                    };
                    detections.push((detection, anomaly));
                }
            }
        }
    }
    simulator.finish();
    let labels = simulator.take_labels();
    (simulator.label_set(&settings, end_ms, labels), detections)
}

#[test]
fn a_simulated_day_of_every_profile_is_found_with_few_false_alarms() {
    let report = replayed_day(7, 8, 1.0);
    let summary: Vec<String> = report
        .by_type
        .iter()
        .map(|t| format!("{} {}/{} precision {:?}", t.kind, t.detected_labels, t.labels, t.precision))
        .collect();
    let overall = &report.overall;
    eprintln!("simulated day, seed 7: {summary:#?}");
    assert!(overall.labels > 150, "{summary:?}");
    for kind in &report.by_type {
        // A drift slower than the z-score's window is learnt as it goes and found when the
        // sensor snaps back; a drift still running when the stretch ends is missed (here 2 of
        // 11). Every other type is found as it starts.
        let least = if kind.kind == "drift" { 0.8 } else { 0.95 };
        assert!(kind.recall.unwrap() >= least, "{} recall {:?}: {summary:?}", kind.kind, kind.recall);
    }
    for rule in ["teleport", "gps_spoof", "restricted_zone", "long_stop", "fleet_spoof", "clock_jump"] {
        // The rarest kinds may not come up in eight hours; the test below looks for them longer.
        let rare = ["fleet_spoof", "clock_jump"].contains(&rule);
        let Some(kind) = report.by_type.iter().find(|t| t.kind == rule) else {
            assert!(rare, "no {rule} label: {summary:?}");
            continue;
        };
        assert_eq!((kind.recall, kind.precision), (Some(1.0), Some(1.0)), "{rule}: {summary:?}");
    }
    assert!(overall.precision.unwrap() >= 0.90, "precision {:?}: {summary:?}", overall.precision);
    let false_alarms = overall.false_alarms_per_entity_hour.unwrap();
    assert!(false_alarms <= 0.05, "{false_alarms} false alarms per entity-hour: {summary:?}");
}

#[test]
fn every_altitude_no_airframe_can_fly_is_spoofing_evidence() {
    // An aircraft's altitude glitch (1,500 ft or more within one second) is a climb or descent
    // far beyond 150 m/s: the spoofing rule raises it, whatever the statistical detectors say.
    let (labels, detections) = simulated_and_detected(7, 8, 1.0);
    let glitches: Vec<_> = labels
        .labels
        .iter()
        .filter(|l| l.profile == "aircraft" && l.kind == "spike" && l.metric.as_deref() == Some("altitude"))
        .collect();
    assert!(glitches.len() >= 3, "{} altitude glitches", glitches.len());
    for label in glitches {
        let found = detections.iter().any(|d| d.detector == "spoofing" && matches(label, d, DEFAULT_GRACE_MS));
        assert!(found, "no spoofing evidence for {label:?}");
    }
}

#[test]
fn every_drift_that_ends_within_the_stretch_is_found() {
    // The z-score's window (120 readings, 10 min of a station) follows a drift of 10 to 16 σ
    // over one to three hours, so the drift is found when the sensor snaps back. The drifts
    // missed above are the ones still running when the stretch ends: this pins that every
    // other one is found, and how many run to the end.
    let (labels, detections) = simulated_and_detected(7, 8, 1.0);
    let (running, ended): (Vec<_>, Vec<_>) = labels
        .labels
        .iter()
        .filter(|label| label.kind == "drift")
        .cloned()
        .partition(|label| label.end_ms + DEFAULT_GRACE_MS >= labels.end_ms);
    assert_eq!((ended.len(), running.len()), (9, 2), "drifts ended and running at the end");
    let ended = LabelSet { labels: ended, ..labels.clone() };
    let report = evaluate(&ended, &detections, DEFAULT_GRACE_MS);
    let drift = report.by_type.iter().find(|t| t.kind == "drift").unwrap();
    assert_eq!(drift.recall, Some(1.0), "{drift:?}");
    // Found at the snap-back: the delay is the drift's length, an hour or more.
    assert!(drift.median_delay_ms.unwrap() >= 3_600_000.0, "{drift:?}");
}

#[test]
fn a_clean_stretch_raises_almost_nothing() {
    let report = replayed_day(8, 3, 0.0);
    assert_eq!(report.overall.labels, 0);
    let false_alarms = report.overall.false_alarms_per_entity_hour.unwrap();
    assert!(
        false_alarms <= 0.05,
        "{} false detections over {} entity-hours",
        report.overall.false_detections,
        report.entity_hours
    );
}

/// The figures issue 15 promises, on whole days: three seeds of 24 hours of every profile at
/// the default anomaly rate, and a clean day. About a minute per day in a release build, so
/// not in the default run: `cargo test --release -p teleguard-core --test simulated_day --
/// --ignored --nocapture` prints every type's recall, precision and delays.
#[test]
#[ignore = "four simulated days: run with --release -- --ignored"]
fn three_whole_days_and_a_clean_one_meet_the_promised_figures() {
    for seed in [1, 2, 3] {
        let (labels, detections) = simulated_and_detected(seed, 24, 1.0);
        let report = evaluate(&labels, &detections, DEFAULT_GRACE_MS);
        let mut by_detector = std::collections::BTreeMap::<&str, (usize, usize)>::new();
        for detection in &detections {
            let true_one = labels.labels.iter().any(|l| matches(l, detection, DEFAULT_GRACE_MS));
            let tally = by_detector.entry(detection.detector.as_str()).or_default();
            tally.0 += usize::from(true_one);
            tally.1 += usize::from(!true_one);
        }
        eprintln!("seed {seed} detections by detector (true, false): {by_detector:?}");
        for kind in &report.by_type {
            eprintln!(
                "seed {seed} {:<16} {:>3}/{:<3} recall {:.3} precision {:?} delay median {:.0} s p95 {:.0} s",
                kind.kind,
                kind.detected_labels,
                kind.labels,
                kind.recall.unwrap_or(f64::NAN),
                kind.precision.map(|p| (p * 1000.0).round() / 1000.0),
                kind.median_delay_ms.unwrap_or(f64::NAN) / 1000.0,
                kind.p95_delay_ms.unwrap_or(f64::NAN) / 1000.0,
            );
        }
        let overall = &report.overall;
        eprintln!(
            "seed {seed} overall recall {:.3} precision {:.3} false alarms per entity-hour {:.4} ({} false of {} detections)",
            overall.recall.unwrap(),
            overall.precision.unwrap(),
            overall.false_alarms_per_entity_hour.unwrap(),
            overall.false_detections,
            overall.true_detections + overall.false_detections,
        );
        for kind in &report.by_type {
            assert!(kind.recall.unwrap() >= 0.95, "seed {seed}: {} recall {:?}", kind.kind, kind.recall);
        }
        // The rules: everything they define is labelled (injected or not), so they are exact.
        for rule in ["teleport", "restricted_zone", "long_stop", "fleet_spoof", "clock_jump", "gps_spoof"] {
            let kind = report.by_type.iter().find(|t| t.kind == rule).unwrap();
            assert_eq!(kind.precision, Some(1.0), "seed {seed}: {rule} {kind:?}");
            if rule != "gps_spoof" {
                assert_eq!(kind.recall, Some(1.0), "seed {seed}: {rule} {kind:?}");
            }
        }
        assert!(overall.precision.unwrap() >= 0.90, "seed {seed}: precision {:?}", overall.precision);
        assert!(overall.false_alarms_per_entity_hour.unwrap() <= 0.05, "seed {seed}: {overall:?}");
    }
    let clean = replayed_day(4, 24, 0.0);
    eprintln!(
        "clean day: {} false detections over {:.0} entity-hours, {:.4} per entity-hour",
        clean.overall.false_detections,
        clean.entity_hours,
        clean.overall.false_alarms_per_entity_hour.unwrap()
    );
    assert!(clean.overall.false_alarms_per_entity_hour.unwrap() <= 0.05, "{:?}", clean.overall);
}

/// The fleet-wide and clock evidence on simulated vehicle half-days (three seeds): every
/// injected fleet spoof and clock jump is found, with precision 1.0, and each by its own evidence
/// (not only by the speed check, which also sees a fix jumping to where the spoofer put it).
#[test]
fn fleet_spoofs_and_clock_jumps_are_found_by_their_own_evidence() {
    let mut labelled = std::collections::BTreeMap::new();
    for seed in [7, 8, 9] {
        let (labels, found) = simulated_and_found(&["vehicle"], seed, 12, 1.0);
        let detections: Vec<Detection> = found.iter().map(|(d, _)| d.clone()).collect();
        let report = evaluate(&labels, &detections, DEFAULT_GRACE_MS);
        let summary: Vec<String> = report
            .by_type
            .iter()
            .map(|t| format!("{} {}/{} precision {:?}", t.kind, t.detected_labels, t.labels, t.precision))
            .collect();
        eprintln!("vehicles, seed {seed}: {summary:#?}");
        for (kind, feature) in [("fleet_spoof", "devices"), ("clock_jump", "clock_step_s")] {
            // An attack of the fleet's spoofer comes every four hours or so: a half-day may have none.
            let Some(score) = report.by_type.iter().find(|t| t.kind == kind) else { continue };
            *labelled.entry(kind).or_insert(0) += score.labels;
            assert_eq!((score.recall, score.precision), (Some(1.0), Some(1.0)), "seed {seed} {kind}: {summary:?}");
            for label in labels.labels.iter().filter(|l| l.kind == kind) {
                let by_own_evidence = found.iter().any(|(detection, anomaly)| {
                    detection.entity == label.entity
                        && (label.start_ms..=label.end_ms + DEFAULT_GRACE_MS).contains(&detection.time_ms)
                        && anomaly.features.iter().any(|(name, _)| &**name == feature)
                });
                assert!(by_own_evidence, "seed {seed}: {label:?} not found by its {feature} evidence");
            }
        }
        // None of that evidence on a vehicle that no label covers.
        for (detection, anomaly) in &found {
            let evidence = anomaly.features.iter().any(|(name, _)| ["devices", "clock_step_s"].contains(&&**name));
            let covered = labels.labels.iter().any(|l| {
                l.entity == detection.entity && (l.start_ms..=l.end_ms + DEFAULT_GRACE_MS).contains(&detection.time_ms)
            });
            assert!(!evidence || covered, "seed {seed}: {}", anomaly.reason);
        }
    }
    let count = |kind: &str| labelled.get(kind).copied().unwrap_or(0);
    assert!(count("fleet_spoof") >= 5 && count("clock_jump") >= 20, "labels over the three seeds: {labelled:?}");
}
