//! Schema check: turns one JSON message into a canonical [`Reading`] or a [`Rejection`]
//! that names the field at fault.

use crate::json::{FieldTable, Message, Scalar, parse_message};
use crate::model::{GeoPoint, MetricId, Reading};
use crate::profile::{MetricSelector, Profile};
use crate::time::parse_timestamp;
use std::fmt;
use std::sync::Arc;

/// The largest single message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The longest entity id accepted, in bytes.
pub const MAX_ENTITY_BYTES: usize = 128;

/// Why a message was not accepted: a short code for metrics and filters, the field at fault
/// (if one is) and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `schema` (a field breaks the profile), `malformed_json`, `invalid_message`, or the code a
    /// later check gives (`identity_mismatch`, `forbidden`, `duplicate`).
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    fn field(name: &str, message: impl Into<String>) -> Self {
        Rejection { code: "schema", field: Some(name.to_string()), message: message.into() }
    }

    /// A message that is wrong as a whole (`invalid_message`).
    pub fn message(message: impl Into<String>) -> Self {
        Rejection::coded("invalid_message", message)
    }

    /// A message wrong as a whole, for the reason `code` names.
    pub fn coded(code: &'static str, message: impl Into<String>) -> Self {
        Rejection { code, field: None, message: message.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Where each field a profile reads sits in a parsed message.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub table: FieldTable,
    entity: usize,
    timestamp: usize,
    position: Option<(usize, usize)>,
    selector: Option<(usize, usize)>,
    metrics: Vec<usize>,
    attributes: Vec<usize>,
}

impl Layout {
    /// The layout of a profile's fields; built once per profile.
    pub fn of(profile: &Profile) -> Layout {
        let mut table = FieldTable::default();
        let entity = table.slot_for(&profile.entity_field);
        let timestamp = table.slot_for(&profile.timestamp_field);
        let position = profile.position.as_ref().map(|p| (table.slot_for(&p.latitude), table.slot_for(&p.longitude)));
        let selector =
            profile.metric_selector.as_ref().map(|s| (table.slot_for(&s.name_field), table.slot_for(&s.value_field)));
        let metrics = match selector {
            Some(_) => Vec::new(),
            None => profile.metrics.iter().map(|m| table.slot_for(&m.name)).collect(),
        };
        let attributes = profile.attributes.iter().map(|a| table.slot_for(&a.name)).collect();
        Layout { table, entity, timestamp, position, selector, metrics, attributes }
    }
}

/// Reads one message as it arrived (JSON, or Avro where the profile takes it) and validates
/// it; returns the bytes to keep in bronze (an Avro message's JSON once it decoded, so that
/// bronze stays JSON that validation reads again) with the verdict.
pub fn decode_and_validate(profile: &Profile, payload: Vec<u8>) -> (Vec<u8>, Result<Reading, Rejection>) {
    match &profile.avro {
        Some(avro) if avro.claims(&payload) => match avro.to_json(&payload) {
            Ok(json) => {
                let verdict = validate(profile, &json);
                (json, verdict)
            }
            Err(rejection) => (payload, Err(rejection)),
        },
        _ => {
            let verdict = validate(profile, &payload).map_err(|mut rejection| {
                if std::str::from_utf8(&payload).is_err() {
                    rejection.message.push_str(
                        "; binary messages are read as Avro in the single-object encoding (C3 01, then the \
                         schema fingerprint), or as bare datums when the profile sets avro_bare_datums",
                    );
                }
                rejection
            });
            (payload, verdict)
        }
    }
}

/// Validates one JSON message of `profile` and maps it onto the canonical reading.
pub fn validate(profile: &Profile, payload: &[u8]) -> Result<Reading, Rejection> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection::message(format!(
            "message of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
            payload.len()
        )));
    }
    let layout = &profile.layout;
    let slots = match parse_message(payload, &layout.table) {
        Ok(Message::Object(slots)) => slots,
        Ok(Message::NotAnObject(other)) => {
            return Err(Rejection::message(format!("expected a JSON object, found {}", other.describe())));
        }
        Err(e) => return Err(Rejection::coded("malformed_json", format!("invalid JSON: {e}"))),
    };
    let field = |slot: usize| slots[slot].as_ref().filter(|v| **v != Scalar::Null);
    let entity = entity_id(field(layout.entity), &profile.entity_field)?;
    let timestamp_field = &profile.timestamp_field;
    let timestamp = field(layout.timestamp).ok_or_else(|| Rejection::field(timestamp_field, "is required"))?;
    let event_time_ms =
        parse_timestamp(timestamp, profile.timestamp_format).map_err(|e| Rejection::field(timestamp_field, e))?;
    let position = match (&profile.position, layout.position) {
        (Some(fields), Some((lat_slot, lon_slot))) => {
            let lat = required_number(field(lat_slot), &fields.latitude, -90.0, 90.0)?;
            let lon = required_number(field(lon_slot), &fields.longitude, -180.0, 180.0)?;
            Some(GeoPoint { lat, lon })
        }
        _ => None,
    };
    let metrics = match (&profile.metric_selector, layout.selector) {
        (Some(selector), Some((name_slot, value_slot))) => {
            vec![selected_metric(profile, selector, field(name_slot), field(value_slot))?]
        }
        _ => {
            let mut metrics = Vec::with_capacity(profile.metrics.len());
            for (index, (spec, &slot)) in profile.metrics.iter().zip(&layout.metrics).enumerate() {
                let value = match field(slot) {
                    None if !spec.required => continue,
                    value => value,
                };
                metrics.push((index as MetricId, required_number(value, &spec.name, spec.min, spec.max)?));
            }
            metrics
        }
    };
    let mut attributes = Vec::new();
    for (index, (spec, &slot)) in profile.attributes.iter().zip(&layout.attributes).enumerate() {
        let value = match field(slot) {
            None if !spec.required => continue,
            None => return Err(Rejection::field(&spec.name, "is required")),
            Some(Scalar::Str(s)) => s,
            Some(other) => {
                return Err(Rejection::field(&spec.name, format!("expected a string, found {}", other.describe())));
            }
        };
        if let Some(allowed) = &spec.values
            && !allowed.iter().any(|a| a == value)
        {
            return Err(Rejection::field(&spec.name, format!("{value:?} is not one of {allowed:?}")));
        }
        attributes.push((index as u16, Arc::from(&**value)));
    }
    Ok(Reading { profile: profile.id, entity, event_time_ms, position, metrics, attributes })
}

