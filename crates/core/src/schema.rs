//! A profile's message contract as the schemas other tools read: JSON Schema and Avro, both
//! generated from the profile, and Avro payloads turned into the JSON messages validation reads.
//!
//! The profile stays the one source of truth: `schemas/` in the repository holds what these
//! functions write (a test fails when the two drift), so a device team can validate on their
//! side with any JSON Schema or Avro library and get the verdicts teleguard gives.

use crate::profile::Profile;
use crate::time::TimeFormat;
use crate::validate::{MAX_ENTITY_BYTES, Rejection};
use apache_avro::Schema as AvroSchema;
use serde_json::{Map, Value, json};

/// The JSON Schema dialect of [`json_schema`].
pub const JSON_SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";
/// The first two bytes of an Avro single-object encoded message (then an 8-byte fingerprint).
pub const AVRO_SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];
/// The shape of the ISO 8601 text validation reads: RFC 3339, or a date-time without an offset
/// (taken as UTC). A pattern rather than `"format": "date-time"`, which most validators only
/// annotate and which refuses the offset-less form; an impossible date (month 13) fits the
/// pattern and is refused by validation.
const ISO_8601_PATTERN: &str =
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?$";
/// Latest event time validation accepts, in epoch milliseconds (2200-01-01).
const MAX_EVENT_MS: i64 = 7_258_118_400_000;

/// The file name under `schemas/` of a profile's schema: `drone_telemetry.avsc`,
/// `drone_telemetry.schema.json` (reference 001 calls its Avro schema `drone_telemetry.avsc`).
pub fn file_name(profile: &str, kind: SchemaKind) -> String {
    match kind {
        SchemaKind::Avro => format!("{profile}_telemetry.avsc"),
        SchemaKind::JsonSchema => format!("{profile}_telemetry.schema.json"),
    }
}

/// The two schema languages a profile is written out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Avro,
    JsonSchema,
}

/// The JSON Schema (draft 2020-12) of the messages `profile` accepts: the same fields, types,
/// ranges and required set as validation. Two checks of validation are not expressible in it:
/// the entity id is trimmed before its emptiness is checked, and a message must fit in
/// [`crate::validate::MAX_MESSAGE_BYTES`].
pub fn json_schema(profile: &Profile) -> Value {
    let mut properties = Map::new();
    let mut required = vec![profile.entity_field.clone(), profile.timestamp_field.clone()];
    properties.insert(
        profile.entity_field.clone(),
        json!({
            "description": "the device's id",
            "type": ["string", "integer"],
            "minLength": 1,
            "maxLength": MAX_ENTITY_BYTES,
            "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$",
        }),
    );
    properties.insert(profile.timestamp_field.clone(), timestamp_json_schema(profile.timestamp_format));
    if let Some(position) = &profile.position {
        for (field, bound) in [(&position.latitude, 90.0), (&position.longitude, 180.0)] {
            properties.insert(field.clone(), json!({ "type": "number", "minimum": -bound, "maximum": bound }));
            required.push(field.clone());
        }
    }
    let mut conditions = Vec::new();
    match &profile.metric_selector {
        Some(selector) => {
            let names: Vec<&str> = profile.metrics.iter().map(|m| &*m.name).collect();
            properties.insert(selector.name_field.clone(), json!({ "type": "string", "enum": names }));
            properties.insert(selector.value_field.clone(), json!({ "type": "number" }));
            required.extend([selector.name_field.clone(), selector.value_field.clone()]);
            for metric in &profile.metrics {
                conditions.push(json!({
                    "if": { "properties": { (selector.name_field.clone()): { "const": &*metric.name } } },
                    "then": { "properties": { (selector.value_field.clone()): range_json_schema(metric.min, metric.max, &metric.unit) } },
                }));
            }
        }
        None => {
            for metric in &profile.metrics {
                let mut schema = range_json_schema(metric.min, metric.max, &metric.unit);
                if metric.required {
                    required.push(metric.name.to_string());
                } else {
                    schema["type"] = json!(["number", "null"]);
                }
                properties.insert(metric.name.to_string(), schema);
            }
        }
    }
    for attribute in &profile.attributes {
        let mut schema =
            json!({ "type": if attribute.required { json!("string") } else { json!(["string", "null"]) } });
        if let Some(values) = &attribute.values {
            let mut allowed: Vec<Value> = values.iter().map(|v| json!(v)).collect();
            if !attribute.required {
                allowed.push(Value::Null);
            }
            schema["enum"] = Value::Array(allowed);
        }
        if attribute.required {
            required.push(attribute.name.to_string());
        }
        properties.insert(attribute.name.to_string(), schema);
    }
    let mut schema = json!({
        "$schema": JSON_SCHEMA_DIALECT,
        "title": format!("{} telemetry", profile.name),
        "description": profile.description,
        "type": "object",
        "properties": properties,
        "required": required,
    });
    if !conditions.is_empty() {
        schema["allOf"] = Value::Array(conditions);
    }
    schema
}

