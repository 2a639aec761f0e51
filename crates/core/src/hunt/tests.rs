//! The hunts on tracks where reference 000's queries go wrong.

use super::*;
use crate::profile::ProfileRegistry;
use std::collections::BTreeMap;

const MINUTE: i64 = 60_000;
/// 2026-03-02 00:00:00 UTC.
const DAY0: i64 = 1_772_409_600_000;

fn vehicle() -> Arc<Profile> {
    ProfileRegistry::with_builtins(BTreeMap::new()).expect("built-in profiles").by_name("vehicle").unwrap().clone()
}

fn point(vehicle: &str, at_ms: i64, lat: f64, lon: f64, speed: f64, zone: Option<&str>) -> TrackPoint {
    TrackPoint {
        vehicle_id: Arc::from(vehicle),
        timestamp_ms: at_ms,
        position: Some(GeoPoint { lat, lon }),
        speed: Some(speed),
        current_zone: zone.map(Arc::from),
        driver_name: Some(Arc::from("Ann")),
    }
}

fn hunt(hunt: Hunt, points: Vec<TrackPoint>) -> Vec<HuntFinding> {
    hunt_from(hunt, points, None)
}

/// The hunt over `points`, reporting from `from_ms` as a store does after reading a lead-in.
fn hunt_from(hunt: Hunt, mut points: Vec<TrackPoint>, from_ms: Option<i64>) -> Vec<HuntFinding> {
    points.sort_by(|a, b| (&a.vehicle_id, a.timestamp_ms).cmp(&(&b.vehicle_id, b.timestamp_ms)));
    let mut hunter = Hunter::new(hunt, vehicle()).expect("the vehicle profile runs the rule");
    if let Some(from_ms) = from_ms {
        hunter = hunter.report_from(from_ms);
    }
    for point in points {
        hunter.push(point);
    }
    hunter.finish()
}

#[test]
fn teleport_compares_only_consecutive_readings_of_one_vehicle() {
    // Two vehicles 500 km apart, each driving slowly: interleaved, a neighbour-of-any-row
    // comparison sees 500 km in 5 s.
    let mut points = Vec::new();
    for i in 0..10 {
        points.push(point("a", DAY0 + i * 5_000, 52.0 + i as f64 * 1e-4, 13.0, 40.0, None));
        points.push(point("b", DAY0 + i * 5_000 + 1, 48.0 + i as f64 * 1e-4, 11.0, 40.0, None));
    }
    assert_eq!(hunt(Hunt::Teleport, points.clone()), vec![]);
    // One real jump: b's 6th reading 100 km away, then back.
    points[11].position = Some(GeoPoint { lat: 48.9, lon: 11.0 });
    let found = hunt(Hunt::Teleport, points);
    assert_eq!(found.len(), 2, "there and back: {found:#?}");
    assert!(found.iter().all(|f| f.vehicle_id == "b" && f.value > 400.0), "{found:#?}");
    assert_eq!((found[0].start_ms, found[0].end_ms), (DAY0 + 4 * 5_000 + 1, Some(DAY0 + 5 * 5_000 + 1)));
}

#[test]
fn unusual_stops_are_each_contiguous_stop_not_first_to_last_slow_reading() {
    let mut points = Vec::new();
    // Short stops (10 min) every hour for 5 hours: the reference reports one 4-hour stop.
    for hour in 0..5 {
        for minute in 0..60 {
            let speed = if minute < 10 { 0.0 } else { 50.0 };
            points.push(point("a", DAY0 + (hour * 60 + minute) * MINUTE, 52.0, 13.0, speed, None));
        }
    }
    assert_eq!(hunt(Hunt::UnusualStops, points.clone()), vec![]);
    // One 40-minute stop in hour 2 (minutes 120..160).
    for p in points.iter_mut().filter(|p| (120..160).contains(&((p.timestamp_ms - DAY0) / MINUTE))) {
        p.speed = Some(0.0);
    }
    let found = hunt(Hunt::UnusualStops, points);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].start_ms, found[0].end_ms), (DAY0 + 120 * MINUTE, Some(DAY0 + 160 * MINUTE)));
    assert_eq!(found[0].value, 40.0);
}

#[test]
fn geofence_breach_uses_the_rules_window_so_half_past_five_is_out_of_hours() {
    let zone = Some("Restricted Area");
    let points = vec![
        point("a", DAY0 + (16 * 60 + 50) * MINUTE, 52.0, 13.0, 10.0, zone),
        point("a", DAY0 + (17 * 60 + 30) * MINUTE, 52.0, 13.0, 10.0, zone),
        point("a", DAY0 + (17 * 60 + 45) * MINUTE, 52.0, 13.0, 10.0, zone),
        point("a", DAY0 + (17 * 60 + 50) * MINUTE, 52.0, 13.0, 10.0, None),
    ];
    let found = hunt(Hunt::GeofenceBreach, points);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].zone.as_deref(), Some("Restricted Area"));
    assert_eq!(
        (found[0].start_ms, found[0].end_ms),
        (DAY0 + (17 * 60 + 30) * MINUTE, Some(DAY0 + (17 * 60 + 50) * MINUTE))
    );
    assert_eq!(found[0].value, 20.0);
}

#[test]
fn a_range_start_keeps_episodes_under_way_whole_and_drops_those_over_before_it() {
    // Vehicle a: stopped 08:00-09:00, moving to 10:00, stopped 10:00-11:00; vehicle b drives
    // and jumps 100 km between 10:00 and 10:01. The range starts at 10:30.
    let mut points = Vec::new();
    for minute in 8 * 60..12 * 60 {
        let stopped = (8 * 60..9 * 60).contains(&minute) || (10 * 60..11 * 60).contains(&minute);
        points.push(point("a", DAY0 + minute * MINUTE, 52.0, 13.0, if stopped { 0.0 } else { 50.0 }, None));
    }
    for minute in 9 * 60..11 * 60 {
        let lat = if minute > 10 * 60 { 49.0 } else { 48.0 } + minute as f64 * 1e-5;
        points.push(point("b", DAY0 + minute * MINUTE, lat, 11.0, 60.0, None));
    }
    let from = Some(DAY0 + (10 * 60 + 30) * MINUTE);
    let stops = hunt_from(Hunt::UnusualStops, points.clone(), from);
    assert_eq!(stops.len(), 1, "only the stop under way at 10:30: {stops:#?}");
    assert_eq!((stops[0].start_ms, stops[0].end_ms), (DAY0 + 10 * 60 * MINUTE, Some(DAY0 + 11 * 60 * MINUTE)));
    assert_eq!(hunt(Hunt::UnusualStops, points.clone()).len(), 2, "without a range start both stops");
    let teleports = hunt_from(Hunt::Teleport, points.clone(), Some(DAY0 + (10 * 60 + 1) * MINUTE));
    assert_eq!(teleports.len(), 1, "the jump ends at the range start: {teleports:#?}");
    assert_eq!(teleports[0].vehicle_id, "b");
    assert_eq!(hunt_from(Hunt::Teleport, points, from), vec![], "the jump was over before 10:30");
}

#[test]
fn an_unknown_hunt_names_the_ones_there_are() {
    assert_eq!(Hunt::parse("teleport"), Ok(Hunt::Teleport));
    let error = Hunt::parse("speeding").unwrap_err();
    assert!(error.contains("geofence-breach, teleport, unusual-stops"), "{error}");
}
