//! Per-detector throughput, one reading at a time: `cargo bench -p teleguard-core`.
//!
//! Each figure is the best and the median of several passes over prepared readings (shared
//! machines vary by tens of percent between runs; the best pass is what the code can do).
//! Under `cargo test` it runs small, as a smoke test.

use std::hint::black_box;
use std::sync::Arc;
use teleguard_core::detect::fleet::SharedFixes;
use teleguard_core::detect::isolation_forest::{IsolationForest, IsolationForestDetector, ModelRegistry};
use teleguard_core::detect::novelty::NoveltyDetector;
use teleguard_core::detect::rules::{
    geofence::GeofenceBreachDetector, spoofing::SpoofingDetector, stop::UnusualStopDetector, teleport::TeleportDetector,
};
use teleguard_core::detect::settings::{ProfileShape, RawDetectors};
use teleguard_core::detect::trend::TrendDetector;
use teleguard_core::detect::zscore::ZScoreDetector;
use teleguard_core::detect::{Detector, Findings, Observation};
use teleguard_core::enrich::{Enricher, parse_drivers};
use teleguard_core::geo::GeofenceIndex;
use teleguard_core::model::{Enrichment, Reading};
use teleguard_core::profile::{Profile, ProfileRegistry};
use teleguard_core::validate::validate;

mod common;

use common::report;

fn simulated(profile: &str, count: usize, registry: &ProfileRegistry) -> Vec<Reading> {
    let profile = registry.by_name(profile).unwrap();
    common::simulated_messages(&profile.name, count).iter().map(|m| validate(profile, &m.payload).unwrap()).collect()
}

fn observe_all(
    detector: &mut dyn Detector,
    registry: &ProfileRegistry,
    readings: &[Reading],
    enrichments: &[Enrichment],
) {
    let mut findings = Findings::default();
    for (reading, enrichment) in readings.iter().zip(enrichments) {
        let profile = registry.get(reading.profile);
        findings.clear();
        detector.observe(Observation { profile, reading, enrichment, arrival_ms: None }, &mut findings);
        black_box(&findings);
    }
}

/// `profile` with sequence novelty on (its default settings) for every metric: the built-in
/// profiles leave it off.
fn with_novelty(profile: &Profile) -> Profile {
    let detectors = RawDetectors { novelty: Some(toml::from_str("").unwrap()), ..Default::default() };
    let shape = ProfileShape {
        metric_names: profile.metrics.iter().map(|m| &*m.name).collect(),
        has_position: false,
        enriches_zones: false,
    };
    let mut errors = Vec::new();
    let novelty = detectors.validate(&shape, &mut errors).novelty;
    assert!(errors.is_empty(), "{errors:?}");
    let mut profile = profile.clone();
    profile.detectors.novelty = novelty;
    profile
}

/// Like [`observe_all`] with every reading judged under `profile`.
fn observe_all_as(detector: &mut dyn Detector, profile: &Profile, readings: &[Reading], enrichments: &[Enrichment]) {
    let mut findings = Findings::default();
    for (reading, enrichment) in readings.iter().zip(enrichments) {
        findings.clear();
        detector.observe(Observation { profile, reading, enrichment, arrival_ms: None }, &mut findings);
        black_box(&findings);
    }
}

fn main() {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    let n = if std::env::args().any(|a| a == "--bench") { 500_000 } else { 5_000 };

    let environment = simulated("environment", n, &registry);
    let none = vec![Enrichment::default(); n];
    let mut zscore = ZScoreDetector::default();
    report("zscore", "updates", n, || observe_all(&mut zscore, &registry, &environment, &none));

    let drones = simulated("drone", n, &registry);
    let drone_updates: usize = drones.iter().map(|r| r.metrics.len()).sum();
    let mut zscore = ZScoreDetector::default();
    report("zscore, 7 metrics per reading", "updates", drone_updates, || {
        observe_all(&mut zscore, &registry, &drones, &none)
    });

    // The built-in environment profile runs the trend detector on every metric.
    let mut trend = TrendDetector::default();
    report("trend", "updates", n, || observe_all(&mut trend, &registry, &environment, &none));

    let environment_profile = with_novelty(registry.by_name("environment").unwrap());
    let mut novelty = NoveltyDetector::default();
    report("novelty", "updates", n, || observe_all_as(&mut novelty, &environment_profile, &environment, &none));
    let drone_profile = with_novelty(registry.by_name("drone").unwrap());
    let mut novelty = NoveltyDetector::default();
    report("novelty, 7 metrics per reading", "updates", drone_updates, || {
        observe_all_as(&mut novelty, &drone_profile, &drones, &none)
    });

    let row = |r: &Reading| -> Vec<f64> { r.metrics.iter().map(|(_, v)| *v).collect() };
    let training: Vec<Vec<f64>> = drones[..200].iter().map(row).collect();
    let forest = IsolationForest::fit(&training, 100, 0.05, 1);
    let rows: Vec<Vec<f64>> = drones.iter().map(row).collect();
    report("isolation forest scoring (100 trees, 7 features)", "readings", n, || {
        for row in &rows {
            black_box(forest.score(row));
        }
    });
    let mut detector = IsolationForestDetector::new(Arc::new(ModelRegistry::default()));
    report("isolation forest detector (features, scoring, findings)", "readings", n, || {
        observe_all(&mut detector, &registry, &drones, &none)
    });

    let vehicles = simulated("vehicle", n, &registry);
    let drivers = parse_drivers(include_str!("../../../data/drivers.json")).unwrap();
    let zones = GeofenceIndex::from_geojson(include_str!("../../../data/geofences.geojson")).unwrap();
    let enricher = Enricher::new(&drivers, zones);
    let vehicle = registry.by_name("vehicle").unwrap();
    report("enrichment (driver + R-tree zone lookup)", "readings", n, || {
        for reading in &vehicles {
            black_box(enricher.enrich(vehicle, reading));
        }
    });
    let enrichments: Vec<Enrichment> = vehicles.iter().map(|r| enricher.enrich(vehicle, r)).collect();
    let mut teleport = TeleportDetector::default();
    let mut geofence = GeofenceBreachDetector::default();
    let mut stop = UnusualStopDetector::default();
    report("rules (teleport + geofence breach + unusual stop)", "readings", n, || {
        observe_all(&mut teleport, &registry, &vehicles, &enrichments);
        observe_all(&mut geofence, &registry, &vehicles, &enrichments);
        observe_all(&mut stop, &registry, &vehicles, &enrichments);
    });
    let mut spoofing = SpoofingDetector::sharing(Arc::new(SharedFixes::default()));
    report("spoofing (reported speed, altitude, shared fixes, clock)", "readings", n, || {
        observe_all(&mut spoofing, &registry, &vehicles, &enrichments)
    });
}
