//! Detectors: plain synchronous structs that watch readings and report anomalies.
//!
//! Each keeps its own state per entity; the pipeline shards entities across workers so one
//! entity's state lives in one detector instance and sees its readings in order.
//!
//! - [`zscore`]: rolling z-score / 3-sigma per entity and metric.
//! - [`isolation_forest`]: Liu et al.'s isolation forest over a profile's features.
//! - [`novelty`]: sequence novelty per entity and metric (contextual anomaly detection).
//! - [`trend`]: slope changes per entity and metric (a drift while it drifts).
//! - [`rules`]: track rules over enriched vehicle readings (teleport, geofence, stops) and GPS
//!   spoofing evidence.
//! - [`fleet`]: the one state shared across entities, the fleet's recent fixes (for spoofing).
//! - [`settings`]: how a profile configures each of them.

pub mod fleet;
pub mod identity;
pub mod isolation_forest;
pub mod novelty;
pub mod rules;
pub mod settings;
pub mod trend;
pub mod zscore;

use crate::model::{Anomaly, Enrichment, Reading};
use crate::profile::Profile;
use std::fmt::{self, Write as _};
use std::sync::Arc;

/// What a detector sees of one reading.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub profile: &'a Profile,
    pub reading: &'a Reading,
    pub enrichment: &'a Enrichment,
    /// When the message arrived (epoch ms), for a live source whose devices keep their own
    /// clocks; `None` for a replayed file, the simulator and the benchmark (their event times
    /// follow their own clock, not ours), and for state rebuilt from history.
    pub arrival_ms: Option<i64>,
}

/// One detector's judgement of one reading (and metric, for per-metric detectors).
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub detector: &'static str,
    pub metric: Option<Arc<str>>,
    pub score: f64,
    pub threshold: f64,
    pub is_anomaly: bool,
}

/// Where detectors put what they find: anomalies always, every score only when asked
/// (`teleguard replay --all-scores`), so the live pipeline pays nothing for them.
#[derive(Debug, Default)]
pub struct Findings {
    pub anomalies: Vec<Anomaly>,
    pub scores: Vec<Score>,
    keep_scores: bool,
}

impl Findings {
    pub fn keeping_scores() -> Self {
        Findings { keep_scores: true, ..Default::default() }
    }

    /// Records a judgement; `metric` is only called when scores are kept.
    pub fn score(
        &mut self,
        detector: &'static str,
        metric: impl FnOnce() -> Option<Arc<str>>,
        score: f64,
        threshold: f64,
        is_anomaly: bool,
    ) {
        if self.keep_scores {
            self.scores.push(Score { detector, metric: metric(), score, threshold, is_anomaly });
        }
    }

    /// Whether every judgement is kept, not only anomalies.
    pub fn keeps_scores(&self) -> bool {
        self.keep_scores
    }

    pub fn clear(&mut self) {
        self.anomalies.clear();
        self.scores.clear();
    }
}

/// A streaming detector.
pub trait Detector: Send {
    /// The name anomalies carry, e.g. `zscore`.
    fn name(&self) -> &'static str;
    /// Takes one reading into the detector's state and records what it finds.
    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings);
}

/// The detectors one pipeline worker runs, in order.
#[derive(Default)]
pub struct DetectorSet {
    detectors: Vec<Box<dyn Detector>>,
}

impl std::fmt::Debug for DetectorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.detectors.iter().map(|d| d.name())).finish()
    }
}

impl DetectorSet {
    /// Every detector teleguard ships, each configured per profile; isolation-forest models
    /// are shared through `models` (one registry per pipeline). The fleet's fixes are this set's
    /// own: for one detector set over the whole stream (replay, eval).
    pub fn standard(models: Arc<isolation_forest::ModelRegistry>) -> Self {
        Self::sharing(models, Arc::new(fleet::SharedFixes::default()))
    }

    /// [`DetectorSet::standard`] for one of several workers: the fleet's fixes are shared
    /// through `fleet` (one per pipeline), so identical fixes of entities of different workers
    /// meet.
    pub fn sharing(models: Arc<isolation_forest::ModelRegistry>, fleet: Arc<fleet::SharedFixes>) -> Self {
        DetectorSet {
            detectors: vec![
                Box::new(zscore::ZScoreDetector::default()),
                Box::new(isolation_forest::IsolationForestDetector::new(models)),
                Box::new(novelty::NoveltyDetector::default()),
                Box::new(trend::TrendDetector::default()),
                Box::new(rules::teleport::TeleportDetector::default()),
                Box::new(rules::spoofing::SpoofingDetector::sharing(fleet)),
                Box::new(rules::geofence::GeofenceBreachDetector::default()),
                Box::new(rules::stop::UnusualStopDetector::default()),
            ],
        }
    }

    pub fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        for detector in &mut self.detectors {
            detector.observe(observation, findings);
        }
    }
}

/// The names of every shipped detector.
pub const DETECTOR_NAMES: [&str; 8] = [
    zscore::NAME,
    isolation_forest::NAME,
    novelty::NAME,
    trend::NAME,
    rules::teleport::NAME,
    rules::spoofing::NAME,
    rules::geofence::NAME,
    rules::stop::NAME,
];

/// A number written the way a person reads it: at most two decimals, no trailing zeros,
/// thousands separated, very large values in scientific notation.
pub fn for_people(x: f64) -> String {
    ForPeople(x).to_string()
}

/// [`for_people`] as a `Display`: writes the number into a longer text, e.g. an anomaly's
/// reason, without a `String` of its own (those allocations were most of the cost of a reason).
#[derive(Debug, Clone, Copy)]
pub struct ForPeople(pub f64);

