//! Threat hunts over stored vehicle tracks (reference 000's three queries, done right): the
//! streaming rules themselves run over each vehicle's readings in event-time order, so a hunt
//! finds exactly the episodes the live pipeline raised, with the profile's own thresholds.
//!
//! - `teleport`: consecutive readings of the same vehicle, in event-time order;
//! - `unusual-stops`: each contiguous stop period, not one "stop" from first to last slow reading;
//! - `geofence-breach`: local time in the rule's configured zone, the rule's own hours window
//!   (`[from, until)`, so 17:30 is out of 09:00–17:00 hours).
//!
//! A store feeds [`Hunter::push`] with [`TrackPoint`]s sorted by (vehicle, event time); how the
//! rows are fetched is the store's business.

use crate::detect::rules::geofence::{self, GeofenceBreachDetector};
use crate::detect::rules::stop::{self, UnusualStopDetector};
use crate::detect::rules::teleport::{self, TeleportDetector};
use crate::detect::{Detector, Findings, Observation};
use crate::model::{Anomaly, Enrichment, GeoPoint, Reading};
use crate::profile::Profile;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The hunts there are, by the name the CLI and the API use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hunt {
    GeofenceBreach,
    Teleport,
    UnusualStops,
}

impl Hunt {
    pub const ALL: [Hunt; 3] = [Hunt::GeofenceBreach, Hunt::Teleport, Hunt::UnusualStops];

    pub fn name(self) -> &'static str {
        match self {
            Hunt::GeofenceBreach => "geofence-breach",
            Hunt::Teleport => "teleport",
            Hunt::UnusualStops => "unusual-stops",
        }
    }

    /// The hunt called `name`, or an error listing the names there are.
    pub fn parse(name: &str) -> Result<Hunt, String> {
        Hunt::ALL.into_iter().find(|hunt| hunt.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Hunt::ALL.iter().map(|h| h.name()).collect();
            format!("unknown hunt {name:?}: the hunts are {}", names.join(", "))
        })
    }

    /// The streaming rule this hunt runs (its `detector` name in gold).
    pub fn detector(self) -> &'static str {
        match self {
            Hunt::GeofenceBreach => geofence::NAME,
            Hunt::Teleport => teleport::NAME,
            Hunt::UnusualStops => stop::NAME,
        }
    }
}

/// One stored reading of a vehicle, as the hunts need it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackPoint {
    pub vehicle_id: Arc<str>,
    pub timestamp_ms: i64,
    pub position: Option<GeoPoint>,
    /// In the unit of the profile's speed metric (km/h for the vehicle profile).
    pub speed: Option<f64>,
    pub current_zone: Option<Arc<str>>,
    pub driver_name: Option<Arc<str>>,
}

/// One episode a hunt found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HuntFinding {
    pub vehicle_id: String,
    pub driver_name: Option<String>,
    /// Teleport: the earlier of the two readings; a stop or a breach: its first reading.
    pub start_ms: i64,
    /// Teleport: the later reading; a stop or a breach: the reading that ended it, or `None`
    /// while it lasted to the vehicle's last reading in the range.
    pub end_ms: Option<i64>,
    /// Breach: the zone; a stop: where it was (`lat,lon`).
    pub zone: Option<String>,
    /// Teleport: implied speed in km/h; a stop: minutes stopped (to its end, or to the
    /// vehicle's last reading); a breach: minutes in the zone out of hours (likewise).
    pub value: f64,
    /// The rule's explanation.
    pub reason: String,
}

/// The detector a hunt runs.
enum Rule {
    GeofenceBreach(GeofenceBreachDetector),
    Teleport(TeleportDetector),
    UnusualStops(UnusualStopDetector),
}

impl Rule {
    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        match self {
            Rule::GeofenceBreach(d) => d.observe(observation, findings),
            Rule::Teleport(d) => d.observe(observation, findings),
            Rule::UnusualStops(d) => d.observe(observation, findings),
        }
    }
}

