//! GPS spoofing as evidence: a device's fixes moved farther than its own reported speed can
//! have taken it. A path is never shorter than the straight line between its ends, so the
//! distance between two fixes of one device is at most the distance its speed covered
//! between them (the reported speeds integrated over time), plus the error of two fixes and
//! some under-reporting. A fix beyond that did not come from where the device was: a spoofed
//! or replayed position (or a broken GPS), raised with the evidence instead of dropped.
//!
//! Each fix is compared with every fix of the last `window_secs` of the same device, so a
//! position dragged away slowly (which no single step shows) is found once it has gone farther
//! than the device could. One anomaly per episode: after one, the device is quiet until a
//! whole window passes without evidence. Catches what the `teleport` rule's fixed speed limit
//! cannot: a vehicle reporting 40 km/h whose fixes imply 200 km/h.

use crate::detect::{Detector, EntityMap, Findings, Observation, for_people};
use crate::geo::haversine_km;
use crate::model::{Anomaly, GeoPoint, Severity, anomaly_id};
use crate::time::format_millis;
use std::collections::VecDeque;
use std::sync::Arc;

pub const NAME: &str = "spoofing";

/// Fixes kept per device, at most (the window may hold more at high rates: the oldest go).
const MAX_FIXES: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Fix {
    at_ms: i64,
    position: GeoPoint,
    /// The distance the reported speeds covered from the device's first fix to this one, km.
    travelled_km: f64,
    speed_kmh: f64,
    /// The reported altitude in metres, when the profile's is watched.
    altitude_m: Option<f64>,
}

#[derive(Debug, Default)]
struct Track {
    fixes: VecDeque<Fix>,
    /// The last reading with evidence, while an episode is open.
    episode_evidence_ms: Option<i64>,
}

#[derive(Debug, Default)]
pub struct SpoofingDetector {
    tracks: EntityMap<Track>,
}

impl Detector for SpoofingDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, .. } = observation;
        let (Some(settings), Some(here)) = (&profile.detectors.spoofing, reading.position) else { return };
        let Some(reported) = reading.metrics.iter().find(|(id, _)| *id == settings.speed_metric).map(|(_, v)| *v)
        else {
            return;
        };
        let speed_kmh = reported.max(0.0) * settings.to_kmh;
        let altitude_m = settings
            .altitude
            .and_then(|(metric, to_m)| reading.metrics.iter().find(|(id, _)| *id == metric).map(|(_, v)| v * to_m));
        let track = self.tracks.get_or_insert_with(reading.profile, &reading.entity, Track::default);
        let now_ms = reading.event_time_ms;
        let travelled_km = match track.fixes.back() {
            // Out of order or repeated: the track does not go back in time.
            Some(last) if now_ms <= last.at_ms => return,
            Some(last) => last.travelled_km + (last.speed_kmh + speed_kmh) / 2.0 * (now_ms - last.at_ms) as f64 / 3.6e6,
            None => 0.0,
        };
        while track.fixes.front().is_some_and(|f| now_ms - f.at_ms > settings.window_ms)
            || track.fixes.len() >= MAX_FIXES
        {
            track.fixes.pop_front();
        }
        // The fix that is farthest beyond what the speed allows.
        let mut worst: Option<(f64, f64, f64, Fix)> = None;
        for fix in &track.fixes {
            let apart_km = haversine_km(fix.position, here);
            let allowed_km =
                (travelled_km - fix.travelled_km) * (1.0 + settings.speed_tolerance) + settings.position_tolerance_km;
            let ratio = apart_km / allowed_km;
            if worst.is_none_or(|(r, ..)| ratio > r) {
                worst = Some((ratio, apart_km, allowed_km, *fix));
            }
        }
        // The climb or descent since the previous fix, against the fastest believed.
        let vertical = match (track.fixes.back(), altitude_m) {
            (Some(last), Some(altitude)) => last.altitude_m.map(|before| {
                let seconds = (now_ms - last.at_ms) as f64 / 1000.0;
                (altitude - before, seconds, (altitude - before).abs() / seconds / settings.max_vertical_mps)
            }),
            _ => None,
        };
        track.fixes.push_back(Fix { at_ms: now_ms, position: here, travelled_km, speed_kmh, altitude_m });
        let Some((ratio, apart_km, allowed_km, from)) = worst else { return };
        let vertical_ratio = vertical.map_or(0.0, |(_, _, r)| r);
        let evidence = ratio > 1.0 || vertical_ratio > 1.0;
        findings.score(NAME, || None, ratio.max(vertical_ratio), 1.0, evidence);
        if !evidence {
            if track.episode_evidence_ms.is_some_and(|last| now_ms - last > settings.window_ms) {
                track.episode_evidence_ms = None;
            }
            return;
        }
        let opens = track.episode_evidence_ms.is_none();
        track.episode_evidence_ms = Some(now_ms);
        if !opens {
            return;
        }
        if vertical_ratio > ratio
            && let Some((change_m, seconds, _)) = vertical
        {
            findings.anomalies.push(impossible_climb(profile, reading, settings, change_m, seconds, vertical_ratio));
            return;
        }
        let seconds = (now_ms - from.at_ms) as f64 / 1000.0;
        findings.anomalies.push(Anomaly {
            id: anomaly_id(&profile.name, &reading.entity, now_ms, NAME, ""),
            detector: NAME,
            metric: Some(profile.metric_name(settings.speed_metric).clone()),
            value: Some(reported),
            score: ratio,
            threshold: 1.0,
            severity: Severity::from_excess(ratio, 1.0),
            reason: format!(
                "fixes {} km apart in {} s (from {:.5},{:.5} at {}), but the device's own speed ({} km/h now) \
                 covers at most {} km: a spoofed or replayed position, or a faulty GPS",
                for_people(apart_km),
                for_people(seconds),
                from.position.lat,
                from.position.lon,
                format_millis(from.at_ms),
                for_people(speed_kmh),
                for_people(allowed_km)
            ),
            features: vec![
                (Arc::from("distance_km"), apart_km),
                (Arc::from("allowed_km"), allowed_km),
                (Arc::from("elapsed_s"), seconds),
                (Arc::from("implied_speed_kmh"), apart_km / (seconds / 3600.0)),
                (Arc::from("reported_speed_kmh"), speed_kmh),
            ],
            episode: None,
        });
    }
}

