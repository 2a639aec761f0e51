//! Profiles as data: how one kind of device speaks (schema, field mapping, detectors).
//!
//! The built-in profiles live in `profiles/builtin.toml` and are parsed by the same code that
//! reads a user's `[profiles.NAME]` tables, so a user adds a device kind without writing Rust.

use crate::detect::settings::{DetectorSettings, ProfileShape, RawDetectors};
use crate::model::{MetricId, ProfileId};
use crate::schema::AvroDecoder;
use crate::time::TimeFormat;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

const BUILTIN_PROFILES: &str = include_str!("../profiles/builtin.toml");

/// A profile as written in TOML, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    #[serde(default)]
    pub description: String,
    pub entity_field: String,
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    #[serde(default)]
    pub timestamp_format: TimeFormat,
    pub latitude_field: Option<String>,
    pub longitude_field: Option<String>,
    /// Long format: the field that names the metric (e.g. `metric_type`)...
    pub metric_name_field: Option<String>,
    /// ...and the field that holds its value (e.g. `value`).
    pub metric_value_field: Option<String>,
    #[serde(default)]
    pub metrics: Vec<RawMetric>,
    #[serde(default)]
    pub attributes: Vec<RawAttribute>,
    #[serde(default)]
    pub enrich: Vec<String>,
    #[serde(default)]
    pub detectors: RawDetectors,
    /// An Avro schema file (`.avsc`) for this profile's binary messages; by default the
    /// profile's own generated schema (`teleguard schema export NAME`) is the one accepted.
    pub avro_schema_file: Option<PathBuf>,
    /// Every message is a bare Avro datum of `avro_schema_file`, without the single-object
    /// header (as a producer with a fixed writer schema sends them); JSON is then refused.
    #[serde(default)]
    pub avro_bare_datums: bool,
    /// The text of `avro_schema_file`, read by the config loader (this crate does no I/O).
    #[serde(skip)]
    pub avro_schema_text: Option<String>,
    /// A JSON Schema file every JSON message of this profile must also pass (after the
    /// profile's own checks), e.g. one the devices' makers publish.
    pub json_schema_file: Option<PathBuf>,
    /// The text of `json_schema_file`, read by the config loader.
    #[serde(skip)]
    pub json_schema_text: Option<String>,
    /// An entity of this profile is offline once silent this long; by default
    /// [`SILENCE_MULTIPLE`] times its usual interval, at least [`SILENCE_FLOOR`].
    pub offline_after_secs: Option<std::num::NonZeroU64>,
    /// Whether going offline raises an `offline` alert (resolved when the entity is back);
    /// true by default. Off for entities that end, such as flights.
    #[serde(default = "default_offline_alert")]
    pub offline_alert: bool,
}

fn default_offline_alert() -> bool {
    true
}

/// An entity silent for this many of its usual intervals is offline (by default).
pub const SILENCE_MULTIPLE: u32 = 5;
/// The shortest default silence threshold, so a fast reporter is not offline after one hiccup.
pub const SILENCE_FLOOR: std::time::Duration = std::time::Duration::from_secs(30);

fn default_timestamp_field() -> String {
    "timestamp".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    pub field: String,
    #[serde(default)]
    pub unit: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(default = "yes")]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttribute {
    pub field: String,
    /// When set, the only values accepted.
    pub values: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub id: ProfileId,
    pub name: Arc<str>,
    pub description: String,
    pub entity_field: String,
    pub timestamp_field: String,
    pub timestamp_format: TimeFormat,
    pub position: Option<PositionFields>,
    pub metric_selector: Option<MetricSelector>,
    pub metrics: Vec<MetricSpec>,
    pub attributes: Vec<AttributeSpec>,
    pub enrich_drivers: bool,
    pub enrich_geofences: bool,
    pub detectors: DetectorSettings,
    /// Where validation finds each field in a message.
    pub layout: crate::validate::Layout,
    /// How Avro messages of this profile are read (see [`crate::schema::AvroDecoder`]).
    pub avro: Option<Arc<AvroDecoder>>,
    /// The user's JSON Schema its messages must also pass, if the profile names one.
    pub json_schema: Option<crate::schema::JsonSchemaCheck>,
    /// The configured silence threshold, if any (see [`Profile::silence_threshold`]).
    pub offline_after: Option<std::time::Duration>,
    /// Whether going offline raises an `offline` alert.
    pub offline_alert: bool,
}

