//! Readings and anomalies as they travel on Kafka topics: a reading in its profile's own field
//! names (what the device sent, so the next role validates it like any message), plus
//! `driver_name` and `current_zone` once enriched (reference 000's enriched event); an anomaly
//! as reference 002's row with its stable id, and read back by the serving role.

use crate::sinks::{AnomalyRecord, ReadingRecord};
use crate::store::GoldRow;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use teleguard_core::model::{Anomaly, Episode, Severity};
use teleguard_core::profile::{Profile, ProfileRegistry};
use teleguard_core::time::{TimeFormat, format_millis};
use teleguard_core::validate::{MAX_ENTITY_BYTES, Rejection};

/// The longest anomaly id accepted from a topic (teleguard's own are 28 characters).
const MAX_ANOMALY_ID_BYTES: usize = 128;

/// Every detector whose anomalies a serving process takes: the shipped detectors, the identity
/// check of rejected messages and the fleet watch's `offline`.
fn known_detector(name: &str) -> Option<&'static str> {
    teleguard_core::detect::DETECTOR_NAMES
        .into_iter()
        .chain([teleguard_core::detect::identity::NAME, crate::fleet_watch::OFFLINE])
        .find(|known| *known == name)
}

/// One field of an outgoing reading: a value made here, or one copied as the store holds it.
#[derive(Serialize)]
#[serde(untagged)]
enum Field<'a> {
    Made(Value),
    Stored(&'a RawValue),
}

/// `record` as a message of `profile`; `enriched` adds the enrichment fields. The stored
/// metrics and attributes are copied as text (no number is parsed and written again) into an
/// object ordered and keyed as a `serde_json::Map` would be: fields sorted by name, a later
/// one of the same name replacing an earlier one.
pub fn reading_payload(profile: &Profile, record: &ReadingRecord, enriched: bool) -> Vec<u8> {
    let mut object: BTreeMap<String, Field<'_>> = BTreeMap::new();
    object.insert(profile.entity_field.clone(), Field::Made(Value::from(record.entity_id.as_str())));
    let timestamp = match profile.timestamp_format {
        TimeFormat::EpochMillis => Value::from(record.timestamp_ms),
        TimeFormat::EpochSeconds => Value::from(record.timestamp_ms as f64 / 1000.0),
        TimeFormat::Auto | TimeFormat::Iso8601 => Value::from(format_millis(record.timestamp_ms)),
    };
    object.insert(profile.timestamp_field.clone(), Field::Made(timestamp));
    if let (Some(position), Some(lat), Some(lon)) = (&profile.position, record.latitude, record.longitude) {
        object.insert(position.latitude.clone(), Field::Made(Value::from(lat)));
        object.insert(position.longitude.clone(), Field::Made(Value::from(lon)));
    }
    let metrics: BTreeMap<String, &RawValue> = serde_json::from_str(&record.metrics).unwrap_or_default();
    match &profile.metric_selector {
        // Long format: one metric per message, named in one field, its value in another.
        Some(selector) => {
            if let Some((name, value)) = metrics.into_iter().next() {
                object.insert(selector.name_field.clone(), Field::Made(Value::from(name)));
                object.insert(selector.value_field.clone(), Field::Stored(value));
            }
        }
        None => object.extend(metrics.into_iter().map(|(name, value)| (name, Field::Stored(value)))),
    }
    let attributes: BTreeMap<String, &RawValue> = serde_json::from_str(&record.attributes).unwrap_or_default();
    object.extend(attributes.into_iter().map(|(name, value)| (name, Field::Stored(value))));
    if enriched {
        let text = |value: &Option<String>| Field::Made(value.as_deref().map_or(Value::Null, Value::from));
        object.insert("driver_name".into(), text(&record.driver_name));
        object.insert("current_zone".into(), text(&record.current_zone));
    }
    serde_json::to_vec(&object).expect("a JSON object serialises")
}

