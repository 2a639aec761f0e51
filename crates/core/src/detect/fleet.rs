//! Fleet-wide memory of recent fixes, shared by every worker: which devices reported exactly
//! the same coordinates, and when. Detection is sharded by entity, so this is the one piece of
//! detector state that crosses entities.
//!
//! A fix is its two coordinates' bits as parsed, so "the same" means equal to the last digit the
//! devices sent. The memory is a fixed table of [`FIXES_REMEMBERED`] slots, split into
//! [`SHARDS`] shards by a hash of the fix (each behind its own mutex, taken for one lookup of a
//! set of [`WAYS`] slots), so a report costs one hash, one short lock and four comparisons,
//! whatever the fleet's size, and the memory never grows. A new fix takes a free slot of its set,
//! or one whose reports are older than the caller's horizon, or else the set's least recently
//! reported one: under a load of more distinct moving fixes per horizon than the table holds,
//! the oldest are forgotten first, and a match may be missed (never made up). Shards are
//! allocated on their first report, so a pipeline whose profiles never use it pays nothing.

use crate::model::{GeoPoint, ProfileId};
use std::sync::{Arc, Mutex, PoisonError};

/// Slots in the whole table (152 bytes each on 64-bit machines: 9.5 MiB once every shard is in
/// use).
pub const FIXES_REMEMBERED: usize = 1 << 16;
/// Independent locks: more than workers, so two workers rarely wait for one another.
pub const SHARDS: usize = 16;
/// Slots a fix may take in its shard.
pub const WAYS: usize = 4;
/// Devices remembered per fix: the reporting device and this many others can be counted.
pub const MAX_DEVICES_COUNTED: usize = REPORTERS + 1;
const REPORTERS: usize = 3;
const SETS_PER_SHARD: usize = FIXES_REMEMBERED / SHARDS / WAYS;

/// A device, as the table tells devices apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub profile: ProfileId,
    pub entity: Arc<str>,
}

/// Another device that reported the same fix: who, and from when to when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub device: Device,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// One device's run of reports of one fix: the span of event times it kept reporting it.
#[derive(Debug, Clone)]
struct Reporter {
    device: Device,
    first_ms: i64,
    last_ms: i64,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    lat_bits: u64,
    lon_bits: u64,
    /// Most recent first; all `None` means the slot is free.
    reporters: [Option<Reporter>; REPORTERS],
    /// The last report that found the fix shared by enough devices: while it is recent, every
    /// report of the fix is evidence, even by a device whose own earlier run was pushed out of
    /// `reporters` by later ones (a spoofer holding more devices than a slot remembers).
    shared_at_ms: Option<i64>,
}

impl Slot {
    fn newest_ms(&self) -> Option<i64> {
        self.reporters.iter().flatten().map(|r| r.last_ms).max()
    }

    fn holds(&self, lat_bits: u64, lon_bits: u64) -> bool {
        self.lat_bits == lat_bits && self.lon_bits == lon_bits && self.reporters.iter().any(Option::is_some)
    }
}

/// The table; see the module's documentation.
#[derive(Debug)]
pub struct SharedFixes {
    shards: Box<[Mutex<Vec<[Slot; WAYS]>>]>,
}

impl Default for SharedFixes {
    fn default() -> Self {
        SharedFixes { shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect() }
    }
}

/// How a report is judged: reports of one device at most `span_gap_ms` apart are one run, and
/// two runs agree when they come within `within_ms` of each other; `devices` agreeing runs
/// (the reporting device's among them) make the fix shared; runs ended more than `span_gap_ms`
/// ago are forgotten.
#[derive(Debug, Clone, Copy)]
pub struct Matching {
    pub within_ms: i64,
    pub span_gap_ms: i64,
    pub devices: usize,
}