impl Profile {
    /// How long an entity of this profile that usually reports every `usual_interval` may be
    /// silent before it counts as offline.
    pub fn silence_threshold(&self, usual_interval: Option<std::time::Duration>) -> std::time::Duration {
        if let Some(configured) = self.offline_after {
            return configured;
        }
        usual_interval.map_or(SILENCE_FLOOR, |usual| (usual * SILENCE_MULTIPLE).max(SILENCE_FLOOR))
    }
}

#[derive(Debug, Clone)]
pub struct PositionFields {
    pub latitude: String,
    pub longitude: String,
}

/// Long-format messages carry one metric named by `name_field` with its value in `value_field`.
#[derive(Debug, Clone)]
pub struct MetricSelector {
    pub name_field: String,
    pub value_field: String,
}

#[derive(Debug, Clone)]
pub struct MetricSpec {
    pub name: Arc<str>,
    pub unit: String,
    pub min: f64,
    pub max: f64,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct AttributeSpec {
    pub name: Arc<str>,
    pub values: Option<Vec<String>>,
    pub required: bool,
}

impl Profile {
    pub fn metric_id(&self, name: &str) -> Option<MetricId> {
        self.metrics.iter().position(|m| &*m.name == name).map(|i| i as MetricId)
    }

    pub fn metric_name(&self, id: MetricId) -> &Arc<str> {
        &self.metrics[usize::from(id)].name
    }

    pub fn attribute_name(&self, id: u16) -> &Arc<str> {
        &self.attributes[usize::from(id)].name
    }