/// One anomaly change as a message: reference 002's `anomaly_score`, `model_label` (-1) and
/// `model_is_anomaly`, the stable `id` (a consumer keeps the row of the highest `change_seq`).
pub fn anomaly_payload(record: &AnomalyRecord) -> Vec<u8> {
    let features: Value = serde_json::from_str(&record.features).unwrap_or(Value::Null);
    let object = serde_json::json!({
        "id": record.id,
        "change_seq": record.change_seq,
        "reading_id": record.reading_id,
        "profile": record.profile,
        "entity_id": record.entity_id,
        "timestamp": format_millis(record.timestamp_ms),
        "timestamp_ms": record.timestamp_ms,
        "detector": record.detector,
        "metric": record.metric,
        "value": record.value,
        "anomaly_score": record.anomaly_score,
        "threshold": record.threshold,
        "model_label": -1,
        "model_is_anomaly": true,
        "severity": record.severity,
        "reason": record.reason,
        "features": features,
        "detected_at_ms": record.detected_at_ms,
        "episode_start_ms": record.episode_start_ms,
        "episode_end_ms": record.episode_end_ms,
    });
    serde_json::to_vec(&object).expect("a JSON object serialises")
}

/// An anomaly message read back: the gold row it describes and the `change_seq` it had in the
/// store of the process that produced it.
#[derive(Debug, Clone)]
pub struct ConsumedAnomaly {
    pub change_seq: i64,
    pub row: GoldRow,
}

/// Reads a message of [`anomaly_payload`]'s shape; anything else is a [`Rejection`] naming
/// the field at fault (codes as for readings: `malformed_json`, `invalid_message`, `schema`,
/// `not_finite`, `invalid_entity`, `unknown_profile`). The profile must be one of `profiles`,
/// the detector one this build knows.
pub fn parse_anomaly(payload: &[u8], profiles: &ProfileRegistry) -> Result<ConsumedAnomaly, Rejection> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| Rejection::coded("malformed_json", format!("invalid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Rejection::message(format!("an anomaly message is a JSON object, not {}", kind(&value))));
    };
    let fields = Fields(&object);
    let id = fields.text("id")?;
    if id.is_empty() || id.len() > MAX_ANOMALY_ID_BYTES {
        return Err(Rejection::field_coded("schema", "id", format!("must be 1 to {MAX_ANOMALY_ID_BYTES} bytes")));
    }
    let profile_name = fields.text("profile")?;
    let profile = profiles.by_name(profile_name).ok_or_else(|| {
        Rejection::field_coded(
            "unknown_profile",
            "profile",
            format!(
                "{profile_name:?} is not a profile of this process (known: {}); give the serving process the detectors' config",
                profiles.names().join(", ")
            ),
        )
    })?;
    let entity = fields.text("entity_id")?;
    if entity.is_empty() || entity.len() > MAX_ENTITY_BYTES {
        return Err(Rejection::field_coded(
            "invalid_entity",
            "entity_id",
            format!("must be 1 to {MAX_ENTITY_BYTES} bytes"),
        ));
    }
    let detector_name = fields.text("detector")?;
    let detector = known_detector(detector_name).ok_or_else(|| {
        Rejection::field_coded(
            "schema",
            "detector",
            format!(
                "{detector_name:?} is not a detector of this build; run the same teleguard version as the detectors"
            ),
        )
    })?;
    let severity = match fields.text("severity")? {
        "minor" => Severity::Minor,
        "major" => Severity::Major,
        "critical" => Severity::Critical,
        other => {
            return Err(Rejection::field_coded(
                "schema",
                "severity",
                format!("{other:?} is not minor, major or critical"),
            ));
        }
    };
    let episode = match fields.optional_integer("episode_start_ms")? {
        Some(start_ms) => Some(Episode { start_ms, end_ms: fields.optional_integer("episode_end_ms")? }),
        None => None,
    };
    let anomaly = Anomaly {
        id: id.to_string(),
        detector,
        metric: fields.optional_text("metric")?.map(Arc::from),
        value: fields.optional_number("value")?,
        score: fields.number("anomaly_score")?,
        threshold: fields.number("threshold")?,
        severity,
        reason: fields.optional_text("reason")?.unwrap_or_default().to_string(),
        features: fields.features()?,
        episode,
    };
    let row = GoldRow::new(
        fields.optional_integer("reading_id")?.unwrap_or(0),
        profile.name.clone(),
        Arc::from(entity),
        fields.integer("timestamp_ms")?,
        anomaly,
        fields.integer("detected_at_ms")?,
    );
    Ok(ConsumedAnomaly { change_seq: fields.integer("change_seq")?, row })
}

