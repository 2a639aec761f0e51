//! Restricted-zone presence out of hours: inside a zone named `Restricted Area` (by default)
//! outside 09:00–17:00 in the fleet's time zone. One anomaly per visit: raised at the first
//! such reading, closed with its end time when the vehicle leaves or the hours begin.

use super::Tracks;
use crate::detect::settings::GeofenceBreachSettings;
use crate::detect::{Detector, Findings, Observation};
use crate::model::{Anomaly, Episode, Severity, anomaly_id};
use crate::time::format_millis;
use chrono::{DateTime, NaiveTime};
use std::sync::Arc;

pub const NAME: &str = "geofence_breach";

/// The breach a vehicle is in: when it began, in which zone.
#[derive(Debug, Default)]
pub struct Breach {
    open: Option<(i64, Arc<str>)>,
}

#[derive(Debug, Default)]
pub struct GeofenceBreachDetector {
    tracks: Tracks<Breach>,
}

/// Whether `time` lies in [from, until); a window with from > until spans midnight, and one
/// with from == until allows no time at all.
pub fn within_hours(time: NaiveTime, from: NaiveTime, until: NaiveTime) -> bool {
    if from <= until { from <= time && time < until } else { time >= from || time < until }
}

impl Detector for GeofenceBreachDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, enrichment, .. } = observation;
        let Some(settings) = &profile.detectors.geofence_breach else { return };
        let Some((_, breach)) = self.tracks.advance(reading.profile, &reading.entity, reading.event_time_ms, false)
        else {
            return;
        };
        let Some(utc) = DateTime::from_timestamp_millis(reading.event_time_ms) else { return };
        let zone = enrichment.current_zone.as_ref().filter(|z| settings.zones.iter().any(|name| name == &***z));
        // Local time only matters inside a watched zone; most readings are not.
        let local = zone.map(|_| utc.with_timezone(&settings.time_zone));
        let in_breach =
            local.as_ref().is_some_and(|l| !within_hours(l.time(), settings.allowed_from, settings.allowed_until));
        findings.score(NAME, || None, f64::from(u8::from(in_breach)), 0.5, in_breach);
        match (in_breach, breach.open.take()) {
            (true, None) => {
                let zone = zone.expect("in breach means in a zone").clone();
                let local = local.expect("in breach means in a zone");
                findings.anomalies.push(anomaly(
                    profile,
                    reading,
                    settings,
                    &zone,
                    reading.event_time_ms,
                    None,
                    &local,
                ));
                breach.open = Some((reading.event_time_ms, zone));
            }
            (true, Some(open)) => breach.open = Some(open),
            (false, Some((start_ms, zone))) => {
                let end = Some(reading.event_time_ms);
                let local = utc.with_timezone(&settings.time_zone);
                findings.anomalies.push(anomaly(profile, reading, settings, &zone, start_ms, end, &local));
            }
            (false, None) => {}
        }
    }
}

fn anomaly<Z: chrono::TimeZone>(
    profile: &crate::profile::Profile,
    reading: &crate::model::Reading,
    settings: &GeofenceBreachSettings,
    zone: &Arc<str>,
    start_ms: i64,
    end_ms: Option<i64>,
    local_now: &DateTime<Z>,
) -> Anomaly
where
    Z::Offset: std::fmt::Display,
{
    let hours = format!("{}–{}", settings.allowed_from.format("%H:%M"), settings.allowed_until.format("%H:%M"));
    let reason = match end_ms {
        None => format!(
            "in {zone} at {} ({}), outside the allowed {hours}",
            local_now.format("%H:%M"),
            settings.time_zone.name()
        ),
        Some(end) => format!(
            "was in {zone} outside the allowed {hours} ({}) from {} to {} ({} min)",
            settings.time_zone.name(),
            format_millis(start_ms),
            format_millis(end),
            (end - start_ms) / 60_000
        ),
    };
    Anomaly {
        id: anomaly_id(&profile.name, &reading.entity, start_ms, NAME, zone),
        detector: NAME,
        metric: None,
        value: None,
        score: 1.0,
        threshold: 0.5,
        severity: Severity::Critical,
        reason,
        features: vec![
            (Arc::from("latitude"), reading.position.map_or(f64::NAN, |p| p.lat)),
            (Arc::from("longitude"), reading.position.map_or(f64::NAN, |p| p.lon)),
        ],
        episode: Some(Episode { start_ms, end_ms }),
    }
}

#[cfg(test)]
mod tests {
    use super::within_hours;
    use chrono::NaiveTime;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn office_hours_and_windows_across_midnight() {
        assert!(within_hours(t(9, 0), t(9, 0), t(17, 0)));
        assert!(!within_hours(t(17, 0), t(9, 0), t(17, 0)));
        assert!(!within_hours(t(0, 0), t(9, 0), t(17, 0)));
        assert!(within_hours(t(23, 30), t(22, 0), t(6, 0)));
        assert!(within_hours(t(0, 0), t(22, 0), t(6, 0)));
        assert!(!within_hours(t(12, 0), t(22, 0), t(6, 0)));
        assert!(!within_hours(t(12, 0), t(8, 0), t(8, 0)));
    }
}
