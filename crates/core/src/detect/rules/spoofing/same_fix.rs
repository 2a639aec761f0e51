//! The same coordinates from several devices at once: one spoofer (or a meaconer, which
//! rebroadcasts the signal its own antenna receives) makes every receiver in its range compute
//! the one position it sends, and a replayed or cloned stream repeats another device's fixes.
//!
//! Independent receivers never agree to the last digit: GPS puts a few metres of noise on every
//! fix, and our devices report 5 to 6 decimals (1 m to 0.1 m). So the check counts only fixes
//! that are *identical* (not nearby), of distinct devices, within `within_ms` of each other in
//! event time (a device repeating one fix extends its run of it, so receivers that report at
//! different moments of a static spoof still meet; once a fix is found shared, every device
//! reporting it within the spoofing window is evidence), and only of devices reporting themselves
//! moving: two vehicles parked side by side may both be given the depot's surveyed spot, two
//! moving ones cannot be in one place. Fixes reported coarser than [`COARSE_DEGREES`] in both
//! coordinates (about 11 m) are left out: at that resolution nearby devices share a value.
//!
//! The state is fleet-wide ([`crate::detect::fleet::SharedFixes`]); each device's own episode
//! (one anomaly until a whole spoofing window passes without evidence) is in its track.

use crate::detect::fleet::{Matching, SharedFixes, Witness};
use crate::detect::for_people;
use crate::detect::settings::SameFixSettings;
use crate::model::{Anomaly, GeoPoint, Reading, Severity, anomaly_id};
use crate::profile::Profile;
use crate::time::format_millis;
use std::fmt::Write as _;
use std::sync::Arc;

/// A fix whose two coordinates are both whole multiples of this (in degrees) is too coarse to
/// tell devices apart.
pub const COARSE_DEGREES: f64 = 1e-4;

/// Whether both coordinates are whole multiples of [`COARSE_DEGREES`].
pub(super) fn is_coarse(fix: GeoPoint) -> bool {
    let whole = |x: f64| {
        let steps = x / COARSE_DEGREES;
        (steps - steps.round()).abs() < 1e-6
    };
    whole(fix.lat) && whole(fix.lon)
}

/// The other devices that reported `reading`'s fix with it, when they make it evidence.
pub(super) fn witnesses(
    fleet: &SharedFixes,
    settings: &SameFixSettings,
    span_gap_ms: i64,
    reading: &Reading,
    fix: GeoPoint,
    speed_kmh: f64,
) -> Option<Vec<Witness>> {
    if speed_kmh < settings.min_speed_kmh || is_coarse(fix) {
        return None;
    }
    let matching = Matching { within_ms: settings.within_ms, span_gap_ms, devices: settings.devices };
    fleet.report(reading.profile, &reading.entity, fix, reading.event_time_ms, matching)
}

/// The anomaly of `reading`, whose fix `witnesses` reported too.
pub(super) fn anomaly(
    profile: &Profile,
    reading: &Reading,
    fix: GeoPoint,
    speed_kmh: f64,
    settings: &SameFixSettings,
    witnesses: &[Witness],
) -> Anomaly {
    let devices = witnesses.len() + 1;
    let mut others = String::new();
    for (index, witness) in witnesses.iter().enumerate() {
        let separator = if index == 0 { "" } else { ", " };
        let _ = write!(others, "{separator}{} at {}", witness.device.entity, format_millis(witness.last_ms));
    }
    let score = devices as f64 / settings.devices as f64;
    Anomaly {
        id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, super::NAME, "same_fix"),
        detector: super::NAME,
        metric: None,
        value: Some(devices as f64),
        score,
        threshold: 1.0,
        severity: Severity::from_excess(score, 1.0),
        reason: format!(
            "reported exactly {},{} while moving at {} km/h, as other moving devices did at the same time \
             ({others}; at least {} devices within {} s of each other): independent receivers never agree to \
             the last digit, so one spoofed or rebroadcast signal (or a replayed stream) is speaking for them",
            fix.lat,
            fix.lon,
            for_people(speed_kmh),
            settings.devices,
            for_people(settings.within_ms as f64 / 1000.0),
        ),
        features: vec![
            (Arc::from("devices"), devices as f64),
            (Arc::from("latitude"), fix.lat),
            (Arc::from("longitude"), fix.lon),
            (Arc::from("reported_speed_kmh"), speed_kmh),
        ],
        episode: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{GeoPoint, is_coarse};

    #[test]
    fn a_fix_to_four_decimals_is_coarse_and_to_five_is_not() {
        assert!(is_coarse(GeoPoint { lat: 37.7749, lon: -122.4194 }));
        assert!(is_coarse(GeoPoint { lat: 37.0, lon: -122.41 }));
        assert!(!is_coarse(GeoPoint { lat: 37.77493, lon: -122.4194 }));
        assert!(!is_coarse(GeoPoint { lat: 37.7749, lon: -122.419_416 }));
    }
}
