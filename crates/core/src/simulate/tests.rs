use super::*;
use crate::geo::haversine_km;
use crate::model::GeoPoint;
use crate::profile::ProfileRegistry;
use crate::validate::validate;

const START_MS: i64 = 1_725_408_000_000; // 2024-09-04T00:00:00Z

fn settings(profiles: &[&str], seed: u64, rate: f64) -> SimSettings {
    SimSettings { anomaly_rate: rate, ..SimSettings::new(profiles, seed, START_MS) }
}

fn run(settings: &SimSettings, hours: f64) -> (Vec<SimMessage>, Vec<Label>, Vec<(&'static str, String)>) {
    let mut sim = Simulator::new(settings).unwrap();
    let mut out = Vec::new();
    sim.emit_until(START_MS + (hours * 3_600_000.0) as i64 - 1, &mut out);
    sim.finish();
    let labels = sim.take_labels();
    (out, labels, sim.entities().to_vec())
}

#[test]
fn every_simulated_message_passes_its_profile() {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    let (out, labels, entities) = run(&settings(&SIMULATED_PROFILES, 7, 2.0), 2.0);
    assert_eq!(entities.iter().filter(|(p, _)| *p == "vehicle").count(), 15);
    assert_eq!(entities.iter().filter(|(p, _)| *p == "environment").count(), 10);
    assert!(out.len() > 100_000, "{}", out.len());
    let mut clock_off = 0;
    for message in &out {
        let profile = registry.by_name(message.profile).unwrap();
        let reading = validate(profile, &message.payload)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&message.payload)));
        if reading.event_time_ms != message.event_time_ms {
            // Only a jumped clock shows another time than the simulated one, within its label.
            clock_off += 1;
            let jumped = labels.iter().any(|l| {
                l.kind == "clock_jump"
                    && *l.entity == *reading.entity
                    && (l.start_ms..=l.end_ms).contains(&reading.event_time_ms)
            });
            assert!(jumped, "{}", String::from_utf8_lossy(&message.payload));
        }
    }
    assert!(clock_off > 0, "a clock jump in two hours of 15 vehicles at rate 2");
    assert!(out.windows(2).all(|w| w[0].event_time_ms <= w[1].event_time_ms), "event-time order");
}

#[test]
fn same_seed_gives_same_bytes() {
    let bytes = |seed| run(&settings(&SIMULATED_PROFILES, seed, 4.0), 0.5).0;
    assert_eq!(bytes(1), bytes(1));
    assert_ne!(bytes(1), bytes(2));
}

#[test]
fn an_entity_drives_the_same_day_whatever_else_is_simulated() {
    let alone = run(&settings(&["vehicle"], 3, 1.0), 1.0).0;
    let together = run(&settings(&["drone", "vehicle"], 3, 1.0), 1.0).0;
    let vehicles: Vec<&SimMessage> = together.iter().filter(|m| m.profile == "vehicle").collect();
    assert_eq!(alone.iter().collect::<Vec<_>>(), vehicles);
}

#[test]
fn unknown_profile_is_named() {
    assert!(Simulator::new(&settings(&["submarine"], 1, 0.0)).unwrap_err().contains("\"submarine\""));
}

#[test]
fn labels_lie_in_the_simulated_range_and_name_simulated_entities() {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    let (out, labels, entities) = run(&settings(&SIMULATED_PROFILES, 11, 3.0), 6.0);
    let last_ms = out.last().unwrap().event_time_ms;
    assert!(labels.len() > 100, "{}", labels.len());
    for label in &labels {
        assert!(
            START_MS + WARM_UP_MS <= label.start_ms && label.start_ms <= label.end_ms && label.end_ms <= last_ms,
            "{label:?}"
        );
        assert!(entities.iter().any(|(p, e)| label.profile == *p && *e == label.entity), "{label:?}");
        // A jumped clock's label is in the times the device showed.
        let shown = |m: &SimMessage| match label.kind.as_str() {
            "clock_jump" => validate(registry.by_name(m.profile).unwrap(), &m.payload).unwrap().event_time_ms,
            _ => m.event_time_ms,
        };
        let affected = out.iter().any(|m| {
            label.profile == m.profile
                && std::str::from_utf8(&m.payload).unwrap().contains(&format!("\"{}\"", label.entity))
                && shown(m) == label.start_ms
        });
        assert!(affected, "no reading of {label:?} at its start");
    }
    for kind in [
        "teleport",
        "gps_spoof",
        "long_stop",
        "spike",
        "level_shift",
        "drift",
        "stuck",
        "battery_collapse",
        "altitude_drop",
        "vibration_burst",
        "fleet_spoof",
        "clock_jump",
    ] {
        assert!(labels.iter().any(|l| l.kind == kind), "no {kind} in {} labels", labels.len());
    }
}

