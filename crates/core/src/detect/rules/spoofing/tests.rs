//! Hand-computed cases for the spoofing evidence through the built-in profiles' settings: the
//! altitude check, identical fixes across devices (and across workers), and clock jumps.

use crate::detect::fleet::SharedFixes;
use crate::detect::isolation_forest::ModelRegistry;
use crate::detect::{DetectorSet, Findings, Observation};
use crate::model::{Anomaly, Enrichment};
use crate::profile::ProfileRegistry;
use crate::validate::validate;
use std::sync::Arc;

const T0: i64 = 1_725_444_000_000; // 2024-09-04T10:00:00Z

fn registry() -> ProfileRegistry {
    ProfileRegistry::with_builtins(Default::default()).unwrap()
}

/// A vehicle reading of the built-in profile.
struct VehicleReading<'a> {
    vehicle: &'a str,
    at_ms: i64,
    lat: f64,
    lon: f64,
    speed: f64,
    arrival_ms: Option<i64>,
}

/// What `detectors` say of `readings` in order: the spoofing anomalies of each.
fn spoofing_of(
    registry: &ProfileRegistry,
    detectors: &mut DetectorSet,
    readings: &[VehicleReading],
) -> Vec<Vec<Anomaly>> {
    let vehicle = registry.by_name("vehicle").unwrap();
    readings
        .iter()
        .map(|r| {
            let json = format!(
                r#"{{"vehicle_id": "{}", "timestamp": "{}", "latitude": {}, "longitude": {}, "speed": {}}}"#,
                r.vehicle,
                crate::time::format_millis(r.at_ms),
                r.lat,
                r.lon,
                r.speed
            );
            let reading = validate(vehicle, json.as_bytes()).unwrap();
            let mut findings = Findings::default();
            let enrichment = Enrichment::default();
            let observation =
                Observation { profile: vehicle, reading: &reading, enrichment: &enrichment, arrival_ms: r.arrival_ms };
            detectors.observe(observation, &mut findings);
            findings.anomalies.into_iter().filter(|a| a.detector == super::NAME).collect()
        })
        .collect()
}

fn standard() -> DetectorSet {
    DetectorSet::standard(Arc::new(ModelRegistry::default()))
}

/// `vehicles` reporting every 5 s for `ticks` readings, in this order at each tick, each at
/// `track(vehicle index, tick)` and `speed`.
fn fleet(
    vehicles: &[&'static str],
    ticks: i64,
    speed: f64,
    track: impl Fn(usize, i64) -> (f64, f64),
) -> Vec<VehicleReading<'static>> {
    let mut readings = Vec::new();
    for tick in 0..ticks {
        for (index, vehicle) in vehicles.iter().enumerate() {
            let (lat, lon) = track(index, tick);
            readings.push(VehicleReading { vehicle, at_ms: T0 + tick * 5_000, lat, lon, speed, arrival_ms: None });
        }
    }
    readings
}