    /// Checks a raw profile; all problems are collected, each naming the profile and field.
    fn from_raw(id: ProfileId, name: &str, raw: RawProfile, errors: &mut Vec<String>) -> Option<Profile> {
        let start = errors.len();
        let mut fail = |message: String| errors.push(format!("profile `{name}`: {message}"));
        if raw.entity_field.trim().is_empty() {
            fail("entity_field must not be empty".into());
        }
        let position = match (raw.latitude_field, raw.longitude_field) {
            (Some(latitude), Some(longitude)) => Some(PositionFields { latitude, longitude }),
            (None, None) => None,
            _ => {
                fail("set both latitude_field and longitude_field, or neither".into());
                None
            }
        };
        let metric_selector = match (raw.metric_name_field, raw.metric_value_field) {
            (Some(name_field), Some(value_field)) => Some(MetricSelector { name_field, value_field }),
            (None, None) => None,
            _ => {
                fail("set both metric_name_field and metric_value_field, or neither".into());
                None
            }
        };
        let mut metrics = Vec::new();
        for metric in raw.metrics {
            let min = metric.min.unwrap_or(f64::MIN);
            let max = metric.max.unwrap_or(f64::MAX);
            if min.is_nan() || max.is_nan() || min > max {
                fail(format!("metric `{}`: min {min} must not exceed max {max}", metric.field));
            }
            if metrics.iter().any(|m: &MetricSpec| *m.name == metric.field) {
                fail(format!("metric `{}` is listed twice", metric.field));
            }
            metrics.push(MetricSpec {
                name: metric.field.into(),
                unit: metric.unit,
                min,
                max,
                required: metric.required,
            });
        }
        if metrics.len() > usize::from(MetricId::MAX) {
            fail(format!("{} metrics is too many", metrics.len()));
        }
        let attributes = raw
            .attributes
            .into_iter()
            .map(|a| AttributeSpec { name: a.field.into(), values: a.values, required: a.required })
            .collect();
        let mut enrich_drivers = false;
        let mut enrich_geofences = false;
        for source in &raw.enrich {
            match source.as_str() {
                "drivers" => enrich_drivers = true,
                "geofences" => enrich_geofences = true,
                other => fail(format!("unknown enrichment `{other}`: use \"drivers\" or \"geofences\"")),
            }
        }
        if enrich_geofences && position.is_none() {
            fail("geofence enrichment needs latitude_field and longitude_field".into());
        }
        let shape = ProfileShape {
            metric_names: metrics.iter().map(|m: &MetricSpec| &*m.name).collect(),
            has_position: position.is_some(),
            enriches_zones: enrich_geofences,
        };
        let mut detector_errors = Vec::new();
        let detectors = raw.detectors.validate(&shape, &mut detector_errors);
        for error in detector_errors {
            fail(error);
        }
        let configured_avro = match (&raw.avro_schema_file, raw.avro_schema_text, raw.avro_bare_datums) {
            (Some(path), Some(text), bare) => AvroDecoder::new(&text, bare)
                .map_err(|e| fail(format!("avro_schema_file {}: {e}", path.display())))
                .ok(),
            (Some(path), None, _) => {
                fail(format!("avro_schema_file {} was not read (only the config loader reads files)", path.display()));
                None
            }
            (None, _, true) => {
                fail("avro_bare_datums needs the writer schema in avro_schema_file".into());
                None
            }
            (None, _, false) => None,
        };
        let json_schema = match (&raw.json_schema_file, raw.json_schema_text) {
            (Some(path), Some(text)) => crate::schema::JsonSchemaCheck::new(&text, &path.display().to_string())
                .map_err(|e| fail(format!("json_schema_file {}: {e}", path.display())))
                .ok(),
            (Some(path), None) => {
                fail(format!("json_schema_file {} was not read (only the config loader reads files)", path.display()));
                None
            }
            (None, _) => None,
        };
        if errors.len() > start {
            return None;
        }
        let mut profile = Profile {
            id,
            name: name.into(),
            description: raw.description,
            entity_field: raw.entity_field,
            timestamp_field: raw.timestamp_field,
            timestamp_format: raw.timestamp_format,
            position,
            metric_selector,
            metrics,
            attributes,
            enrich_drivers,
            enrich_geofences,
            detectors,
            layout: Default::default(),
            avro: None,
            json_schema,
            offline_after: raw.offline_after_secs.map(|secs| std::time::Duration::from_secs(secs.get())),
            offline_alert: raw.offline_alert,
        };
        profile.layout = crate::validate::Layout::of(&profile);
        let avro = configured_avro.unwrap_or_else(|| AvroDecoder::for_profile(&profile));
        profile.avro = Some(Arc::new(avro));
        Some(profile)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    profiles: BTreeMap<String, RawProfile>,
}

/// The profiles a pipeline knows, addressable by name and by [`ProfileId`].
#[derive(Debug, Clone)]
pub struct ProfileRegistry {
    profiles: Vec<Arc<Profile>>,
}

/// Every problem found in a set of profile definitions.
#[derive(Debug, thiserror::Error)]
#[error("invalid profiles:\n  {}", .0.join("\n  "))]
pub struct ProfileErrors(pub Vec<String>);

/// The names of the built-in profiles, in the order the registry numbers them.
pub const BUILTIN_PROFILE_NAMES: [&str; 5] = ["vehicle", "drone", "aircraft", "environment", "vibration"];

impl ProfileRegistry {
    /// The built-in profiles plus `extra` ones from a config file; an extra profile with a
    /// built-in name replaces the built-in one.
    pub fn with_builtins(extra: BTreeMap<String, RawProfile>) -> Result<Self, ProfileErrors> {
        let builtin: ProfileFile = toml::from_str(BUILTIN_PROFILES).expect("built-in profiles parse");
        let mut raw: Vec<(String, RawProfile)> = Vec::new();
        for name in BUILTIN_PROFILE_NAMES {
            raw.push((name.to_string(), builtin.profiles[name].clone()));
        }
        for (name, profile) in extra {
            match raw.iter_mut().find(|(existing, _)| *existing == name) {
                Some(slot) => slot.1 = profile,
                None => raw.push((name, profile)),
            }
        }
        Self::from_raw(raw)
    }

    fn from_raw(raw: Vec<(String, RawProfile)>) -> Result<Self, ProfileErrors> {
        let mut errors = Vec::new();
        let mut profiles = Vec::new();
        for (index, (name, profile)) in raw.into_iter().enumerate() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                errors.push(format!("profile name {name:?} must be letters, digits, '_' or '-'"));
                continue;
            }
            let Ok(id) = ProfileId::try_from(index) else {
                errors.push("too many profiles".into());
                break;
            };
            if let Some(p) = Profile::from_raw(id, &name, profile, &mut errors) {
                profiles.push(Arc::new(p));
            }
        }
        if errors.is_empty() { Ok(ProfileRegistry { profiles }) } else { Err(ProfileErrors(errors)) }
    }