/// The fields of one message, each read with the type it must have.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn present(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    fn text(&self, name: &str) -> Result<&'a str, Rejection> {
        self.optional_text(name)?.ok_or_else(|| missing(name, "a string"))
    }

    fn optional_text(&self, name: &str) -> Result<Option<&'a str>, Rejection> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(wrong_type(name, "a string", other)),
        }
    }

    fn integer(&self, name: &str) -> Result<i64, Rejection> {
        self.optional_integer(name)?.ok_or_else(|| missing(name, "an integer"))
    }

    fn optional_integer(&self, name: &str) -> Result<Option<i64>, Rejection> {
        match self.present(name) {
            None => Ok(None),
            Some(value) => value.as_i64().map(Some).ok_or_else(|| wrong_type(name, "an integer", value)),
        }
    }

    fn number(&self, name: &str) -> Result<f64, Rejection> {
        self.optional_number(name)?.ok_or_else(|| missing(name, "a number"))
    }

    fn optional_number(&self, name: &str) -> Result<Option<f64>, Rejection> {
        match self.present(name) {
            None => Ok(None),
            Some(value) => value.as_f64().map(Some).ok_or_else(|| wrong_type(name, "a number", value)),
        }
    }

    /// `features`: an object of numbers (`null` where the producer had no finite value).
    fn features(&self) -> Result<Vec<(Arc<str>, f64)>, Rejection> {
        match self.present("features") {
            None => Ok(Vec::new()),
            Some(Value::Object(features)) => features
                .iter()
                .map(|(name, value)| match value {
                    Value::Null => Ok((Arc::from(name.as_str()), f64::NAN)),
                    _ => value
                        .as_f64()
                        .map(|number| (Arc::from(name.as_str()), number))
                        .ok_or_else(|| wrong_type(&format!("features.{name}"), "a number", value)),
                })
                .collect(),
            Some(other) => Err(wrong_type("features", "an object of numbers", other)),
        }
    }
}

fn missing(name: &str, expected: &str) -> Rejection {
    Rejection::field_coded("schema", name, format!("missing; an anomaly message has {expected} here"))
}