fn entity_id(value: Option<&Scalar<'_>>, field: &str) -> Result<Arc<str>, Rejection> {
    let id: &str = match value {
        None => return Err(Rejection::field(field, "is required")),
        Some(Scalar::Str(s)) => s.trim(),
        Some(Scalar::Int(i)) => return checked_entity(&i.to_string(), field),
        Some(Scalar::UInt(u)) => return checked_entity(&u.to_string(), field),
        Some(other) => {
            return Err(Rejection::field(field, format!("expected a string id, found {}", other.describe())));
        }
    };
    checked_entity(id, field)
}

fn checked_entity(id: &str, field: &str) -> Result<Arc<str>, Rejection> {
    if id.is_empty() {
        return Err(Rejection::field(field, "must not be empty"));
    }
    if id.len() > MAX_ENTITY_BYTES || id.chars().any(char::is_control) {
        return Err(Rejection::field(
            field,
            format!("must be at most {MAX_ENTITY_BYTES} bytes without control characters"),
        ));
    }
    Ok(id.into())
}

fn required_number(value: Option<&Scalar<'_>>, field: &str, min: f64, max: f64) -> Result<f64, Rejection> {
    let value = value.ok_or_else(|| Rejection::field(field, "is required"))?;
    let x = match value.as_f64() {
        Some(x) if x.is_finite() => x,
        Some(_) => return Err(Rejection::field(field, format!("{value} is not a finite number"))),
        None => return Err(Rejection::field(field, format!("expected a number, found {}", value.describe()))),
    };
    if x < min || x > max {
        return Err(Rejection::field(field, format!("{x} is out of range [{min}, {max}]")));
    }
    Ok(x)
}