/// The anomaly of an altitude change faster than any airframe climbs or descends.
fn impossible_climb(
    profile: &crate::profile::Profile,
    reading: &crate::model::Reading,
    settings: &crate::detect::settings::SpoofingSettings,
    change_m: f64,
    seconds: f64,
    ratio: f64,
) -> Anomaly {
    let rate = change_m / seconds;
    let metric = settings.altitude.map(|(metric, _)| profile.metric_name(metric).clone());
    Anomaly {
        id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, "altitude"),
        detector: NAME,
        value: settings.altitude.and_then(|(id, _)| reading.metrics.iter().find(|(m, _)| *m == id).map(|(_, v)| *v)),
        metric,
        score: ratio,
        threshold: 1.0,
        severity: Severity::from_excess(ratio, 1.0),
        reason: format!(
            "altitude {} by {} m in {} s ({} m/s), faster than the {} m/s any airframe flies: a spoofed or faulty \
             altitude report",
            if change_m > 0.0 { "rose" } else { "fell" },
            for_people(change_m.abs()),
            for_people(seconds),
            for_people(rate.abs()),
            for_people(settings.max_vertical_mps)
        ),
        features: vec![
            (Arc::from("altitude_change_m"), change_m),
            (Arc::from("elapsed_s"), seconds),
            (Arc::from("vertical_rate_mps"), rate),
        ],
        episode: None,
    }
}

#[cfg(test)]
mod tests {
    use crate::detect::{DetectorSet, Findings, Observation};
    use crate::model::Enrichment;
    use crate::profile::ProfileRegistry;
    use crate::validate::validate;
    use std::sync::Arc;

    #[test]
    fn an_altitude_report_no_airframe_can_fly_is_evidence() {
        let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
        let aircraft = registry.by_name("aircraft").unwrap();
        let mut detectors = DetectorSet::standard(Arc::new(Default::default()));
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
            detectors
                .observe(Observation { profile: aircraft, reading: &reading, enrichment: &enrichment }, &mut findings);
            for anomaly in findings.anomalies.iter().filter(|a| a.detector == super::NAME) {
                flagged.push((i, anomaly.reason.clone()));
            }
        }
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert_eq!(flagged[0].0, 3);
        assert!(flagged[0].1.starts_with("altitude rose by 1,828.8 m in 10 s (182.88 m/s)"), "{}", flagged[0].1);
    }
}