impl fmt::Display for ForPeople {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if x.abs() >= 1e9 {
            return write!(f, "{x:.2e}");
        }
        // Below 1e9 there are at most ten digits before the point: the text fits on the stack.
        let mut text = ShortText::default();
        write!(text, "{x:.2}")?;
        let text = text.as_str()?.trim_end_matches('0').trim_end_matches('.');
        let (sign, digits) = text.strip_prefix('-').map_or(("", text), |rest| ("-", rest));
        let (whole, fraction) = digits.split_once('.').map_or((digits, None), |(w, f)| (w, Some(f)));
        // `whole` is ASCII digits (or `NaN`), in groups of three after the first.
        let (first_group, mut groups) = whole.split_at(match whole.len() % 3 {
            0 => whole.len().min(3),
            partial => partial,
        });
        f.write_str(sign)?;
        f.write_str(first_group)?;
        while !groups.is_empty() {
            let (group, rest) = groups.split_at(3);
            f.write_str(",")?;
            f.write_str(group)?;
            groups = rest;
        }
        match fraction {
            Some(fraction) => write!(f, ".{fraction}"),
            None => Ok(()),
        }
    }
}

/// A short text formatted on the stack; writing past its 32 bytes is an error.
#[derive(Default)]
struct ShortText {
    bytes: [u8; 32],
    len: usize,
}

impl ShortText {
    fn as_str(&self) -> Result<&str, fmt::Error> {
        std::str::from_utf8(&self.bytes[..self.len]).map_err(|_| fmt::Error)
    }
}

impl fmt::Write for ShortText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{EntityMap, ForPeople, for_people};
    use std::sync::Arc;

    #[test]
    fn an_entity_keeps_its_own_state_per_profile() {
        let mut map: EntityMap<u32> = EntityMap::default();
        let (a, b): (Arc<str>, Arc<str>) = ("d-1".into(), "d-2".into());
        *map.get_or_insert_with(0, &a, || 10) += 1;
        *map.get_or_insert_with(0, &b, || 20) += 1;
        *map.get_or_insert_with(2, &a, || 30) += 1;
        *map.get_or_insert_with(0, &Arc::from("d-1"), || 99) += 1;
        assert_eq!((map.get(0, "d-1"), map.get(0, "d-2"), map.get(2, "d-1")), (Some(&12), Some(&21), Some(&31)));
        assert_eq!((map.get(1, "d-1"), map.get(0, "d-3")), (None, None));
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        assert_eq!(for_people(1520.0), "1,520");
        assert_eq!(for_people(18.3333), "18.33");
        assert_eq!(for_people(-1234567.5), "-1,234,567.5");
        assert_eq!(for_people(0.0), "0");
        assert_eq!(for_people(100.0), "100");
    }

    #[test]
    fn numbers_for_people_at_the_edges() {
        // As the formatting through a `String` per number gave them.
        let cases = [
            (f64::NAN, "NaN"),
            (-0.0, "-0"),
            (-0.004, "-0"),
            (0.005, "0.01"),
            (2.675, "2.67"),
            (999.995, "1,000"),
            (999_999_999.996, "1,000,000,000"),
            (-999_999_999.996, "-1,000,000,000"),
            (1e9, "1.00e9"),
            (-1234.5, "-1,234.5"),
            (123456.0, "123,456"),
            (12.10, "12.1"),
            (1e-320, "0"),
        ];
        for (x, text) in cases {
            assert_eq!(for_people(x), text, "{x:e}");
            assert_eq!(format!("[{}]", ForPeople(x)), format!("[{text}]"), "{x:e}");
        }
    }
}

/// Per-entity state of a detector: one map per profile, looked up by the entity's name
/// without cloning it; a fast non-cryptographic hash (entity ids are not adversarial keys
/// for a hash-flooding attack here: each costs the sender a validated, stored message).
/// The map holds each entity's index into `states`, so a known entity costs one lookup.
#[derive(Debug)]
pub struct EntityMap<V> {
    by_profile: Vec<ProfileStates<V>>,
}

#[derive(Debug)]
struct ProfileStates<V> {
    index: rustc_hash::FxHashMap<Arc<str>, usize>,
    states: Vec<V>,
}

impl<V> Default for ProfileStates<V> {
    fn default() -> Self {
        ProfileStates { index: Default::default(), states: Vec::new() }
    }
}

impl<V> Default for EntityMap<V> {
    fn default() -> Self {
        EntityMap { by_profile: Vec::new() }
    }
}

impl<V> EntityMap<V> {
    /// The entity's state, made by `new` on first sight.
    pub fn get_or_insert_with(&mut self, profile: u16, entity: &Arc<str>, new: impl FnOnce() -> V) -> &mut V {
        let profile = usize::from(profile);
        if self.by_profile.len() <= profile {
            self.by_profile.resize_with(profile + 1, Default::default);
        }
        let ProfileStates { index, states } = &mut self.by_profile[profile];
        let slot = match index.get(&**entity) {
            Some(slot) => *slot,
            None => {
                states.push(new());
                index.insert(entity.clone(), states.len() - 1);
                states.len() - 1
            }
        };
        &mut states[slot]
    }

    pub fn get(&self, profile: u16, entity: &str) -> Option<&V> {
        let ProfileStates { index, states } = self.by_profile.get(usize::from(profile))?;
        index.get(entity).map(|slot| &states[*slot])
    }

    /// Number of entities with state.
    pub fn len(&self) -> usize {
        self.by_profile.iter().map(|p| p.states.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