#[test]
fn restricted_zone_visits_happen_out_of_hours() {
    let (_, labels, _) = run(&settings(&["vehicle"], 5, 3.0), 24.0);
    let visits: Vec<&Label> = labels.iter().filter(|l| l.kind == "restricted_zone").collect();
    assert!(!visits.is_empty());
    for visit in visits {
        for at in [visit.start_ms, visit.end_ms] {
            let hour = at.rem_euclid(86_400_000) / 3_600_000;
            assert!(!(9..17).contains(&hour), "{visit:?}");
        }
    }
}

/// Clean vehicle data breaks no rule: no jump over 400 km/h, no restricted zone, no stop of
/// 30 minutes outside a safe zone, speeds a road allows.
#[test]
fn clean_vehicles_break_no_rule() {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    let zones = GeofenceIndex::from_geojson(crate::geo::BUNDLED_GEOFENCES).unwrap();
    let (out, labels, _) = run(&settings(&["vehicle"], 9, 0.0), 24.0);
    assert!(labels.is_empty());
    let profile = registry.by_name("vehicle").unwrap();
    let mut last: std::collections::HashMap<String, (i64, GeoPoint)> = Default::default();
    let mut slow_since: std::collections::HashMap<String, i64> = Default::default();
    let mut moving = 0;
    for message in &out {
        let reading = validate(profile, &message.payload).unwrap();
        let point = reading.position.unwrap();
        let speed = reading.metrics[0].1;
        assert!(speed <= 90.0, "{speed}");
        moving += usize::from(speed > 20.0);
        let zone = zones.zone_at(point).map(|z| z.name.to_string());
        assert_ne!(zone.as_deref(), Some("Restricted Area"), "{}", String::from_utf8_lossy(&message.payload));
        let entity = reading.entity.to_string();
        if let Some((at, before)) = last.insert(entity.clone(), (reading.event_time_ms, point)) {
            let hours = (reading.event_time_ms - at) as f64 / 3_600_000.0;
            assert!(haversine_km(before, point) / hours < 150.0);
        }
        let safe = matches!(zone.as_deref(), Some("Warehouse" | "Rest Area" | "Service Center"));
        if speed < 5.0 && !safe {
            let since = *slow_since.entry(entity).or_insert(reading.event_time_ms);
            assert!(reading.event_time_ms - since <= 30 * 60_000, "{}", String::from_utf8_lossy(&message.payload));
        } else {
            slow_since.remove(&entity);
        }
    }
    assert!(moving > out.len() / 3, "vehicles mostly drive: {moving} of {}", out.len());
}

/// Every attack of the fleet's spoofer holds two to four driving vehicles at one fix, to the
/// last digit, from its first reading to the one before the last.
#[test]
fn a_fleet_spoof_holds_several_driving_vehicles_at_one_fix() {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    let profile = registry.by_name("vehicle").unwrap();
    let (out, labels, _) = run(&settings(&["vehicle"], 5, 2.0), 24.0);
    let mut attacks: std::collections::BTreeMap<i64, Vec<&Label>> = Default::default();
    for label in labels.iter().filter(|l| l.kind == "fleet_spoof") {
        attacks.entry(label.start_ms).or_default().push(label);
    }
    assert!(attacks.len() >= 5, "{} attacks in a day at rate 2", attacks.len());
    for (start_ms, victims) in &attacks {
        assert!((2..=4).contains(&victims.len()), "{victims:?}");
        let mut fixes = std::collections::BTreeSet::new();
        for victim in victims {
            let held: Vec<_> = out
                .iter()
                .filter(|m| (victim.start_ms..victim.end_ms).contains(&m.event_time_ms))
                .map(|m| validate(profile, &m.payload).unwrap())
                .filter(|r| *r.entity == *victim.entity)
                .collect();
            assert!(held.len() >= 12, "a minute or more of readings: {victim:?}");
            assert!(held[0].metrics[0].1 > 10.0, "driving when taken: {victim:?}");
            for reading in &held {
                let fix = reading.position.unwrap();
                fixes.insert((fix.lat.to_bits(), fix.lon.to_bits()));
            }
        }
        assert_eq!(fixes.len(), 1, "one fix for every victim of the attack at {start_ms}");
    }
}
