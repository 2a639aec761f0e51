//! Per-detector throughput, one reading at a time: `cargo bench -p teleguard-core`.
//!
//! Prints updates or readings per second for the rolling z-score, isolation-forest scoring
//! and the three track rules together. Readings are prepared up front so only the detector
//! is timed.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use teleguard_core::detect::isolation_forest::{IsolationForest, IsolationForestDetector, ModelRegistry};
use teleguard_core::detect::rules::{
    geofence::GeofenceBreachDetector, stop::UnusualStopDetector, teleport::TeleportDetector,
};
use teleguard_core::detect::zscore::ZScoreDetector;
use teleguard_core::detect::{Detector, Findings, Observation};
use teleguard_core::enrich::{Enricher, parse_drivers};
use teleguard_core::geo::GeofenceIndex;
use teleguard_core::model::{Enrichment, Reading};
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::simulate::{SimSettings, Simulator};
use teleguard_core::validate::validate;

fn simulated(profile: &str, count: usize, registry: &ProfileRegistry) -> Vec<Reading> {
    let settings = SimSettings {
        profiles: vec![profile.to_string()],
        seed: 3,
        start_ms: 1_725_408_000_000,
        anomaly_rate: 0.003,
        fleet_scale: 40.0,
    };
    let mut simulator = Simulator::new(&settings).unwrap();
    let mut messages = Vec::new();
    let mut until = settings.start_ms;
    while messages.len() < count {
        until += 1000;
        simulator.emit_until(until, &mut messages);
    }
    let profile = registry.by_name(profile).unwrap();
    messages.iter().take(count).map(|m| validate(profile, &m.payload).unwrap()).collect()
}

fn run(
    detector: &mut dyn Detector,
    registry: &ProfileRegistry,
    readings: &[Reading],
    enrichments: &[Enrichment],
) -> f64 {
    let mut findings = Findings::default();
    let started = Instant::now();
    for (reading, enrichment) in readings.iter().zip(enrichments) {
        let profile = registry.get(reading.profile);
        findings.clear();
        detector.observe(Observation { profile, reading, enrichment }, &mut findings);
        black_box(&findings);
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    // `cargo bench` passes --bench; under `cargo test` this runs small, as a smoke test.
    let n = if std::env::args().any(|a| a == "--bench") { 2_000_000 } else { 20_000 };

    let environment = simulated("environment", n, &registry);
    let none = vec![Enrichment::default(); n];
    let mut zscore = ZScoreDetector::default();
    run(&mut zscore, &registry, &environment[..n / 10], &none);
    let seconds = run(&mut zscore, &registry, &environment, &none);
    println!("zscore: {:.1} M updates/s (one metric per reading, 400 sensors)", n as f64 / seconds / 1e6);

    let drones = simulated("drone", n / 2, &registry);
    let drone_updates: usize = drones.iter().map(|r| r.metrics.len()).sum();
    let mut zscore = ZScoreDetector::default();
    let seconds = run(&mut zscore, &registry, &drones, &none);
    println!("zscore: {:.1} M updates/s (7 metrics per drone reading)", drone_updates as f64 / seconds / 1e6);

    let training: Vec<Vec<f64>> = drones[..200].iter().map(|r| r.metrics.iter().map(|(_, v)| *v).collect()).collect();
    let forest = IsolationForest::fit(&training, 100, 0.05, 1);
    let rows: Vec<Vec<f64>> = drones.iter().map(|r| r.metrics.iter().map(|(_, v)| *v).collect()).collect();
    let started = Instant::now();
    for row in &rows {
        black_box(forest.score(row));
    }
    println!(
        "isolation forest: {:.2} M readings/s scored (100 trees, 7 features)",
        rows.len() as f64 / started.elapsed().as_secs_f64() / 1e6
    );
    let mut detector = IsolationForestDetector::new(Arc::new(ModelRegistry::default()));
    let seconds = run(&mut detector, &registry, &drones, &none);
    println!(
        "isolation forest detector: {:.2} M readings/s (features, scoring, findings)",
        drones.len() as f64 / seconds / 1e6
    );

    let vehicles = simulated("vehicle", n, &registry);
    let drivers = parse_drivers(include_str!("../../../data/drivers.json")).unwrap();
    let zones = GeofenceIndex::from_geojson(include_str!("../../../data/geofences.geojson")).unwrap();
    let enricher = Enricher::new(&drivers, zones);
    let vehicle = registry.by_name("vehicle").unwrap();
    let started = Instant::now();
    let enrichments: Vec<Enrichment> = vehicles.iter().map(|r| enricher.enrich(vehicle, r)).collect();
    println!(
        "enrichment (driver + R-tree zone lookup): {:.1} M readings/s",
        n as f64 / started.elapsed().as_secs_f64() / 1e6
    );
    let mut rules: Vec<Box<dyn Detector>> = vec![
        Box::new(TeleportDetector::default()),
        Box::new(GeofenceBreachDetector::default()),
        Box::new(UnusualStopDetector::default()),
    ];
    let mut total = 0.0;
    for rule in &mut rules {
        let seconds = run(rule.as_mut(), &registry, &vehicles, &enrichments);
        println!("  {}: {:.1} M readings/s", rule.name(), n as f64 / seconds / 1e6);
        total += seconds;
    }
    println!("rules (teleport + geofence breach + unusual stop): {:.1} M readings/s", n as f64 / total / 1e6);
}
