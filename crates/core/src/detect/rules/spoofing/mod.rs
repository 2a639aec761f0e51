//! GPS spoofing as evidence, raised as security anomalies instead of dropped fixes:
//! - a device's fixes moved farther than its own reported speed can have taken it (below);
//! - an aircraft's altitude changed faster than any airframe climbs or descends (below);
//! - the same coordinates, to the last digit, from several moving devices at once
//!   ([`same_fix`], over state shared by the whole fleet);
//! - a device's clock jumped: its event time far behind its own newest, or far ahead of the
//!   message's arrival ([`clock`]).
//!
//! A path is never shorter than the straight line between its ends, so the distance between
//! two fixes of one device is at most the distance its speed covered between them (the
//! reported speeds integrated over time), plus the error of two fixes and some under-reporting.
//! A fix beyond that did not come from where the device was: a spoofed or replayed position (or
//! a broken GPS). Each fix is compared with every fix of the last `window_secs` of the same
//! device, so a position dragged away slowly (which no single step shows) is found once it has
//! gone farther than the device could. Catches what the `teleport` rule's fixed speed limit
//! cannot: a vehicle reporting 40 km/h whose fixes imply 200 km/h.
//!
//! One anomaly per episode and kind of evidence: after one, the device is quiet for that kind
//! until a whole window passes without evidence of it (clock jumps: see [`clock`]).

mod clock;
mod same_fix;

use crate::detect::fleet::SharedFixes;
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
    /// The last reading with evidence of the speed or altitude checks, while an episode is open.
    episode_evidence_ms: Option<i64>,
    /// The same for the fleet-wide check of identical fixes.
    same_fix_evidence_ms: Option<i64>,
    clock: clock::Clock,
}

/// Whether a reading at `now_ms` opens an episode of a kind of evidence whose last evidence was
/// at `last_evidence_ms` (which it updates): with evidence, when none is open; an open episode
/// closes after a whole `window_ms` without evidence.
fn episode_opens(last_evidence_ms: &mut Option<i64>, evidence: bool, now_ms: i64, window_ms: i64) -> bool {
    if !evidence {
        if last_evidence_ms.is_some_and(|last| now_ms - last > window_ms) {
            *last_evidence_ms = None;
        }
        return false;
    }
    let opens = last_evidence_ms.is_none();
    *last_evidence_ms = Some(last_evidence_ms.map_or(now_ms, |last| last.max(now_ms)));
    opens
}

#[derive(Debug, Default)]
pub struct SpoofingDetector {
    tracks: EntityMap<Track>,
    /// The fixes of every device, shared with the other workers' detectors.
    fleet: Arc<SharedFixes>,
}

impl SpoofingDetector {
    /// A detector that compares fixes with every other detector sharing `fleet`.
    pub fn sharing(fleet: Arc<SharedFixes>) -> Self {
        SpoofingDetector { tracks: EntityMap::default(), fleet }
    }
}

impl Detector for SpoofingDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, arrival_ms, .. } = observation;
        let Some(settings) = &profile.detectors.spoofing else { return };
        let track = self.tracks.get_or_insert_with(reading.profile, &reading.entity, Track::default);
        let now_ms = reading.event_time_ms;
        if let Some(limit_ms) = settings.clock_jump_ms
            && let Some(jump) = track.clock.judge(now_ms, arrival_ms, limit_ms)
        {
            findings.anomalies.push(clock_jump(profile, reading, limit_ms, jump));
        }
        let Some(here) = reading.position else { return };
        let Some(reported) = reading.metric(settings.speed_metric) else { return };
        let speed_kmh = reported.max(0.0) * settings.to_kmh;
        if let Some(same_fix) = &settings.same_fix {
            let witnesses = same_fix::witnesses(&self.fleet, same_fix, settings.window_ms, reading, here, speed_kmh);
            if episode_opens(&mut track.same_fix_evidence_ms, witnesses.is_some(), now_ms, settings.window_ms)
                && let Some(witnesses) = witnesses
            {
                findings.anomalies.push(same_fix::anomaly(profile, reading, here, speed_kmh, same_fix, &witnesses));
            }
        }
        let altitude_m = settings
            .altitude
            .and_then(|(metric, to_m)| reading.metrics.iter().find(|(id, _)| *id == metric).map(|(_, v)| v * to_m));
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
        if !episode_opens(&mut track.episode_evidence_ms, evidence, now_ms, settings.window_ms) {
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

/// The anomaly of a device's clock that jumped by more than `limit_ms`.
fn clock_jump(
    profile: &crate::profile::Profile,
    reading: &crate::model::Reading,
    limit_ms: i64,
    jump: clock::Jump,
) -> Anomaly {
    let (by_ms, reason, features) = match jump {
        clock::Jump::Back { by_ms, newest_ms } => (
            by_ms,
            format!(
                "event time {} is {} s behind this device's newest reading ({}), more than the {} s delivery \
                 reorders a live stream by: its clock jumped back (a reset, a spoofed GPS time) or old messages \
                 are being replayed",
                format_millis(reading.event_time_ms),
                for_people(by_ms as f64 / 1000.0),
                format_millis(newest_ms),
                for_people(limit_ms as f64 / 1000.0)
            ),
            vec![
                (Arc::from("clock_step_s"), -(by_ms as f64) / 1000.0),
                (Arc::from("newest_event_time_ms"), newest_ms as f64),
            ],
        ),
        clock::Jump::Ahead { by_ms, arrival_ms } => (
            by_ms,
            format!(
                "event time {} is {} s ahead of the message's arrival ({}), more than the {} s allowed: a message \
                 cannot arrive before it was made, so the device's clock jumped ahead (or a spoofed GPS time set it)",
                format_millis(reading.event_time_ms),
                for_people(by_ms as f64 / 1000.0),
                format_millis(arrival_ms),
                for_people(limit_ms as f64 / 1000.0)
            ),
            vec![
                (Arc::from("ahead_of_arrival_s"), by_ms as f64 / 1000.0),
                (Arc::from("arrival_time_ms"), arrival_ms as f64),
            ],
        ),
    };
    let score = by_ms as f64 / limit_ms as f64;
    Anomaly {
        id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, "clock"),
        detector: NAME,
        metric: None,
        value: Some(by_ms as f64 / 1000.0),
        score,
        threshold: 1.0,
        severity: Severity::from_excess(score, 1.0),
        reason,
        features,
        episode: None,
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
mod tests;
