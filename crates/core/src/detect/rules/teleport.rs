//! GPS teleport / spoofing: the implied speed between two consecutive readings of the same
//! vehicle is above the limit (400 km/h by default). Never compares two vehicles.

use super::Tracks;
use crate::detect::{Detector, Findings, Observation, for_people};
use crate::geo::haversine_km;
use crate::model::{Anomaly, GeoPoint, Severity, anomaly_id};
use crate::time::format_millis;
use std::sync::Arc;

pub const NAME: &str = "teleport";

#[derive(Debug, Default)]
pub struct TeleportDetector {
    tracks: Tracks<Option<GeoPoint>>,
}

impl TeleportDetector {
    /// Readings refused because their time was not after the vehicle's previous reading.
    pub fn out_of_order(&self) -> u64 {
        self.tracks.out_of_order
    }
}

impl Detector for TeleportDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, .. } = observation;
        let (Some(settings), Some(here)) = (&profile.detectors.teleport, reading.position) else { return };
        // Zero or negative elapsed time is out of order: refused, never divided by.
        let Some((previous_ms, last_position)) =
            self.tracks.advance(reading.profile, &reading.entity, reading.event_time_ms, true)
        else {
            return;
        };
        let before = last_position.replace(here);
        let (Some(previous_ms), Some(there)) = (previous_ms, before) else { return };
        let km = haversine_km(there, here);
        let seconds = (reading.event_time_ms - previous_ms) as f64 / 1000.0;
        let speed_kmh = km / (seconds / 3600.0);
        let is_anomaly = speed_kmh > settings.max_speed_kmh;
        findings.score(NAME, || None, speed_kmh, settings.max_speed_kmh, is_anomaly);
        if !is_anomaly {
            return;
        }
        findings.anomalies.push(Anomaly {
            id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, ""),
            detector: NAME,
            metric: None,
            value: Some(speed_kmh),
            score: speed_kmh,
            threshold: settings.max_speed_kmh,
            severity: Severity::from_excess(speed_kmh, settings.max_speed_kmh),
            reason: format!(
                "implied speed {} km/h over {} km in {} s (from {:.5},{:.5} at {}), above the {} km/h limit",
                for_people(speed_kmh),
                for_people(km),
                for_people(seconds),
                there.lat,
                there.lon,
                format_millis(previous_ms),
                for_people(settings.max_speed_kmh)
            ),
            features: vec![
                (Arc::from("implied_speed_kmh"), speed_kmh),
                (Arc::from("distance_km"), km),
                (Arc::from("elapsed_s"), seconds),
                (Arc::from("previous_latitude"), there.lat),
                (Arc::from("previous_longitude"), there.lon),
            ],
            episode: None,
        });
    }
}
