//! Readings and anomalies as they travel on Kafka topics: a reading in its profile's own field
//! names (what the device sent, so the next role validates it like any message), plus
//! `driver_name` and `current_zone` once enriched (reference 000's enriched event); an anomaly
//! as reference 002's row with its stable id.

use crate::sinks::{AnomalyRecord, ReadingRecord};
use serde_json::{Map, Value};
use teleguard_core::profile::Profile;
use teleguard_core::time::{TimeFormat, format_millis};

/// `record` as a message of `profile`; `enriched` adds the enrichment fields.
pub fn reading_payload(profile: &Profile, record: &ReadingRecord, enriched: bool) -> Vec<u8> {
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