fn selected_metric(
    profile: &Profile,
    selector: &MetricSelector,
    name: Option<&Scalar<'_>>,
    value: Option<&Scalar<'_>>,
) -> Result<(MetricId, f64), Rejection> {
    let name = match name {
        None => return Err(Rejection::field(&selector.name_field, "is required")),
        Some(Scalar::Str(s)) => s,
        Some(other) => {
            return Err(Rejection::field(
                &selector.name_field,
                format!("expected a string, found {}", other.describe()),
            ));
        }
    };
    let Some(id) = profile.metric_id(name) else {
        let known: Vec<&str> = profile.metrics.iter().map(|m| &*m.name).collect();
        return Err(Rejection::field(&selector.name_field, format!("unknown metric {name:?}; known: {known:?}")));
    };
    let spec = &profile.metrics[usize::from(id)];
    let x = required_number(value, &selector.value_field, spec.min, spec.max).map_err(|mut e| {
        if e.message.contains("out of range") {
            e.message = format!("{name} {}", e.message);
        }
        e
    })?;
    Ok((id, x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileRegistry;

    fn registry() -> ProfileRegistry {
        ProfileRegistry::with_builtins(Default::default()).unwrap()
    }

    fn check(profile: &str, json: &str) -> Result<Reading, String> {
        let registry = registry();
        validate(registry.by_name(profile).unwrap(), json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn drone_reference_message_is_accepted() {
        let reading = check(
            "drone",
            r#"{"timestamp": 1725446400000, "drone_id": "dev", "latitude": 37.7749, "longitude": -122.4194,
                "altitude": 120.5, "velocity": 12.3, "acceleration_x": 0.1, "acceleration_y": -0.2,
                "acceleration_z": 0.0, "battery_level": 87.5, "signal_strength": -67.0}"#,
        )
        .unwrap();
        assert_eq!(&*reading.entity, "dev");
        assert_eq!(reading.event_time_ms, 1_725_446_400_000);
        assert_eq!(reading.metrics.len(), 7);
        assert_eq!(reading.position, Some(GeoPoint { lat: 37.7749, lon: -122.4194 }));
    }

    #[test]
    fn environment_long_format_maps_metric_type() {
        let reading = check(
            "environment",
            r#"{"sensor_id": "s-1", "metric_type": "humidity", "value": 41.5, "timestamp": "2024-09-04T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(reading.metrics, vec![(1, 41.5)]);
        let err = check(
            "environment",
            r#"{"sensor_id": "s-1", "metric_type": "co2", "value": 1, "timestamp": "2024-09-04T10:00:00Z"}"#,
        );
        assert!(err.unwrap_err().starts_with("field `metric_type`: unknown metric \"co2\""));
    }

    #[test]
    fn each_fault_names_its_field() {
        let vehicle = |body: &str| check("vehicle", body).unwrap_err();
        assert_eq!(
            vehicle(
                r#"{"vehicle_id": "V1", "timestamp": "2024-09-04T10:00:00Z", "latitude": 95, "longitude": 0, "speed": 3}"#
            ),
            "field `latitude`: 95 is out of range [-90, 90]"
        );
        assert_eq!(
            vehicle(
                r#"{"vehicle_id": "V1", "timestamp": "2024-09-04T10:00:00Z", "latitude": 1, "longitude": 0, "speed": "fast"}"#
            ),
            "field `speed`: expected a number, found string \"fast\""
        );
        assert_eq!(
            vehicle(r#"{"timestamp": "2024-09-04T10:00:00Z", "latitude": 1, "longitude": 0, "speed": 3}"#),
            "field `vehicle_id`: is required"
        );
        assert_eq!(
            vehicle(
                r#"{"vehicle_id": "V1", "timestamp": "2024-09-04T10:00:00Z", "latitude": 1, "longitude": 0, "speed": 3, "engine_status": "flying"}"#
            ),
            "field `engine_status`: \"flying\" is not one of [\"on\", \"off\", \"idle\"]"
        );
        assert!(vehicle(r#"{"vehicle_id": "V1", "speed": NaN}"#).starts_with("invalid JSON"));
        assert!(vehicle("[1, 2]").starts_with("expected a JSON object, found an array"));
        assert!(
            vehicle(r#"{"vehicle_id": "V1", "timestamp": 1, "latitude": 1, "longitude": 1e999, "speed": 3}"#)
                .starts_with("invalid JSON")
        );
    }

    #[test]
    fn oversized_message_is_refused_before_parsing() {
        let huge = format!(r#"{{"vehicle_id": "{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
        assert!(check("vehicle", &huge).unwrap_err().contains("exceeds the 65536-byte limit"));
    }
}
