//! Detector settings as a profile writes them (`[profiles.NAME.detectors.*]`), and validated.

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetectors {
    pub zscore: Option<RawZScore>,
    pub isolation_forest: Option<RawIsolationForest>,
    pub teleport: Option<RawTeleport>,
    pub spoofing: Option<RawSpoofing>,
    pub geofence_breach: Option<RawGeofenceBreach>,
    pub unusual_stop: Option<RawUnusualStop>,
    pub novelty: Option<RawNovelty>,
    pub trend: Option<RawTrend>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZScore {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Readings in the rolling window a reading is judged against.
    #[serde(default = "default_window")]
    pub window: usize,
    /// When set, the window also holds only the readings of the last this many seconds (event
    /// time); `window` still bounds how many it holds.
    pub window_secs: Option<f64>,
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// What to watch: metric names, or `<metric>_diff` (change since the entity's previous
    /// reading, for metrics that follow a planned trajectory); all metrics by default.
    pub metrics: Option<Vec<String>>,
    /// Readings a window must hold before it judges; the window's size by default.
    pub min_history: Option<usize>,
    /// The smallest σ used, per watched signal, in the metric's own units.
    #[serde(default)]
    pub sigma_floor: BTreeMap<String, f64>,
    /// Per watched signal: `both` (default), `above` or `below`: which deviations count.
    #[serde(default)]
    pub direction: BTreeMap<String, String>,
    /// Consecutive readings beyond the threshold before an episode opens.
    #[serde(default = "default_persistence")]
    pub persistence: usize,
    /// Consecutive readings back within the threshold that close an episode.
    #[serde(default = "default_quiet_readings")]
    pub quiet_readings: usize,
    /// A signal repeating exactly the same value this many readings is a stuck sensor; 0 = off.
    #[serde(default)]
    pub stuck_after: usize,
}

impl Default for RawZScore {
    fn default() -> Self {
        RawZScore {
            enabled: true,
            window: default_window(),
            window_secs: None,
            threshold: default_threshold(),
            metrics: None,
            min_history: None,
            sigma_floor: BTreeMap::new(),
            direction: BTreeMap::new(),
            persistence: default_persistence(),
            quiet_readings: default_quiet_readings(),
            stuck_after: 0,
        }
    }
}

/// Sequence novelty (`detect::novelty`); off unless a profile has the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNovelty {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Levels the learned range is cut into.
    #[serde(default = "default_novelty_levels")]
    pub levels: usize,
    /// Sequence lengths judged per reading: the level alone, with the one before, ... up to
    /// this many levels.
    #[serde(default = "default_novelty_orders")]
    pub orders: usize,
    /// Readings per metric that only teach the range and the sequences, without verdicts.
    #[serde(default = "default_novelty_learning")]
    pub learning_readings: usize,
    /// Readings after an anomaly during which the metric scores 0 and learns.
    #[serde(default = "default_novelty_rest")]
    pub rest_readings: u64,
    /// Score (in [0, 1]) from which a reading is an anomaly.
    #[serde(default = "default_novelty_threshold")]
    pub threshold: f64,
    /// Readings the running mean and variance of the averaged novelty reach back over; 0
    /// scores the novelty itself instead of how unusual it is.
    #[serde(default = "default_novelty_history")]
    pub history_readings: u64,
    /// Bits of each of the two Bloom filters of sequences seen, as a power of two (14: 2 KiB).
    #[serde(default = "default_novelty_memory")]
    pub memory_bits_log2: u32,
    /// A value beyond every value the metric had before by more than this fraction of their
    /// span is an anomaly outright (score 1); `inf` turns that off.
    #[serde(default = "default_novelty_extreme_margin")]
    pub extreme_margin: f64,
    /// Parts of the day (UTC) a reading's level is also remembered with, so a level usual at
    /// noon and never seen at night is news at night; 24 = by hour, 0 turns it off.
    #[serde(default = "default_novelty_day_parts")]
    pub day_parts: u32,
    /// Metrics to watch; all of the profile's by default.
    pub metrics: Option<Vec<String>>,
}

