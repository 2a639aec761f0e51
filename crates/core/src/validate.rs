//! Schema check: turns one JSON message into a canonical [`Reading`] or a [`Rejection`]
//! that names the field at fault.

use crate::model::{GeoPoint, MetricId, Reading};
use crate::profile::Profile;
use crate::time::{describe, parse_timestamp};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// The largest single message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The longest entity id accepted, in bytes.
pub const MAX_ENTITY_BYTES: usize = 128;

/// Why a message was not accepted: the field at fault (if one is) and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    fn field(name: &str, message: impl Into<String>) -> Self {
        Rejection { field: Some(name.to_string()), message: message.into() }
    }

    pub fn message(message: impl Into<String>) -> Self {
        Rejection { field: None, message: message.into() }
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

/// Validates one message of `profile` and maps it onto the canonical reading.
pub fn validate(profile: &Profile, payload: &[u8]) -> Result<Reading, Rejection> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection::message(format!(
            "message of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
            payload.len()
        )));
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| Rejection::message(format!("invalid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Rejection::message(format!("expected a JSON object, found {}", describe(&value))));
    };
    validate_object(profile, &object)
}

/// Validates an already parsed JSON object.
pub fn validate_object(profile: &Profile, object: &Map<String, Value>) -> Result<Reading, Rejection> {
    let entity = entity_id(object, &profile.entity_field)?;
    let timestamp_field = &profile.timestamp_field;
    let timestamp = required(object, timestamp_field)?;
    let event_time_ms =
        parse_timestamp(timestamp, profile.timestamp_format).map_err(|e| Rejection::field(timestamp_field, e))?;
    let position = match &profile.position {
        Some(fields) => {
            let lat = number_in(object, &fields.latitude, -90.0, 90.0)?;
            let lon = number_in(object, &fields.longitude, -180.0, 180.0)?;
            Some(GeoPoint { lat, lon })
        }
        None => None,
    };
    let metrics = match &profile.metric_selector {
        Some(selector) => vec![selected_metric(profile, object, &selector.name_field, &selector.value_field)?],
        None => wide_metrics(profile, object)?,
    };
    let mut attributes = Vec::new();
    for (index, spec) in profile.attributes.iter().enumerate() {
        let value = match object.get(&*spec.name) {
            None | Some(Value::Null) if !spec.required => continue,
            None | Some(Value::Null) => return Err(Rejection::field(&spec.name, "is required")),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(Rejection::field(&spec.name, format!("expected a string, found {}", describe(other))));
            }
        };
        if let Some(allowed) = &spec.values
            && !allowed.iter().any(|a| a == value)
        {
            return Err(Rejection::field(&spec.name, format!("{value:?} is not one of {allowed:?}")));
        }
        attributes.push((index as u16, Arc::from(value.as_str())));
    }
    Ok(Reading { profile: profile.id, entity, event_time_ms, position, metrics, attributes })
}

fn required<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a Value, Rejection> {
    match object.get(field) {
        None | Some(Value::Null) => Err(Rejection::field(field, "is required")),
        Some(value) => Ok(value),
    }
}

fn entity_id(object: &Map<String, Value>, field: &str) -> Result<Arc<str>, Rejection> {
    let id = match required(object, field)? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        other => {
            return Err(Rejection::field(field, format!("expected a string id, found {}", describe(other))));
        }
    };
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

fn number(value: &Value, field: &str) -> Result<f64, Rejection> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(Rejection::field(field, format!("{n} is not a finite number"))),
        },
        other => Err(Rejection::field(field, format!("expected a number, found {}", describe(other)))),
    }
}

fn number_in(object: &Map<String, Value>, field: &str, min: f64, max: f64) -> Result<f64, Rejection> {
    let x = number(required(object, field)?, field)?;
    check_range(x, field, min, max)
}

fn check_range(x: f64, field: &str, min: f64, max: f64) -> Result<f64, Rejection> {
    if x < min || x > max {
        return Err(Rejection::field(field, format!("{x} is out of range [{min}, {max}]")));
    }
    Ok(x)
}

fn wide_metrics(profile: &Profile, object: &Map<String, Value>) -> Result<Vec<(MetricId, f64)>, Rejection> {
    let mut metrics = Vec::with_capacity(profile.metrics.len());
    for (index, spec) in profile.metrics.iter().enumerate() {
        let value = match object.get(&*spec.name) {
            None | Some(Value::Null) if !spec.required => continue,
            None | Some(Value::Null) => return Err(Rejection::field(&spec.name, "is required")),
            Some(value) => value,
        };
        let x = check_range(number(value, &spec.name)?, &spec.name, spec.min, spec.max)?;
        metrics.push((index as MetricId, x));
    }
    Ok(metrics)
}

fn selected_metric(
    profile: &Profile,
    object: &Map<String, Value>,
    name_field: &str,
    value_field: &str,
) -> Result<(MetricId, f64), Rejection> {
    let name = match required(object, name_field)? {
        Value::String(s) => s,
        other => {
            return Err(Rejection::field(name_field, format!("expected a string, found {}", describe(other))));
        }
    };
    let Some(id) = profile.metric_id(name) else {
        let known: Vec<&str> = profile.metrics.iter().map(|m| &*m.name).collect();
        return Err(Rejection::field(name_field, format!("unknown metric {name:?}; known: {known:?}")));
    };
    let spec = &profile.metrics[usize::from(id)];
    let x = number(required(object, value_field)?, value_field)?;
    let x = check_range(x, value_field, spec.min, spec.max).map_err(|mut e| {
        e.message = format!("{name} {}", e.message);
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