/// Runs one hunt over tracks pushed in (vehicle, event time) order.
pub struct Hunter {
    hunt: Hunt,
    profile: Arc<Profile>,
    rule: Rule,
    findings: Findings,
    /// Episodes by anomaly id, in the order they began; a close replaces its opening.
    episodes: Vec<HuntFinding>,
    by_id: HashMap<String, usize>,
    /// Per episode, the last event time it is known to have lasted through: its end, or the
    /// vehicle's last reading while it was still open.
    through_ms: Vec<i64>,
    /// Open episodes of the current vehicle (their index), extended to its last reading.
    open: Vec<usize>,
    /// Episodes over before this event time are lead-in, not reported (see [`Hunter::report_from`]).
    report_from_ms: i64,
    current_vehicle: Option<Arc<str>>,
    last_ms: i64,
    driver: Option<Arc<str>>,
    points: u64,
}

impl Hunter {
    /// A hunter for `hunt` with `profile`'s rule settings; an error if the profile does not
    /// run that rule (nothing to hunt with).
    pub fn new(hunt: Hunt, profile: Arc<Profile>) -> Result<Hunter, String> {
        let detectors = &profile.detectors;
        let configured = match hunt {
            Hunt::GeofenceBreach => detectors.geofence_breach.is_some(),
            Hunt::Teleport => detectors.teleport.is_some(),
            Hunt::UnusualStops => detectors.unusual_stop.is_some(),
        };
        if !configured {
            return Err(format!(
                "profile `{}` does not configure detectors.{}, which the {} hunt takes its thresholds from",
                profile.name,
                hunt.detector(),
                hunt.name()
            ));
        }
        let rule = match hunt {
            Hunt::GeofenceBreach => Rule::GeofenceBreach(GeofenceBreachDetector::default()),
            Hunt::Teleport => Rule::Teleport(TeleportDetector::default()),
            Hunt::UnusualStops => Rule::UnusualStops(UnusualStopDetector::default()),
        };
        Ok(Hunter {
            hunt,
            profile,
            rule,
            findings: Findings::default(),
            episodes: Vec::new(),
            by_id: HashMap::new(),
            through_ms: Vec::new(),
            open: Vec::new(),
            report_from_ms: i64::MIN,
            current_vehicle: None,
            last_ms: 0,
            driver: None,
            points: 0,
        })
    }

    /// The speed metric's name in the profile (the stop rule's), for stores that keep metrics
    /// as JSON; `speed` if the profile has no stop rule.
    pub fn speed_metric(profile: &Profile) -> &str {
        profile
            .detectors
            .unusual_stop
            .as_ref()
            .and_then(|s| profile.metrics.get(usize::from(s.speed_metric)))
            .map_or("speed", |m| &m.name)
    }

    /// Reports only episodes that last to `from_ms` or later. A store reads readings from a
    /// lead-in before `from_ms` (see `LEAD_IN_MS` of the stores), so an episode that began
    /// before the range keeps its true start and a teleport across the boundary has the
    /// reading before it; episodes wholly inside the lead-in are dropped.
    pub fn report_from(mut self, from_ms: i64) -> Hunter {
        self.report_from_ms = from_ms;
        self
    }

    /// Takes the next reading; readings come sorted by vehicle, then event time.
    pub fn push(&mut self, point: TrackPoint) {
        self.points += 1;
        if self.current_vehicle.as_deref() != Some(&*point.vehicle_id) {
            self.close_vehicle();
            self.current_vehicle = Some(point.vehicle_id.clone());
        }
        debug_assert!(point.timestamp_ms >= self.last_ms || self.open.is_empty(), "points out of event-time order");
        self.last_ms = point.timestamp_ms;
        if point.driver_name.is_some() {
            self.driver = point.driver_name.clone();
        }
        let metrics = match (point.speed, &self.profile.detectors.unusual_stop) {
            (Some(speed), Some(settings)) => vec![(settings.speed_metric, speed)],
            _ => Vec::new(),
        };
        let reading = Reading {
            profile: self.profile.id,
            entity: point.vehicle_id,
            event_time_ms: point.timestamp_ms,
            position: point.position,
            metrics,
            attributes: Vec::new(),
        };
        let enrichment = Enrichment { driver_name: point.driver_name, current_zone: point.current_zone };
        let observation =
            Observation { profile: &self.profile, reading: &reading, enrichment: &enrichment, arrival_ms: None };
        self.rule.observe(observation, &mut self.findings);
        for anomaly in std::mem::take(&mut self.findings.anomalies) {
            self.record(&reading, enrichment.current_zone.as_deref(), anomaly);
        }
    }