/// Slope changes (`detect::trend`); off unless a profile has the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrend {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds of event time whose readings are averaged into one block.
    #[serde(default = "default_trend_block_secs")]
    pub block_secs: u64,
    /// Blocks the smooth course and its kink are fitted over (at least 12).
    #[serde(default = "default_trend_window_blocks")]
    pub window_blocks: usize,
    /// How many scales (the larger of the noise's and the metric's usual bends) a slope
    /// change must reach to be an anomaly.
    #[serde(default = "default_trend_threshold")]
    pub threshold: f64,
    /// Blocks the running scale of the metric's usual bends reaches back over.
    #[serde(default = "default_trend_history_blocks")]
    pub history_blocks: usize,
    /// Judged windows that only teach that scale, before the first verdict; `window_blocks`
    /// by default.
    pub learning_blocks: Option<u64>,
    /// Metrics to watch; all of the profile's by default.
    pub metrics: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIsolationForest {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Metric names, or `<metric>_diff` (change since the entity's previous reading), or
    /// `<metric>_change` (the same for an angle in degrees, wrapped to ±180).
    pub features: Vec<String>,
    /// `profile` (one model for every entity of the profile) or `entity` (one each).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Readings of the scope gathered before the model is trained.
    #[serde(default = "default_training_size")]
    pub training_size: usize,
    /// Share of the training readings held back from growing the trees; the threshold is
    /// their highest score plus the spread of their top percent. 0 (reference 001) sets the
    /// threshold from the training readings themselves, by `contamination`.
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    /// With `holdout = 0`: the share of training readings scoring above the threshold.
    #[serde(default = "default_contamination")]
    pub contamination: f64,
    #[serde(default = "default_trees")]
    pub trees: usize,
    /// Retrain from a reservoir of recent readings every this many readings; 0 = never.
    #[serde(default)]
    pub retrain_every: usize,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeleport {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_max_speed")]
    pub max_speed_kmh: f64,
}

/// `detectors.spoofing`: fixes that moved farther than the device's own speed allows, identical
/// fixes of several devices, clock jumps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpoofing {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The metric with the speed the device reports itself.
    #[serde(default = "default_speed_metric")]
    pub speed_metric: String,
    /// Its unit: `km/h`, `m/s` or `knots`.
    #[serde(default = "default_speed_unit")]
    pub speed_unit: String,
    /// How far back fixes are compared with the newest one.
    #[serde(default = "default_spoofing_window")]
    pub window_secs: f64,
    /// Allowed on top of what the speed allows, for the error of two fixes.
    #[serde(default = "default_position_tolerance")]
    pub position_tolerance_m: f64,
    /// Allowed under-reporting of the speed, as a fraction (0.2: the distance the reported
    /// speed covers, plus 20 %).
    #[serde(default = "default_speed_tolerance")]
    pub speed_tolerance: f64,
    /// A metric with the altitude the device reports, to check its vertical rate too.
    pub altitude_metric: Option<String>,
    /// Its unit: `ft` or `m`.
    #[serde(default = "default_altitude_unit")]
    pub altitude_unit: String,
    /// The fastest climb or descent believed, in m/s (150: 30,000 ft/min, beyond any airliner
    /// and most fighters).
    #[serde(default = "default_max_vertical")]
    pub max_vertical_mps: f64,
    /// Distinct devices (of any profile with this check) reporting exactly the same fix, to
    /// the last digit, within `same_fix_within_ms` of each other, that make it evidence (one
    /// receiver-wide spoofer or a replayed stream); 2 to 4, 0 turns the check off.
    #[serde(default = "default_same_fix_devices")]
    pub same_fix_devices: usize,
    /// How close in event time the identical fixes must be.
    #[serde(default = "default_same_fix_within")]
    pub same_fix_within_ms: u64,
    /// Only fixes of a device reporting at least this speed count: two moving devices cannot
    /// be in one place, two parked ones may be reported at one surveyed spot.
    #[serde(default = "default_same_fix_min_speed")]
    pub same_fix_min_speed_kmh: f64,
    /// A device's event time this far behind its newest one (its clock jumped back, or old
    /// messages were replayed), or this far ahead of the message's arrival, is evidence; 0
    /// turns the check off.
    #[serde(default = "default_clock_jump")]
    pub clock_jump_secs: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeofenceBreach {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_restricted")]
    pub zones: Vec<String>,
    #[serde(default = "default_from")]
    pub allowed_from: String,
    #[serde(default = "default_until")]
    pub allowed_until: String,
    /// IANA name of the fleet's time zone, e.g. `Europe/Berlin`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnusualStop {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_speed_metric")]
    pub speed_metric: String,
    #[serde(default = "default_stop_speed")]
    pub speed_below_kmh: f64,
    #[serde(default = "default_stop_secs")]
    pub min_duration_secs: u64,
    #[serde(default = "default_safe_zones")]
    pub safe_zones: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_window() -> usize {
    120
}
fn default_threshold() -> f64 {
    5.0
}
fn default_persistence() -> usize {
    1
}
fn default_quiet_readings() -> usize {
    3
}
fn default_novelty_levels() -> usize {
    8
}
fn default_novelty_orders() -> usize {
    3
}
fn default_novelty_learning() -> usize {
    300
}
fn default_novelty_rest() -> u64 {
    200
}
fn default_novelty_threshold() -> f64 {
    0.2
}
fn default_novelty_history() -> u64 {
    8640
}
fn default_novelty_memory() -> u32 {
    14
}
/// Numenta's HTM detector in NAB calls a value 5 % of the range beyond every earlier value a
/// spatial anomaly.
fn default_novelty_extreme_margin() -> f64 {
    0.05
}
fn default_novelty_day_parts() -> u32 {
    24
}
fn default_trend_block_secs() -> u64 {
    60
}
fn default_trend_window_blocks() -> usize {
    120
}
fn default_trend_threshold() -> f64 {
    5.0
}
fn default_trend_history_blocks() -> usize {
    720
}
fn default_scope() -> String {
    "profile".into()
}
fn default_training_size() -> usize {
    20_000
}
fn default_holdout() -> f64 {
    0.25
}
fn default_contamination() -> f64 {
    0.05
}
fn default_trees() -> usize {
    100
}
fn default_max_speed() -> f64 {
    400.0
}
fn default_speed_unit() -> String {
    "km/h".into()
}
fn default_spoofing_window() -> f64 {
    60.0
}
fn default_position_tolerance() -> f64 {
    100.0
}
fn default_speed_tolerance() -> f64 {
    0.2
}
fn default_altitude_unit() -> String {
    "ft".into()
}
fn default_max_vertical() -> f64 {
    150.0
}
fn default_same_fix_devices() -> usize {
    2
}
fn default_same_fix_within() -> u64 {
    1000
}
fn default_same_fix_min_speed() -> f64 {
    5.0
}
fn default_clock_jump() -> f64 {
    60.0
}
fn default_restricted() -> Vec<String> {
    vec!["Restricted Area".into()]
}
fn default_from() -> String {
    "09:00".into()
}
fn default_until() -> String {
    "17:00".into()
}
fn default_time_zone() -> String {
    "UTC".into()
}
fn default_speed_metric() -> String {
    "speed".into()
}
fn default_stop_speed() -> f64 {
    5.0
}
fn default_stop_secs() -> u64 {
    1800
}
fn default_safe_zones() -> Vec<String> {
    vec!["Warehouse".into(), "Rest Area".into(), "Service Center".into()]
}

/// Which deviations of a signal from its window's mean count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Both,
    Above,
    Below,
}

/// One series the z-score watches: a metric's values, or their changes between readings.
#[derive(Debug, Clone, PartialEq)]
pub struct ZScoreSignal {
    pub metric: u16,
    /// The change since the entity's previous reading of the metric, not the value.
    pub diff: bool,
    /// `altitude`, or `altitude_diff` for the change.
    pub name: Arc<str>,
    /// The smallest σ used, in the metric's units; 0 leaves only a relative 1e-6 floor.
    pub sigma_floor: f64,
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZScoreSettings {
    /// The most readings a window holds.
    pub window: NonZeroUsize,
    /// With `window_secs`: how old (event time) a reading in the window may be, in ms.
    pub window_ms: Option<i64>,
    pub threshold: f64,
    /// What is watched, in the order readings are judged.
    pub signals: Vec<ZScoreSignal>,
    /// Readings a window holds before it judges (2 at least).
    pub min_history: usize,
    pub persistence: NonZeroUsize,
    pub quiet_readings: NonZeroUsize,
    /// 0 = off.
    pub stuck_after: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NoveltySettings {
    pub levels: usize,
    /// 1 to `detect::novelty::MAX_ORDERS`.
    pub orders: usize,
    /// At least 2.
    pub learning_readings: usize,
    pub rest_readings: u64,
    /// At least 1.
    pub history_readings: u64,
    /// In (0, 1].
    pub threshold: f64,
    /// 6 (one word) to 24.
    pub memory_bits_log2: u32,
    /// At least 0; infinite = off.
    pub extreme_margin: f64,
    /// 0 (off) to 1440 (by minute).
    pub day_parts: u32,
    /// Per metric of the profile: watched or not.
    pub watched: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrendSettings {
    /// At least 1000.
    pub block_ms: i64,
    /// At least `detect::trend::MIN_WINDOW_BLOCKS`.
    pub window_blocks: usize,
    /// Greater than 0.
    pub threshold: f64,
    /// At least 1.
    pub history_blocks: usize,
    pub learning_kinks: u64,
    /// The fit's filters for `window_blocks`.
    pub filters: Arc<crate::detect::trend::KinkFilters>,
    /// Per metric of the profile: watched or not.
    pub watched: Vec<bool>,
}

/// How an isolation-forest feature is computed from readings.
#[derive(Debug, Clone, PartialEq)]
pub enum Feature {
    Metric(u16),
    /// Change since the entity's previous reading.
    Diff(u16),
    /// Change of an angle in degrees since the previous reading, wrapped to ±180.
    AngleChange(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelScope {
    Profile,
    Entity,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IsolationForestSettings {
    pub features: Vec<Feature>,
    pub feature_names: Vec<Arc<str>>,
    pub scope: ModelScope,
    pub training_size: usize,
    /// In [0, 0.9]; 0 means the reference threshold by `contamination`.
    pub holdout: f64,
    pub contamination: f64,
    pub trees: usize,
    pub retrain_every: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeleportSettings {
    pub max_speed_kmh: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpoofingSettings {
    /// Where the reported speed is among the profile's metrics.
    pub speed_metric: crate::model::MetricId,
    /// Multiplies the reported speed into km/h.
    pub to_kmh: f64,
    pub window_ms: i64,
    pub position_tolerance_km: f64,
    pub speed_tolerance: f64,
    /// The altitude metric and the factor that makes it metres, when watched.
    pub altitude: Option<(crate::model::MetricId, f64)>,
    pub max_vertical_mps: f64,
    /// The fleet-wide check of identical fixes, when on.
    pub same_fix: Option<SameFixSettings>,
    /// The clock check's limit, when on.
    pub clock_jump_ms: Option<i64>,
}

/// When identical fixes of several devices are evidence (`detect::rules::spoofing`).
#[derive(Debug, Clone, PartialEq)]
pub struct SameFixSettings {
    /// 2 to `detect::fleet::MAX_DEVICES_COUNTED`.
    pub devices: usize,
    pub within_ms: i64,
    pub min_speed_kmh: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GeofenceBreachSettings {
    pub zones: Vec<String>,
    pub allowed_from: NaiveTime,
    pub allowed_until: NaiveTime,
    pub time_zone: Tz,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnusualStopSettings {
    pub speed_metric: u16,
    pub speed_below_kmh: f64,
    pub min_duration_ms: i64,
    pub safe_zones: Vec<String>,
}

/// Every detector's validated settings for one profile; `None` means off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorSettings {
    pub zscore: Option<ZScoreSettings>,
    pub isolation_forest: Option<IsolationForestSettings>,
    pub teleport: Option<TeleportSettings>,
    pub spoofing: Option<SpoofingSettings>,
    pub geofence_breach: Option<GeofenceBreachSettings>,
    pub unusual_stop: Option<UnusualStopSettings>,
    pub novelty: Option<NoveltySettings>,
    pub trend: Option<TrendSettings>,
}

/// What validation needs to know about the profile.
pub struct ProfileShape<'a> {
    pub metric_names: Vec<&'a str>,
    pub has_position: bool,
    pub enriches_zones: bool,
}

impl RawDetectors {
    /// Validates every detector's settings, pushing each problem to `errors`.
    pub fn validate(self, shape: &ProfileShape<'_>, errors: &mut Vec<String>) -> DetectorSettings {
        let metric = |name: &str, what: &str, errors: &mut Vec<String>| -> Option<u16> {
            let found = shape.metric_names.iter().position(|m| *m == name).map(|i| i as u16);
            if found.is_none() {
                errors.push(format!("{what}: unknown metric `{name}`; the profile has {:?}", shape.metric_names));
            }
            found
        };
        let zscore = self.zscore.unwrap_or_default().validate(shape, errors);
        let isolation_forest = self.isolation_forest.filter(|f| f.enabled).map(|raw| {
            let mut features = Vec::new();
            for name in &raw.features {
                let feature = if let Some(base) = name.strip_suffix("_diff").filter(|b| shape.metric_names.contains(b))
                {
                    metric(base, "detectors.isolation_forest.features", errors).map(Feature::Diff)
                } else if let Some(base) = name.strip_suffix("_change").filter(|b| shape.metric_names.contains(b)) {
                    metric(base, "detectors.isolation_forest.features", errors).map(Feature::AngleChange)
                } else {
                    metric(name, "detectors.isolation_forest.features", errors).map(Feature::Metric)
                };
                features.extend(feature);
            }
            let scope = match raw.scope.as_str() {
                "profile" => ModelScope::Profile,
                "entity" => ModelScope::Entity,
                other => {
                    errors.push(format!("detectors.isolation_forest.scope {other:?}: use \"profile\" or \"entity\""));
                    ModelScope::Profile
                }
            };
            if raw.features.is_empty() || raw.training_size < 2 || raw.trees == 0 {
                errors.push("detectors.isolation_forest: needs features, training_size >= 2 and trees >= 1".into());
            }
            if !(0.0..=0.9).contains(&raw.holdout) || raw.training_size as f64 * (1.0 - raw.holdout) < 2.0 {
                errors.push(format!(
                    "detectors.isolation_forest.holdout {} must lie in [0, 0.9] and leave at least 2 of the {} training readings to grow trees",
                    raw.holdout, raw.training_size
                ));
            }
            if !(raw.contamination > 0.0 && raw.contamination < 0.5) {
                errors.push(format!(
                    "detectors.isolation_forest.contamination {} must lie in (0, 0.5)",
                    raw.contamination
                ));
            }
            IsolationForestSettings {
                features,
                feature_names: raw.features.iter().map(|f| Arc::from(f.as_str())).collect(),
                scope,
                training_size: raw.training_size,
                holdout: raw.holdout,
                contamination: raw.contamination,
                trees: raw.trees,
                retrain_every: raw.retrain_every,
                seed: raw.seed,
            }
        });
        let teleport = self.teleport.filter(|t| t.enabled).map(|raw| {
            if !shape.has_position {
                errors.push("detectors.teleport needs latitude_field and longitude_field".into());
            }
            if raw.max_speed_kmh.is_nan() || raw.max_speed_kmh <= 0.0 {
                errors.push(format!("detectors.teleport.max_speed_kmh {} must be above 0", raw.max_speed_kmh));
            }
            TeleportSettings { max_speed_kmh: raw.max_speed_kmh }
        });
        let spoofing = self.spoofing.filter(|s| s.enabled).map(|raw| {
            if !shape.has_position {
                errors.push("detectors.spoofing needs latitude_field and longitude_field".into());
            }
            let speed_metric = match shape.metric_names.iter().position(|m| *m == raw.speed_metric) {
                Some(index) => index as crate::model::MetricId,
                None => {
                    errors.push(format!(
                        "detectors.spoofing.speed_metric {:?} is not a metric of the profile; its metrics: {:?}",
                        raw.speed_metric, shape.metric_names
                    ));
                    0
                }
            };
            let to_kmh = match raw.speed_unit.as_str() {
                "km/h" => 1.0,
                "m/s" => 3.6,
                "knots" => 1.852,
                other => {
                    errors.push(format!("detectors.spoofing.speed_unit {other:?}: use km/h, m/s or knots"));
                    1.0
                }
            };
            for (name, value) in [
                ("window_secs", raw.window_secs),
                ("position_tolerance_m", raw.position_tolerance_m),
                ("speed_tolerance", raw.speed_tolerance),
            ] {
                if !(value.is_finite() && value >= 0.0) || (name == "window_secs" && value <= 0.0) {
                    errors.push(format!("detectors.spoofing.{name} {value} must be a positive number"));
                }
            }
            let altitude = raw.altitude_metric.as_ref().map(|name| {
                let index = shape.metric_names.iter().position(|m| m == name).unwrap_or_else(|| {
                    errors.push(format!(
                        "detectors.spoofing.altitude_metric {name:?} is not a metric of the profile; its metrics: {:?}",
                        shape.metric_names
                    ));
                    0
                });
                let to_m = match raw.altitude_unit.as_str() {
                    "ft" => 0.3048,
                    "m" => 1.0,
                    other => {
                        errors.push(format!("detectors.spoofing.altitude_unit {other:?}: use ft or m"));
                        1.0
                    }
                };
                (index as crate::model::MetricId, to_m)
            });
            if !(raw.max_vertical_mps.is_finite() && raw.max_vertical_mps > 0.0) {
                errors.push(format!("detectors.spoofing.max_vertical_mps {} must be above 0", raw.max_vertical_mps));
            }
            let most_devices = crate::detect::fleet::MAX_DEVICES_COUNTED;
            if raw.same_fix_devices == 1 || raw.same_fix_devices > most_devices {
                errors.push(format!(
                    "detectors.spoofing.same_fix_devices {} must be 0 (off) or from 2 to {most_devices}",
                    raw.same_fix_devices
                ));
            }
            if !(raw.same_fix_min_speed_kmh.is_finite() && raw.same_fix_min_speed_kmh >= 0.0) {
                errors.push(format!(
                    "detectors.spoofing.same_fix_min_speed_kmh {} must be 0 or more",
                    raw.same_fix_min_speed_kmh
                ));
            }
            if !(raw.clock_jump_secs.is_finite() && raw.clock_jump_secs >= 0.0) {
                errors.push(format!(
                    "detectors.spoofing.clock_jump_secs {} must be 0 (off) or more",
                    raw.clock_jump_secs
                ));
            }
            let same_fix = (raw.same_fix_devices >= 2).then(|| SameFixSettings {
                devices: raw.same_fix_devices.min(most_devices),
                within_ms: i64::try_from(raw.same_fix_within_ms).unwrap_or(i64::MAX),
                min_speed_kmh: raw.same_fix_min_speed_kmh,
            });
            SpoofingSettings {
                same_fix,
                clock_jump_ms: (raw.clock_jump_secs > 0.0).then_some((raw.clock_jump_secs * 1000.0) as i64),
                altitude,
                max_vertical_mps: raw.max_vertical_mps,
                speed_metric,
                to_kmh,
                window_ms: (raw.window_secs * 1000.0) as i64,
                position_tolerance_km: raw.position_tolerance_m / 1000.0,
                speed_tolerance: raw.speed_tolerance,
            }
        });
        let geofence_breach = self.geofence_breach.filter(|g| g.enabled).map(|raw| {
            if !shape.enriches_zones {
                errors.push("detectors.geofence_breach needs enrich = [\"geofences\"]".into());
            }
            let mut time = |text: &str, what: &str| {
                NaiveTime::parse_from_str(text, "%H:%M").unwrap_or_else(|_| {
                    errors.push(format!("detectors.geofence_breach.{what} {text:?} is not HH:MM"));
                    NaiveTime::MIN
                })
            };
            let allowed_from = time(&raw.allowed_from, "allowed_from");
            let allowed_until = time(&raw.allowed_until, "allowed_until");
            let time_zone = raw.time_zone.parse::<Tz>().unwrap_or_else(|_| {
                errors.push(format!(
                    "detectors.geofence_breach.time_zone {:?} is not an IANA time zone (e.g. Europe/Berlin)",
                    raw.time_zone
                ));
                Tz::UTC
            });
            GeofenceBreachSettings { zones: raw.zones, allowed_from, allowed_until, time_zone }
        });
        let unusual_stop = self.unusual_stop.filter(|s| s.enabled).map(|raw| {
            let speed_metric = metric(&raw.speed_metric, "detectors.unusual_stop.speed_metric", errors).unwrap_or(0);
            if !shape.enriches_zones {
                errors.push("detectors.unusual_stop needs enrich = [\"geofences\"]".into());
            }
            UnusualStopSettings {
                speed_metric,
                speed_below_kmh: raw.speed_below_kmh,
                min_duration_ms: (raw.min_duration_secs as i64).saturating_mul(1000),
                safe_zones: raw.safe_zones,
            }
        });
        let novelty = self.novelty.filter(|n| n.enabled).map(|raw| {
            let max_orders = crate::detect::novelty::MAX_ORDERS;
            if raw.levels == 0 || raw.orders == 0 || raw.orders > max_orders || raw.learning_readings < 2 {
                errors.push(format!(
                    "detectors.novelty: levels {} must be at least 1, orders {} from 1 to {max_orders}, \
                     learning_readings {} at least 2",
                    raw.levels, raw.orders, raw.learning_readings
                ));
            }
            if !(raw.threshold > 0.0 && raw.threshold <= 1.0) {
                errors.push(format!("detectors.novelty.threshold {} must lie in (0, 1]", raw.threshold));
            }
            if !(6..=24).contains(&raw.memory_bits_log2) {
                errors.push(format!(
                    "detectors.novelty.memory_bits_log2 {} must lie from 6 (8 bytes) to 24 (2 MiB per filter)",
                    raw.memory_bits_log2
                ));
            }
            if raw.extreme_margin.is_nan() || raw.extreme_margin < 0.0 {
                errors.push(format!(
                    "detectors.novelty.extreme_margin {} must be 0 or more (inf turns it off)",
                    raw.extreme_margin
                ));
            }
            if raw.day_parts > 1440 {
                errors.push(format!(
                    "detectors.novelty.day_parts {} must lie from 0 (off) to 1440 (by minute)",
                    raw.day_parts
                ));
            }
            let mut watched = vec![raw.metrics.is_none(); shape.metric_names.len()];
            for name in raw.metrics.iter().flatten() {
                if let Some(index) = metric(name, "detectors.novelty.metrics", errors) {
                    watched[usize::from(index)] = true;
                }
            }
            NoveltySettings {
                levels: raw.levels.max(1),
                orders: raw.orders.clamp(1, max_orders),
                learning_readings: raw.learning_readings.max(2),
                rest_readings: raw.rest_readings,
                history_readings: raw.history_readings,
                threshold: raw.threshold,
                memory_bits_log2: raw.memory_bits_log2.clamp(6, 24),
                extreme_margin: raw.extreme_margin,
                day_parts: raw.day_parts.min(1440),
                watched,
            }
        });
        let trend = self.trend.filter(|t| t.enabled).map(|raw| {
            let min_window = crate::detect::trend::MIN_WINDOW_BLOCKS;
            if raw.block_secs == 0 || raw.window_blocks < min_window || raw.history_blocks == 0 {
                errors.push(format!(
                    "detectors.trend: block_secs {} must be at least 1, window_blocks {} at least {min_window}, \
                     history_blocks {} at least 1",
                    raw.block_secs, raw.window_blocks, raw.history_blocks
                ));
            }
            if !(raw.threshold > 0.0 && raw.threshold.is_finite()) {
                errors.push(format!("detectors.trend.threshold {} must be a number above 0", raw.threshold));
            }
            let mut watched = vec![raw.metrics.is_none(); shape.metric_names.len()];
            for name in raw.metrics.iter().flatten() {
                if let Some(index) = metric(name, "detectors.trend.metrics", errors) {
                    watched[usize::from(index)] = true;
                }
            }
            let window_blocks = raw.window_blocks.max(min_window);
            TrendSettings {
                block_ms: (raw.block_secs.max(1) as i64).saturating_mul(1000),
                window_blocks,
                threshold: raw.threshold,
                history_blocks: raw.history_blocks.max(1),
                learning_kinks: raw.learning_blocks.unwrap_or(window_blocks as u64),
                filters: Arc::new(crate::detect::trend::KinkFilters::new(window_blocks)),
                watched,
            }
        });
        DetectorSettings { zscore, isolation_forest, teleport, spoofing, geofence_breach, unusual_stop, novelty, trend }
    }
}

impl RawZScore {
    /// The validated settings, or `None` when off; each problem goes to `errors`.
    fn validate(self, shape: &ProfileShape<'_>, errors: &mut Vec<String>) -> Option<ZScoreSettings> {
        if !self.enabled {
            return None;
        }
        let window = NonZeroUsize::new(self.window).filter(|w| w.get() >= 2);
        if window.is_none() || self.threshold.is_nan() || self.threshold <= 0.0 {
            errors.push(format!(
                "detectors.zscore: window {} must be at least 2 and threshold {} above 0",
                self.window, self.threshold
            ));
        }
        let window_ms = self.window_secs.map(|secs| {
            if !(secs.is_finite() && secs >= 0.001) {
                errors.push(format!(
                    "detectors.zscore.window_secs {secs} must be a number of seconds of at least 0.001 \
                     (leave it out for a window of `window` readings only)"
                ));
            }
            (secs * 1000.0).round().max(1.0) as i64
        });
        let min_history = self.min_history.unwrap_or(self.window);
        if min_history < 2 || min_history > self.window {
            errors.push(format!(
                "detectors.zscore.min_history {min_history} must lie between 2 and the window ({})",
                self.window
            ));
        }
        let (Some(persistence), Some(quiet_readings)) =
            (NonZeroUsize::new(self.persistence), NonZeroUsize::new(self.quiet_readings))
        else {
            errors.push("detectors.zscore: persistence and quiet_readings must be at least 1".into());
            return None;
        };
        if self.stuck_after == 1 {
            errors
                .push("detectors.zscore.stuck_after 1 would call every reading stuck: use 0 (off) or 2 or more".into());
        }
        let names: Vec<String> = match self.metrics {
            Some(names) => names,
            None => shape.metric_names.iter().map(|m| m.to_string()).collect(),
        };
        let mut signals = Vec::new();
        for name in &names {
            let (base, diff) = match name.strip_suffix("_diff").filter(|b| shape.metric_names.contains(b)) {
                Some(base) => (base, true),
                None => (name.as_str(), false),
            };
            let Some(metric) = shape.metric_names.iter().position(|m| *m == base) else {
                errors.push(format!(
                    "detectors.zscore.metrics: unknown metric `{name}`; the profile has {:?} (add `_diff` for changes)",
                    shape.metric_names
                ));
                continue;
            };
            signals.push(ZScoreSignal {
                metric: metric as u16,
                diff,
                name: Arc::from(name.as_str()),
                sigma_floor: 0.0,
                direction: Direction::Both,
            });
        }
        let unwatched = |what: &str, name: &str, errors: &mut Vec<String>| {
            errors.push(format!(
                "detectors.zscore.{what}: `{name}` is not watched; watched: {:?}",
                names.iter().map(String::as_str).collect::<Vec<_>>()
            ));
        };
        for (name, floor) in &self.sigma_floor {
            if !(floor.is_finite() && *floor >= 0.0) {
                errors.push(format!("detectors.zscore.sigma_floor.{name} {floor} must be 0 or more"));
            }
            match signals.iter_mut().find(|s| &*s.name == name) {
                Some(signal) => signal.sigma_floor = *floor,
                None => unwatched("sigma_floor", name, errors),
            }
        }
        for (name, direction) in &self.direction {
            let parsed = match direction.as_str() {
                "both" => Direction::Both,
                "above" => Direction::Above,
                "below" => Direction::Below,
                other => {
                    errors.push(format!(
                        "detectors.zscore.direction.{name} {other:?}: use \"both\", \"above\" or \"below\""
                    ));
                    continue;
                }
            };
            match signals.iter_mut().find(|s| &*s.name == name) {
                Some(signal) => signal.direction = parsed,
                None => unwatched("direction", name, errors),
            }
        }
        window.map(|window| ZScoreSettings {
            window,
            window_ms,
            threshold: self.threshold,
            signals,
            min_history: min_history.clamp(2, window.get()),
            persistence,
            quiet_readings,
            stuck_after: self.stuck_after,
        })
    }
}