fn wrong_type(name: &str, expected: &str, value: &Value) -> Rejection {
    Rejection::field_coded("schema", name, format!("expected {expected}, got {}", kind(value)))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use teleguard_core::profile::ProfileRegistry;

    fn record(metrics: &str) -> ReadingRecord {
        ReadingRecord {
            id: 7,
            profile: "vehicle".into(),
            entity_id: "V-001".into(),
            timestamp_ms: 1_725_436_800_000,
            latitude: Some(40.7),
            longitude: Some(-74.0),
            metrics: metrics.into(),
            attributes: r#"{"engine_status":"on"}"#.into(),
            driver_name: Some("Ada".into()),
            current_zone: Some("Warehouse".into()),
            processed_at_ms: 0,
        }
    }

    #[test]
    fn an_enriched_vehicle_event_validates_as_a_vehicle_reading_again() {
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        let vehicle = profiles.by_name("vehicle").unwrap();
        let payload = reading_payload(vehicle, &record(r#"{"speed":42.5}"#), true);
        let json: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(json["vehicle_id"], "V-001");
        assert_eq!(json["timestamp"], "2024-09-04T08:00:00.000Z");
        assert_eq!(json["speed"], 42.5);
        assert_eq!(json["engine_status"], "on");
        assert_eq!(json["driver_name"], "Ada");
        assert_eq!(json["current_zone"], "Warehouse");
        let reading = teleguard_core::validate::validate(vehicle, &payload).unwrap();
        assert_eq!(reading.event_time_ms, 1_725_436_800_000);
        assert_eq!(&*reading.entity, "V-001");
    }

    #[test]
    fn a_reading_message_copies_its_stored_fields_and_says_what_parsing_and_writing_them_would() {
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        let mut records = vec![
            record(r#"{"speed":42.5,"fuel_level":0.1,"odometer":123456789.0,"tiny":1e-300}"#),
            record(r#"{"big":1.7976931348623157e308,"small":5e-324}"#),
            record(r#"{"speed":-0.0,"rpm":3000.0}"#),
            record("{}"),
            record("not json"),
        ];
        records[2].attributes = r#"{"note":"tab\tquote\"é\u0001","engine_status":"on","speed":"shadowed"}"#.into();
        records[1].attributes = r#"{"nested":{"b":[1,2.5,null],"a":true}}"#.into();
        records[3].driver_name = None;
        records[3].latitude = None;
        records[4].attributes = "[1,2]".into();
        for profile in profiles.iter() {
            for record in &records {
                for enriched in [false, true] {
                    let copied = reading_payload(profile, record, enriched);
                    let reference = reading_payload_through_values(profile, record, enriched);
                    let what = format!(
                        "profile {}, metrics {}, attributes {}",
                        profile.name, record.metrics, record.attributes
                    );
                    let parsed = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap();
                    assert_eq!(parsed(&copied), parsed(&reference), "{what}");
                    // The text differs only where JSON leaves it open: an exponent (the store
                    // writes `1e308`, as ryu does, a serde_json value `1e+308`) and the order of
                    // a nested object's keys (kept as stored instead of sorted).
                    if !std::ptr::eq(record, &records[1]) {
                        assert_eq!(String::from_utf8_lossy(&copied), String::from_utf8_lossy(&reference), "{what}");
                    }
                }
            }
        }
    }

    /// The former way: every stored metric and attribute parsed into a `Value` and written again.
    fn reading_payload_through_values(profile: &Profile, record: &ReadingRecord, enriched: bool) -> Vec<u8> {
        let mut object = Map::new();
        object.insert(profile.entity_field.clone(), Value::from(record.entity_id.as_str()));
        let timestamp = match profile.timestamp_format {
            TimeFormat::EpochMillis => Value::from(record.timestamp_ms),
            TimeFormat::EpochSeconds => Value::from(record.timestamp_ms as f64 / 1000.0),
            TimeFormat::Auto | TimeFormat::Iso8601 => Value::from(format_millis(record.timestamp_ms)),
        };
        object.insert(profile.timestamp_field.clone(), timestamp);
        if let (Some(position), Some(lat), Some(lon)) = (&profile.position, record.latitude, record.longitude) {
            object.insert(position.latitude.clone(), Value::from(lat));
            object.insert(position.longitude.clone(), Value::from(lon));
        }
        let metrics: Map<String, Value> = serde_json::from_str(&record.metrics).unwrap_or_default();
        match &profile.metric_selector {
            // Long format: one metric per message, named in one field, its value in another.
            Some(selector) => {
                if let Some((name, value)) = metrics.into_iter().next() {
                    object.insert(selector.name_field.clone(), Value::from(name));
                    object.insert(selector.value_field.clone(), value);
                }
            }
            None => object.extend(metrics),
        }
        let attributes: Map<String, Value> = serde_json::from_str(&record.attributes).unwrap_or_default();
        object.extend(attributes);
        if enriched {
            object.insert("driver_name".into(), record.driver_name.clone().map_or(Value::Null, Value::from));
            object.insert("current_zone".into(), record.current_zone.clone().map_or(Value::Null, Value::from));
        }
        serde_json::to_vec(&object).expect("a JSON object serialises")
    }

    fn anomaly_record() -> AnomalyRecord {
        AnomalyRecord {
            change_seq: 12,
            id: "0191bc2b7c00abcdef0123456789".into(),
            reading_id: 7,
            profile: "vehicle".into(),
            entity_id: "V-001".into(),
            timestamp_ms: 1_725_436_800_000,
            detector: "unusual_stop".into(),
            metric: None,
            value: Some(42.0),
            anomaly_score: 42.0,
            threshold: 30.0,
            severity: "major".into(),
            reason: "stopped 42 min".into(),
            features: r#"{"stop_minutes":42.0,"inf":null}"#.into(),
            detected_at_ms: 1_725_436_900_000,
            episode_start_ms: Some(1_725_434_280_000),
            episode_end_ms: None,
        }
    }

    #[test]
    fn an_anomaly_message_reads_back_into_the_gold_row_it_came_from() {
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        let record = anomaly_record();
        let consumed = parse_anomaly(&anomaly_payload(&record), &profiles).unwrap();
        assert_eq!(consumed.change_seq, 12);
        let row = &consumed.row;
        assert_eq!(
            (&*row.profile, &*row.entity, row.timestamp_ms, row.reading_id),
            ("vehicle", "V-001", record.timestamp_ms, 7)
        );
        let a = &row.anomaly;
        assert_eq!((a.id.as_str(), a.detector, a.severity), (record.id.as_str(), "unusual_stop", Severity::Major));
        assert_eq!((a.score, a.threshold, a.value, a.metric.as_deref()), (42.0, 30.0, Some(42.0), None));
        assert_eq!(a.episode, Some(Episode { start_ms: 1_725_434_280_000, end_ms: None }));
        // serde_json's maps are sorted, on the topic as here.
        assert_eq!(row.features_json, r#"{"inf":null,"stop_minutes":42.0}"#);
        assert_eq!(row.detected_at_ms, record.detected_at_ms);
    }

    #[test]
    fn a_message_that_is_not_an_anomaly_names_what_is_wrong() {
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        let good: Value = serde_json::from_slice(&anomaly_payload(&anomaly_record())).unwrap();
        let with = |field: &str, value: Value| {
            let mut message = good.clone();
            match value {
                Value::Null => message.as_object_mut().unwrap().remove(field),
                value => message.as_object_mut().unwrap().insert(field.into(), value),
            };
            serde_json::to_vec(&message).unwrap()
        };
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (b"{\"id\": ".to_vec(), "malformed_json", "invalid JSON"),
            (b"[1, 2]".to_vec(), "invalid_message", "not an array"),
            (with("id", Value::Null), "schema", "field `id`: missing"),
            (with("id", Value::from(5)), "schema", "field `id`: expected a string, got a number"),
            (with("anomaly_score", Value::from("high")), "schema", "field `anomaly_score`: expected a number"),
            (with("severity", Value::from("apocalyptic")), "schema", "\"apocalyptic\""),
            (with("detector", Value::from("tea_leaves")), "schema", "\"tea_leaves\" is not a detector"),
            (with("profile", Value::from("boat")), "unknown_profile", "\"boat\""),
            (with("entity_id", Value::from("")), "invalid_entity", "entity_id"),
            (with("change_seq", Value::from(1.5)), "schema", "field `change_seq`: expected an integer"),
            (with("features", Value::from(vec![1])), "schema", "field `features`"),
        ];
        for (payload, code, says) in cases {
            let rejection = parse_anomaly(&payload, &profiles).unwrap_err();
            assert_eq!(rejection.code, code, "{rejection}");
            assert!(rejection.to_string().contains(says), "{says:?} in {rejection}");
        }
    }

    #[test]
    fn long_format_profiles_name_their_metric() {
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        let environment = profiles.by_name("environment").unwrap();
        let mut sensor = record(r#"{"temperature":21.5}"#);
        sensor.entity_id = "S-1".into();
        sensor.attributes = "{}".into();
        let payload = reading_payload(environment, &sensor, false);
        let reading = teleguard_core::validate::validate(environment, &payload).unwrap();
        assert_eq!(reading.metrics.len(), 1);
        let json: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(json["metric_type"], "temperature");
        assert!(json.get("driver_name").is_none());
    }
}