/// (vehicle, tick) of every anomaly whose features include `feature`.
fn flagged(readings: &[VehicleReading], verdicts: &[Vec<Anomaly>], feature: &str) -> Vec<(String, i64)> {
    readings
        .iter()
        .zip(verdicts)
        .flat_map(|(r, found)| {
            found
                .iter()
                .filter(|a| a.features.iter().any(|(name, _)| &**name == feature))
                .map(|_| (r.vehicle.to_string(), (r.at_ms - T0) / 5_000))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn vehicles_parked_side_by_side_are_not_spoofed() {
    let registry = registry();
    // Three vans parked at the depot for ten minutes, reported at exactly the same spot.
    let parked = fleet(&["V1", "V2", "V3"], 120, 0.0, |_, _| (37.774_929, -122.419_416));
    assert!(spoofing_of(&registry, &mut standard(), &parked).iter().all(Vec::is_empty));
    // Two trucks side by side in traffic, lanes 3.5 m apart, at 30 km/h: never the same fix.
    let lanes =
        fleet(&["V1", "V2"], 120, 30.0, |lane, tick| (37.7 + tick as f64 * 0.000_375, -122.4 + lane as f64 * 0.000_04));
    assert!(spoofing_of(&registry, &mut standard(), &lanes).iter().all(Vec::is_empty));
}

#[test]
fn moving_vehicles_reporting_one_fix_are_each_flagged_once() {
    let registry = registry();
    // A spoofer holds three driving vans at one fix for a minute (13 readings each). V1
    // reports first at every tick, so at tick 0 only V2 and V3 have someone to agree with; V1
    // meets them at tick 1, its run of the fix overlapping theirs.
    let spoofed = fleet(&["V1", "V2", "V3"], 13, 50.0, |_, _| (37.621_733, -122.381_02));
    let verdicts = spoofing_of(&registry, &mut standard(), &spoofed);
    let found = flagged(&spoofed, &verdicts, "devices");
    assert_eq!(found, [("V2".to_string(), 0), ("V3".to_string(), 0), ("V1".to_string(), 1)], "one each");
    assert_eq!(verdicts.iter().flatten().count(), 3, "no other evidence: {verdicts:?}");
    let v3 = &verdicts[2][0];
    assert_eq!(v3.features[0], (Arc::from("devices"), 3.0));
    assert!(
        v3.reason.starts_with("reported exactly 37.621733,-122.38102 while moving at 50 km/h, as other moving devices did at the same time (V2 at 2024-09-04T10:00:00.000Z, V1 at 2024-09-04T10:00:00.000Z; at least 2 devices within 1 s of each other)"),
        "{}",
        v3.reason
    );
}

#[test]
fn a_fix_one_digit_apart_or_reported_coarsely_is_no_evidence() {
    let registry = registry();
    let apart = fleet(&["V1", "V2"], 12, 50.0, |index, _| (37.621_733, -122.381_02 - index as f64 * 0.000_001));
    assert!(spoofing_of(&registry, &mut standard(), &apart).iter().all(Vec::is_empty));
    // Four decimals (11 m): two vans a few metres apart share the value.
    let coarse = fleet(&["V1", "V2"], 12, 50.0, |_, tick| (37.6217 + tick as f64 * 0.0007, -122.381));
    assert!(spoofing_of(&registry, &mut standard(), &coarse).iter().all(Vec::is_empty));
}

#[test]
fn workers_sharing_the_fleet_see_each_others_fixes() {
    let registry = registry();
    let fix = (37.621_733, -122.381_02);
    let v1 = fleet(&["V1"], 3, 50.0, |_, _| fix);
    let v2 = fleet(&["V2"], 3, 50.0, |_, _| fix);
    let fleet_fixes = Arc::new(SharedFixes::default());
    let models = Arc::new(ModelRegistry::default());
    let mut worker_a = DetectorSet::sharing(models.clone(), fleet_fixes.clone());
    let mut worker_b = DetectorSet::sharing(models, fleet_fixes);
    assert!(spoofing_of(&registry, &mut worker_a, &v1[..1]).iter().all(Vec::is_empty));
    let found = spoofing_of(&registry, &mut worker_b, &v2[..1]);
    assert_eq!(found[0].len(), 1, "V2's worker sees V1's fix: {found:?}");
    // Detector sets of their own (two separate processes) cannot.
    let (mut alone_a, mut alone_b) = (standard(), standard());
    spoofing_of(&registry, &mut alone_a, &v1);
    assert!(spoofing_of(&registry, &mut alone_b, &v2).iter().all(Vec::is_empty));
}

/// One vehicle driving east at 36 km/h (10 m/s), a reading every 5 s at `event(tick)`, arriving
/// at `arrival(tick)`.
fn clock_run(
    ticks: i64,
    event: impl Fn(i64) -> i64,
    arrival: impl Fn(i64) -> Option<i64>,
) -> Vec<VehicleReading<'static>> {
    (0..ticks)
        .map(|tick| VehicleReading {
            vehicle: "V1",
            at_ms: event(tick),
            lat: 37.7,
            lon: -122.4 + tick as f64 * 50.0 / 88_000.0,
            speed: 36.0,
            arrival_ms: arrival(tick),
        })
        .collect()
}

#[test]
fn a_few_seconds_of_out_of_order_delivery_is_no_clock_jump() {
    let registry = registry();
    // Every third reading is delayed behind the next one and arrives 8 s late; one arrives 55 s
    // late, behind ten newer ones.
    let late = |tick: i64| match tick {
        20 => 55_000,
        _ if tick % 3 == 1 => 8_000,
        _ => 500,
    };
    let mut readings = clock_run(40, |tick| T0 + tick * 5_000, |tick| Some(T0 + tick * 5_000 + late(tick)));
    readings.sort_by_key(|r| r.arrival_ms);
    let verdicts = spoofing_of(&registry, &mut standard(), &readings);
    assert!(flagged(&readings, &verdicts, "clock_step_s").is_empty(), "{verdicts:?}");
    assert!(verdicts.iter().all(Vec::is_empty), "{verdicts:?}");
}

#[test]
fn a_clock_set_back_is_one_anomaly_for_the_episode() {
    let registry = registry();
    // From tick 20 to 39 (100 s) the clock reads 10 minutes behind; then it is right again.
    let event = |tick: i64| T0 + tick * 5_000 - if (20..40).contains(&tick) { 600_000 } else { 0 };
    let readings = clock_run(60, event, |_| None);
    let verdicts = spoofing_of(&registry, &mut standard(), &readings);
    let id = crate::model::anomaly_id("vehicle", "V1", readings[20].at_ms, super::NAME, "clock");
    let clock: Vec<&Anomaly> = verdicts.iter().flatten().filter(|a| a.id == id).collect();
    assert_eq!(clock.len(), 1, "{verdicts:?}");
    // Tick 20 is 600 s earlier than tick 0 + 100 s, so 595 s behind tick 19.
    assert_eq!(flagged(&readings, &verdicts, "clock_step_s"), [("V1".to_string(), -100)]);
    assert_eq!(clock[0].features[0], (Arc::from("clock_step_s"), -595.0));
    assert!(
        clock[0].reason.starts_with(
            "event time 2024-09-04T09:51:40.000Z is 595 s behind this device's newest reading (2024-09-04T10:01:35.000Z)"
        ),
        "{}",
        clock[0].reason
    );
}

#[test]
fn a_clock_ahead_of_the_arrival_is_one_anomaly_and_setting_it_right_none() {
    let registry = registry();
    // Arrivals 300 ms after the event; from tick 10 to 29 the clock reads 2 minutes ahead.
    let event = |tick: i64| T0 + tick * 5_000 + if (10..30).contains(&tick) { 120_000 } else { 0 };
    let readings = clock_run(50, event, |tick| Some(T0 + tick * 5_000 + 300));
    let verdicts = spoofing_of(&registry, &mut standard(), &readings);
    let found = flagged(&readings, &verdicts, "ahead_of_arrival_s");
    assert_eq!(found.len(), 1, "{verdicts:?}");
    let anomaly = verdicts[10].iter().find(|a| a.features[0].0.as_ref() == "ahead_of_arrival_s").unwrap();
    assert_eq!(anomaly.features[0].1, 119.7);
    // Without arrival times (a replayed file) the jump ahead is not seen, and setting the clock
    // right is a step back of 115 s at tick 30: the episode is found at its end.
    let replayed = clock_run(50, event, |_| None);
    let verdicts = spoofing_of(&registry, &mut standard(), &replayed);
    assert!(flagged(&replayed, &verdicts, "ahead_of_arrival_s").is_empty());
    assert_eq!(flagged(&replayed, &verdicts, "clock_step_s"), [("V1".to_string(), 30)]);
}

#[test]
fn an_altitude_report_no_airframe_can_fly_is_evidence() {
    let registry = registry();
    let aircraft = registry.by_name("aircraft").unwrap();
    let mut detectors = standard();
    let mut flagged = Vec::new();
    // 450 kn, 10 s apart, along a parallel; 2,000 ft/min is a climb, 6,000 ft in 10 s is not.
    let altitudes = [30_000.0, 30_330.0, 30_660.0, 36_660.0, 36_990.0, 37_320.0];
    for (i, altitude) in altitudes.iter().enumerate() {
        let json = format!(
            r#"{{"timestamp": {}, "flight_id": "F1", "lat": 40.0, "lon": {}, "altitude": {altitude}, "speed": 450, "heading": 90, "status": "cruise"}}"#,
            1_725_446_400_000_i64 + i as i64 * 10_000,
            -100.0 + i as f64 * 450.0 * 1.852 / 360.0 / 85.0
        );
        let reading = validate(aircraft, json.as_bytes()).unwrap();
        let mut findings = Findings::default();
        let enrichment = Enrichment::default();
        let observation =
            Observation { profile: aircraft, reading: &reading, enrichment: &enrichment, arrival_ms: None };
        detectors.observe(observation, &mut findings);
        for anomaly in findings.anomalies.iter().filter(|a| a.detector == super::NAME) {
            flagged.push((i, anomaly.reason.clone()));
        }
    }
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert_eq!(flagged[0].0, 3);
    assert!(flagged[0].1.starts_with("altitude rose by 1,828.8 m in 10 s (182.88 m/s)"), "{}", flagged[0].1);
}