fn timestamp_json_schema(format: TimeFormat) -> Value {
    let epoch = |max: i64, unit: &str| json!({ "type": "number", "minimum": 0, "maximum": max, "description": unit });
    match format {
        TimeFormat::EpochMillis => epoch(MAX_EVENT_MS, "milliseconds since 1970-01-01 UTC"),
        TimeFormat::EpochSeconds => epoch(MAX_EVENT_MS / 1000, "seconds since 1970-01-01 UTC"),
        TimeFormat::Iso8601 => json!({ "type": "string", "pattern": ISO_8601_PATTERN }),
        TimeFormat::Auto => json!({
            "description": "epoch seconds (below 10^11), epoch milliseconds, or ISO 8601 text",
            "type": ["number", "string"],
            "minimum": 0,
            "maximum": MAX_EVENT_MS,
            "pattern": ISO_8601_PATTERN,
        }),
    }
}

fn range_json_schema(min: f64, max: f64, unit: &str) -> Value {
    let mut schema = json!({ "type": "number" });
    if min > f64::MIN {
        schema["minimum"] = json!(min);
    }
    if max < f64::MAX {
        schema["maximum"] = json!(max);
    }
    if !unit.is_empty() {
        schema["description"] = json!(unit);
    }
    schema
}

/// The Avro record schema of `profile`'s messages, fields in the order the reference designs
/// send them (timestamp, id, position, metrics, attributes); optional fields are unions with
/// null. Ranges are not expressible in Avro: validation checks them after decoding.
pub fn avro_schema(profile: &Profile) -> Value {
    let mut fields = Vec::new();
    let timestamp_type = match profile.timestamp_format {
        TimeFormat::EpochMillis => json!({ "type": "long", "logicalType": "timestamp-millis" }),
        TimeFormat::EpochSeconds => json!("long"),
        TimeFormat::Iso8601 => json!("string"),
        TimeFormat::Auto => json!(["long", "double", "string"]),
    };
    fields.push(json!({ "name": profile.timestamp_field, "type": timestamp_type }));
    fields.push(json!({ "name": profile.entity_field, "type": "string" }));
    if let Some(position) = &profile.position {
        fields.push(json!({ "name": position.latitude, "type": "double", "doc": "degrees north" }));
        fields.push(json!({ "name": position.longitude, "type": "double", "doc": "degrees east" }));
    }
    match &profile.metric_selector {
        Some(selector) => {
            let names: Vec<&str> = profile.metrics.iter().map(|m| &*m.name).collect();
            let doc = format!("one of {}", names.join(", "));
            fields.push(json!({ "name": selector.name_field, "type": "string", "doc": doc }));
            fields.push(json!({ "name": selector.value_field, "type": "double" }));
        }
        None => {
            for metric in &profile.metrics {
                let mut field = if metric.required {
                    json!({ "name": &*metric.name, "type": "double" })
                } else {
                    json!({ "name": &*metric.name, "type": ["null", "double"], "default": null })
                };
                if !metric.unit.is_empty() {
                    field["doc"] = json!(metric.unit);
                }
                fields.push(field);
            }
        }
    }
    for attribute in &profile.attributes {
        fields.push(if attribute.required {
            json!({ "name": &*attribute.name, "type": "string" })
        } else {
            json!({ "name": &*attribute.name, "type": ["null", "string"], "default": null })
        });
    }
    json!({
        "type": "record",
        "name": avro_record_name(&profile.name),
        "namespace": "teleguard",
        "doc": profile.description,
        "fields": fields,
    })
}

/// `drone` → `DroneTelemetry`, `my-pump` → `MyPumpTelemetry`: a valid Avro name.
fn avro_record_name(profile: &str) -> String {
    let mut name = String::new();
    for part in profile.split(['-', '_']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert(0, 'P');
    }
    name.push_str("Telemetry");
    name
}

/// Writes a schema the way `schemas/` keeps it: pretty-printed, with a final newline.
pub fn to_pretty_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a JSON value serialises");
    text.push('\n');
    text
}

/// How a profile's messages may arrive in Avro.
#[derive(Debug, Clone)]
pub struct AvroDecoder {
    schema: AvroSchema,
    /// The single-object header: marker then the schema's CRC-64-AVRO fingerprint.
    header: [u8; 10],
    /// Every message is a bare Avro datum of `schema` (a configured writer schema), not only
    /// those with the single-object header.
    bare_datums: bool,
}

/// Why an Avro schema could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid Avro schema: {0}")]
pub struct AvroSchemaError(String);

impl AvroDecoder {
    /// A decoder for `schema` (Avro JSON text); with `bare_datums`, every message is read as a
    /// datum of it, otherwise only messages that start with the single-object marker are.
    pub fn new(schema: &str, bare_datums: bool) -> Result<AvroDecoder, AvroSchemaError> {
        let schema = AvroSchema::parse_str(schema).map_err(|e| AvroSchemaError(e.to_string()))?;
        let fingerprint = schema.fingerprint::<apache_avro::rabin::Rabin>().bytes;
        let mut header = [0u8; 10];
        header[..2].copy_from_slice(&AVRO_SINGLE_OBJECT_MARKER);
        header[2..].copy_from_slice(&fingerprint[..8]);
        Ok(AvroDecoder { schema, header, bare_datums })
    }

