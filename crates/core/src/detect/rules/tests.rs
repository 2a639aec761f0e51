//! Hand-computed cases for the track rules, including midnight, time zones, stops that end in
//! a safe zone and readings out of order.

use crate::detect::{Detector, Findings, Observation};
use crate::enrich::Enricher;
use crate::geo::GeofenceIndex;
use crate::model::{Anomaly, Reading};
use crate::profile::{ProfileRegistry, RawProfile};
use crate::validate::validate;
use std::collections::BTreeMap;

const ZONES: &str = r#"{"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"name": "Restricted Area"},
     "geometry": {"type": "Polygon", "coordinates": [[[0,0],[0.1,0],[0.1,0.1],[0,0.1],[0,0]]]}},
    {"type": "Feature", "properties": {"name": "Warehouse"},
     "geometry": {"type": "Polygon", "coordinates": [[[1,1],[1.1,1],[1.1,1.1],[1,1.1],[1,1]]]}}
]}"#;

struct Harness {
    registry: ProfileRegistry,
    enricher: Enricher,
}

impl Harness {
    fn new(time_zone: &str) -> Harness {
        let mut builtin: BTreeMap<String, RawProfile> = BTreeMap::new();
        let vehicle: toml::Value = toml::from_str(&format!(
            r#"
            entity_field = "vehicle_id"
            latitude_field = "latitude"
            longitude_field = "longitude"
            enrich = ["geofences"]
            metrics = [{{ field = "speed", min = 0, max = 400 }}]
            detectors.teleport = {{}}
            detectors.spoofing = {{}}
            detectors.geofence_breach = {{ time_zone = "{time_zone}" }}
            detectors.unusual_stop = {{}}
            "#
        ))
        .unwrap();
        builtin.insert("vehicle".into(), vehicle.try_into().unwrap());
        Harness {
            registry: ProfileRegistry::with_builtins(builtin).unwrap(),
            enricher: Enricher::new(&[], GeofenceIndex::from_geojson(ZONES).unwrap()),
        }
    }

    fn reading(&self, vehicle: &str, time: &str, lat: f64, lon: f64, speed: f64) -> Reading {
        let json = format!(
            r#"{{"vehicle_id": "{vehicle}", "timestamp": "{time}", "latitude": {lat}, "longitude": {lon}, "speed": {speed}}}"#
        );
        validate(self.registry.by_name("vehicle").unwrap(), json.as_bytes()).unwrap()
    }

    fn run(&self, detector: &mut dyn Detector, readings: &[Reading]) -> Vec<Vec<Anomaly>> {
        let profile = self.registry.by_name("vehicle").unwrap();
        readings
            .iter()
            .map(|reading| {
                let enrichment = self.enricher.enrich(profile, reading);
                let mut findings = Findings::default();
                detector.observe(
                    Observation { profile, reading, enrichment: &enrichment, arrival_ms: None },
                    &mut findings,
                );
                findings.anomalies
            })
            .collect()
    }
}

mod teleport {
    use super::*;
    use crate::detect::rules::teleport::TeleportDetector;

    #[test]
    fn an_impossible_jump_is_reported_with_its_implied_speed() {
        let h = Harness::new("UTC");
        // 0.1646° of latitude ≈ 18.30 km, in 43 s: about 1,532 km/h.
        let readings = [
            h.reading("V1", "2024-09-04T10:00:00Z", 37.0, -122.0, 50.0),
            h.reading("V1", "2024-09-04T10:00:43Z", 37.1646, -122.0, 50.0),
            h.reading("V1", "2024-09-04T10:01:43Z", 37.1650, -122.0, 50.0),
        ];
        let mut detector = TeleportDetector::default();
        let found = h.run(&mut detector, &readings);
        assert!(found[0].is_empty() && found[2].is_empty());
        let anomaly = &found[1][0];
        assert!((anomaly.score - 1532.0).abs() < 2.0, "{}", anomaly.score);
        assert!(anomaly.reason.starts_with("implied speed 1,53"), "{}", anomaly.reason);
        assert!(anomaly.reason.contains("over 18.3 km in 43 s"), "{}", anomaly.reason);
    }