impl SharedFixes {
    /// Records that `entity` of `profile` reported `fix` at `at_ms`. When the fix is shared, the
    /// other devices that reported it: those whose runs of reporting exactly this fix come within
    /// `matching.within_ms` of this device's run (which this report extends), most recent first,
    /// when they are enough; else, while the fix was found shared within the last
    /// `span_gap_ms`, every other device still remembered with it.
    pub fn report(
        &self,
        profile: ProfileId,
        entity: &Arc<str>,
        fix: GeoPoint,
        at_ms: i64,
        matching: Matching,
    ) -> Option<Vec<Witness>> {
        let (lat_bits, lon_bits) = (fix.lat.to_bits(), fix.lon.to_bits());
        let hash = mix(lat_bits, lon_bits);
        let shard = &self.shards[(hash >> 60) as usize % SHARDS];
        let mut sets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if sets.is_empty() {
            sets.resize_with(SETS_PER_SHARD, Default::default);
        }
        let set = &mut sets[hash as usize % SETS_PER_SHARD];
        let horizon_ms = at_ms.saturating_sub(matching.span_gap_ms);
        let way = match set.iter().position(|s| s.holds(lat_bits, lon_bits)) {
            Some(way) => way,
            None => {
                // A free slot, else a forgotten one, else the least recently reported.
                let way = (0..WAYS)
                    .min_by_key(|&w| match set[w].newest_ms() {
                        None => i64::MIN,
                        Some(newest) if newest < horizon_ms => i64::MIN + 1,
                        Some(newest) => newest,
                    })
                    .expect("a set has ways");
                set[way] = Slot { lat_bits, lon_bits, reporters: Default::default(), shared_at_ms: None };
                way
            }
        };
        let slot = &mut set[way];
        let is_me = |r: &Reporter| r.device.profile == profile && r.device.entity == *entity;
        let mut mine: Option<Reporter> = None;
        let mut others: [Option<Reporter>; REPORTERS] = Default::default();
        let mut count = 0;
        for reporter in slot.reporters.iter_mut().filter_map(Option::take) {
            if reporter.last_ms < horizon_ms {
                continue;
            }
            if is_me(&reporter) {
                mine = Some(reporter);
            } else {
                others[count] = Some(reporter);
                count += 1;
            }
        }
        let mine = match mine {
            Some(run) if at_ms - run.last_ms <= matching.span_gap_ms => {
                Reporter { first_ms: run.first_ms.min(at_ms), last_ms: run.last_ms.max(at_ms), ..run }
            }
            Some(run) => Reporter { first_ms: at_ms, last_ms: at_ms, ..run },
            None => Reporter { device: Device { profile, entity: entity.clone() }, first_ms: at_ms, last_ms: at_ms },
        };
        let witness = |other: &Reporter| Witness {
            device: other.device.clone(),
            first_ms: other.first_ms,
            last_ms: other.last_ms,
        };
        let agreeing = |other: &&Reporter| {
            other.first_ms - matching.within_ms <= mine.last_ms && mine.first_ms - matching.within_ms <= other.last_ms
        };
        let agree: Vec<Witness> = others.iter().flatten().filter(agreeing).map(witness).collect();
        let witnesses = if agree.len() + 1 >= matching.devices {
            slot.shared_at_ms = Some(slot.shared_at_ms.map_or(at_ms, |shared| shared.max(at_ms)));
            Some(agree)
        } else if slot.shared_at_ms.is_some_and(|shared| shared >= horizon_ms) && count > 0 {
            Some(others.iter().flatten().map(witness).collect())
        } else {
            None
        };
        slot.reporters[0] = Some(mine);
        for (place, other) in slot.reporters[1..].iter_mut().zip(others.iter_mut()) {
            *place = other.take();
        }
        witnesses
    }
}