    pub fn get(&self, id: ProfileId) -> &Arc<Profile> {
        &self.profiles[usize::from(id)]
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.iter().find(|p| &*p.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.profiles.iter()
    }

    /// The same profiles with only the named detectors left on (e.g. `["zscore"]`).
    pub fn keeping_detectors(&self, keep: &[&str]) -> ProfileRegistry {
        let profiles = self
            .profiles
            .iter()
            .map(|p| {
                let mut profile = (**p).clone();
                let d = &mut profile.detectors;
                let off = |name: &str| !keep.contains(&name);
                if off(crate::detect::zscore::NAME) {
                    d.zscore = None;
                }
                if off(crate::detect::isolation_forest::NAME) {
                    d.isolation_forest = None;
                }
                if off(crate::detect::novelty::NAME) {
                    d.novelty = None;
                }
                if off(crate::detect::trend::NAME) {
                    d.trend = None;
                }
                if off(crate::detect::rules::teleport::NAME) {
                    d.teleport = None;
                }
                if off(crate::detect::rules::spoofing::NAME) {
                    d.spoofing = None;
                }
                if off(crate::detect::rules::geofence::NAME) {
                    d.geofence_breach = None;
                }
                if off(crate::detect::rules::stop::NAME) {
                    d.unusual_stop = None;
                }
                Arc::new(profile)
            })
            .collect();
        ProfileRegistry { profiles }
    }

    pub fn names(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| &*p.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load_in_order_with_reference_field_names() {
        let registry = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        assert_eq!(registry.names(), BUILTIN_PROFILE_NAMES.to_vec());
        let vehicle = registry.by_name("vehicle").unwrap();
        assert_eq!(vehicle.entity_field, "vehicle_id");
        assert!(vehicle.enrich_drivers && vehicle.enrich_geofences);
        let drone = registry.by_name("drone").unwrap();
        assert_eq!(drone.metrics.len(), 7);
        assert_eq!(drone.timestamp_format, TimeFormat::EpochMillis);
        let environment = registry.by_name("environment").unwrap();
        assert_eq!(environment.metric_selector.as_ref().unwrap().name_field, "metric_type");
        assert_eq!(registry.by_name("aircraft").unwrap().position.as_ref().unwrap().latitude, "lat");
    }

    #[test]
    fn user_profile_is_added_and_errors_are_collected() {
        let extra: ProfileFile = toml::from_str(
            r#"
            [profiles.pump]
            entity_field = "pump_id"
            metrics = [{ field = "flow", min = 0, max = 10 }]
            [profiles.broken]
            entity_field = ""
            latitude_field = "lat"
            metrics = [{ field = "x", min = 5, max = 1 }]
            "#,
        )
        .unwrap();
        let err = ProfileRegistry::with_builtins(extra.profiles).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.to_string().contains("profile `broken`: entity_field must not be empty"));
    }

    #[test]
    fn silence_threshold_is_five_usual_intervals_above_a_floor_unless_configured() {
        use std::time::Duration;
        let extra: ProfileFile = toml::from_str(
            "[profiles.pump]\nentity_field = \"pump_id\"\nmetrics = [{ field = \"flow\" }]\noffline_after_secs = 600\n",
        )
        .unwrap();
        let registry = ProfileRegistry::with_builtins(extra.profiles).unwrap();
        let vehicle = registry.by_name("vehicle").unwrap();
        assert_eq!(vehicle.silence_threshold(Some(Duration::from_secs(10))), Duration::from_secs(50));
        assert_eq!(vehicle.silence_threshold(Some(Duration::from_secs(1))), SILENCE_FLOOR);
        assert_eq!(vehicle.silence_threshold(None), SILENCE_FLOOR);
        let pump = registry.by_name("pump").unwrap();
        assert_eq!(pump.silence_threshold(Some(Duration::from_secs(10))), Duration::from_secs(600));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<ProfileFile, _> = toml::from_str("[profiles.x]\nentity_field = \"id\"\nentity = 1\n");
        assert!(parsed.unwrap_err().to_string().contains("unknown field `entity`"));
    }
}