    /// Readings pushed so far.
    pub fn points(&self) -> u64 {
        self.points
    }

    /// Records an anomaly the rule raised at `reading`, which was in `reading_zone`.
    fn record(&mut self, reading: &Reading, reading_zone: Option<&str>, anomaly: Anomaly) {
        let vehicle_id = reading.entity.to_string();
        let driver_name = self.driver.as_deref().map(str::to_string);
        let feature = |name: &str| anomaly.features.iter().find(|(n, _)| &**n == name).map(|(_, v)| *v);
        let (start_ms, end_ms, zone, value) = match self.hunt {
            Hunt::Teleport => {
                let elapsed_ms = (feature("elapsed_s").unwrap_or(0.0) * 1000.0).round() as i64;
                (reading.event_time_ms - elapsed_ms, Some(reading.event_time_ms), None, anomaly.score)
            }
            Hunt::UnusualStops => {
                let episode = anomaly.episode.expect("a stop is an episode");
                let place = match (feature("latitude"), feature("longitude")) {
                    (Some(lat), Some(lon)) if lat.is_finite() && lon.is_finite() => Some(format!("{lat:.5},{lon:.5}")),
                    _ => None,
                };
                (episode.start_ms, episode.end_ms, place, anomaly.score)
            }
            Hunt::GeofenceBreach => {
                let episode = anomaly.episode.expect("a breach is an episode");
                // A breach opens at a reading in the zone; its close keeps the opening's zone.
                let zone = reading_zone.map(str::to_string);
                let minutes = (episode.end_ms.unwrap_or(reading.event_time_ms) - episode.start_ms) as f64 / 60_000.0;
                (episode.start_ms, episode.end_ms, zone, minutes)
            }
        };
        let finding = HuntFinding { vehicle_id, driver_name, start_ms, end_ms, zone, value, reason: anomaly.reason };
        match self.by_id.get(&anomaly.id) {
            Some(&index) => {
                let zone = self.episodes[index].zone.take();
                self.through_ms[index] = finding.end_ms.unwrap_or(reading.event_time_ms);
                self.episodes[index] = HuntFinding { zone: zone.or(finding.zone), ..finding };
                self.open.retain(|open| *open != index);
            }
            None => {
                let index = self.episodes.len();
                if finding.end_ms.is_none() && self.hunt != Hunt::Teleport {
                    self.open.push(index);
                }
                self.by_id.insert(anomaly.id, index);
                self.through_ms.push(finding.end_ms.unwrap_or(reading.event_time_ms));
                self.episodes.push(finding);
            }
        }
    }

    /// Episodes still open at the vehicle's last reading last to it.
    fn close_vehicle(&mut self) {
        for index in self.open.drain(..) {
            let episode = &mut self.episodes[index];
            episode.value = (self.last_ms - episode.start_ms) as f64 / 60_000.0;
            self.through_ms[index] = self.last_ms;
        }
        self.driver = None;
        self.last_ms = i64::MIN;
    }

    /// Every episode found that lasted into the reported range, by vehicle and start time.
    pub fn finish(mut self) -> Vec<HuntFinding> {
        self.close_vehicle();
        let from_ms = self.report_from_ms;
        self.episodes
            .into_iter()
            .zip(self.through_ms)
            .filter(|(_, through)| *through >= from_ms)
            .map(|(e, _)| e)
            .collect()
    }
}

#[cfg(test)]
mod tests;
