//! Unusual stops: speed below 5 km/h continuously for more than 30 minutes while not inside a
//! `Warehouse`, `Rest Area` or `Service Center` zone (by default). Raised once when the stop
//! passes the limit, then closed with its end time and duration when the vehicle moves again
//! or reaches a safe zone.

use super::Tracks;
use crate::detect::{Detector, Findings, Observation};
use crate::model::{Anomaly, Episode, GeoPoint, Severity, anomaly_id};
use crate::time::format_millis;
use std::sync::Arc;

pub const NAME: &str = "unusual_stop";

/// The stop a vehicle is in: when and where it began, and whether it was raised.
#[derive(Debug, Default)]
pub struct Stop {
    current: Option<(i64, Option<GeoPoint>, bool)>,
}

#[derive(Debug, Default)]
pub struct UnusualStopDetector {
    tracks: Tracks<Stop>,
}

impl Detector for UnusualStopDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, enrichment, .. } = observation;
        let Some(settings) = &profile.detectors.unusual_stop else { return };
        let Some(speed) = reading.metric(settings.speed_metric) else { return };
        let Some((_, stop)) = self.tracks.advance(reading.profile, &reading.entity, reading.event_time_ms, false)
        else {
            return;
        };
        let safe = enrichment.current_zone.as_ref().is_some_and(|z| settings.safe_zones.iter().any(|s| s == &**z));
        let stopped_outside = speed < settings.speed_below_kmh && !safe;
        let now = reading.event_time_ms;
        let limit_min = settings.min_duration_ms as f64 / 60_000.0;
        let make = |start_ms: i64, at: Option<GeoPoint>, end_ms: Option<i64>| {
            let minutes = (end_ms.unwrap_or(now) - start_ms) as f64 / 60_000.0;
            let place = at.map_or_else(String::new, |p| format!(" at {:.5},{:.5}", p.lat, p.lon));
            let reason = match end_ms {
                None => format!(
                    "stopped{place} for {minutes:.0} min since {} outside {}",
                    format_millis(start_ms),
                    settings.safe_zones.join(", ")
                ),
                Some(end) => format!(
                    "stopped{place} for {minutes:.0} min, from {} to {}, outside {}",
                    format_millis(start_ms),
                    format_millis(end),
                    settings.safe_zones.join(", ")
                ),
            };
            Anomaly {
                id: anomaly_id(&profile.name, &reading.entity, start_ms, NAME, ""),
                detector: NAME,
                metric: None,
                value: Some(minutes),
                score: minutes,
                threshold: limit_min,
                severity: Severity::from_excess(minutes, limit_min),
                reason,
                features: vec![
                    (Arc::from("duration_min"), minutes),
                    (Arc::from("latitude"), at.map_or(f64::NAN, |p| p.lat)),
                    (Arc::from("longitude"), at.map_or(f64::NAN, |p| p.lon)),
                ],
                episode: Some(Episode { start_ms, end_ms }),
            }
        };
        match (stopped_outside, stop.current.take()) {
            (true, None) => {
                stop.current = Some((now, reading.position, false));
                findings.score(NAME, || None, 0.0, limit_min, false);
            }
            (true, Some((start_ms, at, raised))) => {
                let passed = now - start_ms > settings.min_duration_ms;
                findings.score(NAME, || None, (now - start_ms) as f64 / 60_000.0, limit_min, passed);
                if passed && !raised {
                    findings.anomalies.push(make(start_ms, at, None));
                }
                stop.current = Some((start_ms, at, raised || passed));
            }
            (false, Some((start_ms, at, true))) => {
                findings.score(NAME, || None, 0.0, limit_min, false);
                findings.anomalies.push(make(start_ms, at, Some(now)));
            }
            (false, _) => findings.score(NAME, || None, 0.0, limit_min, false),
        }
    }
}