/// A 64-bit mix of the two coordinates' bits (the finaliser of MurmurHash3 over their sum), so
/// neighbouring fixes land in unrelated shards and sets.
fn mix(lat_bits: u64, lon_bits: u64) -> u64 {
    let mut h = lat_bits.rotate_left(32) ^ lon_bits.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MATCHING: Matching = Matching { within_ms: 1000, span_gap_ms: 60_000, devices: 2 };

    /// The witnesses `fixes.report` names for a report by `entity` (of profile 0), none when
    /// the fix is not shared.
    fn report(fixes: &SharedFixes, entity: &str, fix: GeoPoint, at_ms: i64) -> Vec<Witness> {
        fixes.report(0, &Arc::from(entity), fix, at_ms, MATCHING).unwrap_or_default()
    }

    fn names(witnesses: &[Witness]) -> Vec<&str> {
        witnesses.iter().map(|w| &*w.device.entity).collect()
    }

    #[test]
    fn identical_fixes_of_distinct_devices_within_the_window_are_witnesses() {
        let fixes = SharedFixes::default();
        let here = GeoPoint { lat: 37.774_929, lon: -122.419_416 };
        assert!(report(&fixes, "V1", here, 10_000).is_empty(), "the first report has no witness");
        assert_eq!(names(&report(&fixes, "V2", here, 10_400)), ["V1"]);
        assert_eq!(names(&report(&fixes, "V3", here, 11_000)), ["V2", "V1"]);
        // 1.4 s after V2 and 2 s after V1: only V3 is close enough.
        assert_eq!(names(&report(&fixes, "V4", here, 12_000)), ["V3"]);
    }

    #[test]
    fn a_device_repeating_its_own_fix_is_no_witness_of_itself() {
        let fixes = SharedFixes::default();
        let here = GeoPoint { lat: 37.7, lon: -122.4 };
        for at_ms in [0, 5_000, 10_000] {
            assert!(report(&fixes, "V1", here, at_ms).is_empty());
        }
    }

    #[test]
    fn one_digit_apart_is_another_fix() {
        let fixes = SharedFixes::default();
        report(&fixes, "V1", GeoPoint { lat: 37.774_929, lon: -122.419_416 }, 0);
        let next_to_it = GeoPoint { lat: 37.774_929, lon: -122.419_417 };
        assert!(report(&fixes, "V2", next_to_it, 0).is_empty());
    }

    #[test]
    fn a_run_of_one_fix_meets_a_later_report_of_it() {
        // A static spoofed fix: V1 reports it at 0 s and 5 s, V2 at 0.2 s. V1's second report
        // is 4.8 s after V2's, but V1's run (0-5 s) overlaps V2's: both are witnesses.
        let fixes = SharedFixes::default();
        let fake = GeoPoint { lat: 37.62, lon: -122.38 };
        assert!(report(&fixes, "V1", fake, 0).is_empty());
        assert_eq!(names(&report(&fixes, "V2", fake, 200)), ["V1"]);
        assert_eq!(names(&report(&fixes, "V1", fake, 5_000)), ["V2"]);
    }

    #[test]
    fn a_fix_shared_by_more_devices_than_a_slot_remembers_flags_them_all() {
        // Five vans held at one fix, reporting in the same order every 5 s: V1's first run is
        // pushed out by V2 to V5, so its second report meets no run of its own, but the fix is
        // known shared.
        let fixes = SharedFixes::default();
        let fake = GeoPoint { lat: 37.62, lon: -122.38 };
        let vans = ["V1", "V2", "V3", "V4", "V5"];
        let shared: Vec<bool> = [0, 5_000]
            .iter()
            .flat_map(|&at_ms| vans.map(|van| fixes.report(0, &Arc::from(van), fake, at_ms, MATCHING).is_some()))
            .collect();
        assert_eq!(shared, [false, true, true, true, true, true, true, true, true, true]);
        // The witnesses it names are the devices the slot still remembers.
        assert_eq!(names(&report(&fixes, "V1", fake, 10_000)), ["V5", "V4", "V3"]);
    }

    #[test]
    fn reports_older_than_the_span_gap_are_forgotten() {
        let fixes = SharedFixes::default();
        let here = GeoPoint { lat: 1.0, lon: 2.0 };
        report(&fixes, "V1", here, 0);
        assert!(report(&fixes, "V2", here, 61_000).is_empty());
    }

    #[test]
    fn a_slot_is_the_size_the_documentation_says() {
        assert_eq!(std::mem::size_of::<Slot>(), 152);
    }

    #[test]
    fn the_table_stays_its_size_under_any_number_of_fixes() {
        let fixes = SharedFixes::default();
        for i in 0..(4 * FIXES_REMEMBERED) {
            let fix = GeoPoint { lat: i as f64 * 1e-6, lon: 0.5 };
            report(&fixes, "V1", fix, i as i64);
        }
        for shard in fixes.shards.iter() {
            assert_eq!(shard.lock().unwrap().len(), SETS_PER_SHARD);
        }
        // The most recent fixes are still there.
        let last = GeoPoint { lat: (4 * FIXES_REMEMBERED - 1) as f64 * 1e-6, lon: 0.5 };
        assert_eq!(names(&report(&fixes, "V2", last, (4 * FIXES_REMEMBERED) as i64)), ["V1"]);
    }
}