    /// The decoder of a profile's generated schema, for single-object messages.
    pub fn for_profile(profile: &Profile) -> AvroDecoder {
        AvroDecoder::new(&avro_schema(profile).to_string(), false).expect("generated Avro schemas parse")
    }

    /// The single-object header messages of this schema begin with.
    pub fn single_object_header(&self) -> &[u8; 10] {
        &self.header
    }

    /// Whether `payload` is for this decoder (a single-object message, or any message when
    /// every message is a bare datum); JSON messages are left to validation.
    pub fn claims(&self, payload: &[u8]) -> bool {
        self.bare_datums || payload.starts_with(&AVRO_SINGLE_OBJECT_MARKER)
    }

    /// The JSON object of one Avro message, for validation and bronze to read like any other.
    pub fn to_json(&self, payload: &[u8]) -> Result<Vec<u8>, Rejection> {
        let mut datum = if self.bare_datums && !payload.starts_with(&AVRO_SINGLE_OBJECT_MARKER) {
            payload
        } else {
            payload.strip_prefix(&self.header[..]).ok_or_else(|| {
                let found = payload.get(2..10).map(hex).unwrap_or_else(|| "a truncated header".into());
                Rejection::message(format!(
                    "Avro single-object message written with schema fingerprint {found}, expected {}; \
                     encode it with this profile's schema (`teleguard schema export PROFILE --format avro`)",
                    hex(&self.header[2..])
                ))
            })?
        };
        let value = apache_avro::from_avro_datum(&self.schema, &mut datum, None)
            .map_err(|e| Rejection::message(format!("invalid Avro message: {e}")))?;
        if !datum.is_empty() {
            return Err(Rejection::message(format!(
                "invalid Avro message: {} bytes left after the record",
                datum.len()
            )));
        }
        let json = avro_to_json(value)?;
        Ok(serde_json::to_vec(&json).expect("a JSON value serialises"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An Avro value as the JSON validation reads: unions unwrapped, timestamps as epoch numbers;
/// a non-finite double stays a rejection, as it is in JSON.
fn avro_to_json(value: apache_avro::types::Value) -> Result<Value, Rejection> {
    use apache_avro::types::Value as Avro;
    Ok(match value {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => json!(i),
        Avro::Long(i)
        | Avro::TimeMicros(i)
        | Avro::TimestampMillis(i)
        | Avro::TimestampMicros(i)
        | Avro::LocalTimestampMillis(i)
        | Avro::LocalTimestampMicros(i) => json!(i),
        Avro::Float(x) => finite(f64::from(x))?,
        Avro::Double(x) => finite(x)?,
        Avro::String(s) | Avro::Enum(_, s) => json!(s),
        Avro::Union(_, inner) => avro_to_json(*inner)?,
        Avro::Record(fields) => {
            let mut object = Map::new();
            for (name, field) in fields {
                object.insert(name, avro_to_json(field)?);
            }
            Value::Object(object)
        }
        Avro::Array(items) => Value::Array(items.into_iter().map(avro_to_json).collect::<Result<_, _>>()?),
        Avro::Map(entries) => {
            let mut object = Map::new();
            for (name, entry) in entries {
                object.insert(name, avro_to_json(entry)?);
            }
            Value::Object(object)
        }
        other => return Err(Rejection::message(format!("Avro type of {other:?} is not a telemetry value"))),
    })
}

fn finite(x: f64) -> Result<Value, Rejection> {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| Rejection::message(format!("Avro double {x} is not a finite number")))
}

/// A JSON Schema a profile's messages must also pass (`json_schema_file`), beside the
/// profile's own checks; for schemas a user already keeps for their devices.
#[derive(Clone)]
pub struct JsonSchemaCheck {
    validator: std::sync::Arc<jsonschema::Validator>,
    /// Where the schema came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for JsonSchemaCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaCheck").field("source", &self.source).finish_non_exhaustive()
    }
}

impl JsonSchemaCheck {
    /// Compiles the schema `text` (from `source`, a file name).
    pub fn new(text: &str, source: &str) -> Result<Self, String> {
        let schema: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let validator = jsonschema::validator_for(&schema).map_err(|e| format!("not a valid JSON Schema: {e}"))?;
        Ok(JsonSchemaCheck { validator: std::sync::Arc::new(validator), source: source.into() })
    }

    /// Checks one JSON message; the rejection names the first field at fault and the rule.
    pub fn check(&self, payload: &[u8]) -> Result<(), Rejection> {
        let message: Value = serde_json::from_slice(payload)
            .map_err(|e| Rejection::coded("malformed_json", format!("invalid JSON: {e}")))?;
        match self.validator.validate(&message) {
            Ok(()) => Ok(()),
            Err(error) => {
                let path = error.instance_path.as_str().trim_start_matches('/').replace('/', ".");
                let field = if path.is_empty() { "(message)".to_string() } else { path };
                Err(Rejection::field_coded("schema", &field, format!("{error} (JSON Schema {})", self.source)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