    #[test]
    fn two_vehicles_far_apart_are_never_compared() {
        let h = Harness::new("UTC");
        let readings: Vec<Reading> = (0..10)
            .flat_map(|i| {
                let time = format!("2024-09-04T10:00:{:02}Z", i * 5);
                [h.reading("V1", &time, 37.0, -122.0, 0.0), h.reading("V2", &time, 48.8, 2.35, 0.0)]
            })
            .collect();
        let found = h.run(&mut TeleportDetector::default(), &readings);
        assert!(found.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_reading_out_of_order_is_refused_not_divided_by() {
        let h = Harness::new("UTC");
        let readings = [
            h.reading("V1", "2024-09-04T10:00:10Z", 37.0, -122.0, 50.0),
            h.reading("V1", "2024-09-04T10:00:10Z", 38.0, -122.0, 50.0),
            h.reading("V1", "2024-09-04T10:00:05Z", 39.0, -122.0, 50.0),
            h.reading("V1", "2024-09-04T10:00:20Z", 37.0001, -122.0, 50.0),
        ];
        let mut detector = TeleportDetector::default();
        let found = h.run(&mut detector, &readings);
        assert!(found.iter().all(Vec::is_empty), "{found:?}");
        assert_eq!(detector.out_of_order(), 2);
    }
}

mod geofence {
    use super::*;
    use crate::detect::rules::geofence::GeofenceBreachDetector;

    #[test]
    fn a_night_visit_is_one_anomaly_opened_and_closed_across_midnight() {
        let h = Harness::new("UTC");
        let readings = [
            h.reading("V1", "2024-09-04T23:50:00Z", 0.05, 0.05, 10.0),
            h.reading("V1", "2024-09-04T23:59:00Z", 0.05, 0.05, 10.0),
            h.reading("V1", "2024-09-05T00:01:00Z", 0.05, 0.05, 10.0),
            h.reading("V1", "2024-09-05T00:20:00Z", 0.5, 0.5, 10.0),
        ];
        let found = h.run(&mut GeofenceBreachDetector::default(), &readings);
        assert_eq!(found[0].len(), 1);
        assert!(found[1].is_empty() && found[2].is_empty());
        let (opened, closed) = (&found[0][0], &found[3][0]);
        assert_eq!(opened.id, closed.id, "the close updates the same anomaly");
        assert_eq!(opened.reason, "in Restricted Area at 23:50 (UTC), outside the allowed 09:00–17:00");
        assert_eq!(closed.episode.unwrap().end_ms.unwrap() - closed.episode.unwrap().start_ms, 30 * 60_000);
    }

    #[test]
    fn office_hours_are_local_to_the_fleet() {
        // 01:00 UTC is 10:00 in Tokyo (allowed) and 18:00 the day before in Los Angeles.
        let tokyo = Harness::new("Asia/Tokyo");
        let found = tokyo.run(
            &mut GeofenceBreachDetector::default(),
            &[tokyo.reading("V1", "2024-09-04T01:00:00Z", 0.05, 0.05, 1.0)],
        );
        assert!(found[0].is_empty());
        let la = Harness::new("America/Los_Angeles");
        let found = la
            .run(&mut GeofenceBreachDetector::default(), &[la.reading("V1", "2024-09-04T01:00:00Z", 0.05, 0.05, 1.0)]);
        assert!(found[0][0].reason.contains("at 18:00 (America/Los_Angeles)"), "{}", found[0][0].reason);
    }

    #[test]
    fn daytime_presence_and_other_zones_are_fine() {
        let h = Harness::new("UTC");
        let readings = [
            h.reading("V1", "2024-09-04T12:00:00Z", 0.05, 0.05, 1.0),
            h.reading("V1", "2024-09-04T22:00:00Z", 1.05, 1.05, 1.0),
        ];
        assert!(h.run(&mut GeofenceBreachDetector::default(), &readings).iter().all(Vec::is_empty));
    }
}

mod stop {
    use super::*;
    use crate::detect::rules::stop::UnusualStopDetector;

    fn every_five_minutes(h: &Harness, from_minute: u32, positions: &[(f64, f64, f64)]) -> Vec<Reading> {
        positions
            .iter()
            .enumerate()
            .map(|(i, &(lat, lon, speed))| {
                let minute = from_minute + i as u32 * 5;
                h.reading("V1", &format!("2024-09-04T{:02}:{:02}:00Z", 10 + minute / 60, minute % 60), lat, lon, speed)
            })
            .collect()
    }

    #[test]
    fn a_long_stop_is_raised_once_then_closed_when_moving() {
        let h = Harness::new("UTC");
        let mut track = vec![(0.5, 0.5, 0.0); 9];
        track.push((0.5, 0.51, 40.0));
        let found = h.run(&mut UnusualStopDetector::default(), &every_five_minutes(&h, 0, &track));
        let raised: Vec<usize> = found.iter().enumerate().filter(|(_, a)| !a.is_empty()).map(|(i, _)| i).collect();
        assert_eq!(raised, vec![7, 9], "raised at 35 min (past 30), closed on moving");
        assert_eq!(found[7][0].id, found[9][0].id);
        assert!(
            found[9][0].reason.starts_with("stopped at 0.50000,0.50000 for 45 min, from"),
            "{}",
            found[9][0].reason
        );
        assert_eq!(found[9][0].episode.unwrap().end_ms.unwrap() - found[9][0].episode.unwrap().start_ms, 45 * 60_000);
    }

    #[test]
    fn a_stop_that_ends_inside_a_safe_zone_before_the_limit_is_not_unusual() {
        let h = Harness::new("UTC");
        let mut track = vec![(1.2, 1.05, 2.0); 5];
        track.extend([(1.05, 1.05, 3.0); 6]);
        let found = h.run(&mut UnusualStopDetector::default(), &every_five_minutes(&h, 0, &track));
        assert!(found.iter().all(Vec::is_empty), "{found:?}");
    }

    #[test]
    fn a_long_stop_that_creeps_into_a_safe_zone_is_closed_there() {
        let h = Harness::new("UTC");
        let mut track = vec![(1.2, 1.05, 1.0); 8];
        track.push((1.05, 1.05, 1.0));
        let found = h.run(&mut UnusualStopDetector::default(), &every_five_minutes(&h, 0, &track));
        assert_eq!(found[7].len(), 1);
        assert_eq!(found[8][0].episode.unwrap().end_ms.unwrap() - found[8][0].episode.unwrap().start_ms, 40 * 60_000);
    }

    #[test]
    fn stops_inside_safe_zones_never_count() {
        let h = Harness::new("UTC");
        let found = h.run(&mut UnusualStopDetector::default(), &every_five_minutes(&h, 0, &[(1.05, 1.05, 0.0); 20]));
        assert!(found.iter().all(Vec::is_empty));
    }
}

/// `count` readings of V1 every 10 s from 10:00:00, each at `track(i)` reporting `speed`.
fn spoofing_run(harness: &Harness, count: usize, speed: f64, track: impl Fn(usize) -> (f64, f64)) -> Vec<usize> {
    let readings: Vec<Reading> = (0..count)
        .map(|i| {
            let (lat, lon) = track(i);
            let time = format!("2024-09-04T10:{:02}:{:02}Z", i * 10 / 60, i * 10 % 60);
            harness.reading("V1", &time, lat, lon, speed)
        })
        .collect();
    let mut detector = crate::detect::rules::spoofing::SpoofingDetector::default();
    let verdicts = harness.run(&mut detector, &readings);
    verdicts.iter().enumerate().filter(|(_, found)| !found.is_empty()).map(|(i, _)| i).collect()
}

#[test]
fn spoofing_is_a_fix_farther_than_the_reported_speed_can_go() {
    let harness = Harness::new("UTC");
    // 0.001° of latitude is 111 m; at 40 km/h, 10 s cover 111 m.
    let honest = |i: usize| (10.0 + i as f64 * 0.001, 20.0);
    assert_eq!(spoofing_run(&harness, 30, 40.0, honest), Vec::<usize>::new(), "driving as reported");
    assert_eq!(spoofing_run(&harness, 30, 0.0, |_| (10.0, 20.0)), Vec::<usize>::new(), "parked");
    // A 1 km jump at reading 10 (no teleport: 360 km/h), while reporting 40 km/h: allowed
    // 111 m * 1.2 + 100 m = 233 m. Found there, once: the way back is the same episode.
    let jump = |i: usize| (10.0 + i as f64 * 0.001 + if i == 10 { 0.009 } else { 0.0 }, 20.0);
    assert_eq!(spoofing_run(&harness, 30, 40.0, jump), vec![10]);
    // Dragged sideways at 60 m/s from reading 10, reporting 40 km/h (11 m/s): each step alone is
    // plausible (61 m/s), but after a few steps the fix is farther than the speed allows.
    let dragged = |i: usize| {
        let drag_m = if i >= 10 { (i - 10) as f64 * 600.0 } else { 0.0 };
        (10.0 + i as f64 * 0.001, 20.0 + drag_m / 111_000.0 / 10f64.to_radians().cos())
    };
    let found = spoofing_run(&harness, 30, 40.0, dragged);
    assert_eq!(found.len(), 1, "one anomaly for the whole episode: {found:?}");
    assert!((11..=13).contains(&found[0]), "{found:?}");
    // A position that stays where the speed says it is, though dragged slowly (within the
    // tolerances), raises nothing: the evidence is physical, not a guess.
    let crept = |i: usize| (10.0 + i as f64 * 0.001, 20.0 + i as f64 * 0.000_1);
    assert_eq!(spoofing_run(&harness, 30, 40.0, crept), Vec::<usize>::new());
}
