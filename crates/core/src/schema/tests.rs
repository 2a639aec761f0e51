//! The shipped schemas match the profiles, agree with validation, and Avro decodes.

use super::*;
use crate::profile::{BUILTIN_PROFILE_NAMES, ProfileRegistry};
use crate::simulate::{SimMessage, SimSettings, Simulator};
use crate::validate::validate;
use std::path::PathBuf;

fn registry() -> ProfileRegistry {
    ProfileRegistry::with_builtins(Default::default()).unwrap()
}

fn shipped(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

const REFERENCE_001_SAMPLE: &str = r#"{
        "timestamp": 1725446400000,
        "drone_id": "dev",
        "latitude": 37.7749,
        "longitude": -122.4194,
        "altitude": 120.5,
        "velocity": 12.3,
        "acceleration_x": 0.1,
        "acceleration_y": -0.2,
        "acceleration_z": 0.0,
        "battery_level": 87.5,
        "signal_strength": -67.0
      }"#;

#[test]
fn shipped_schemas_are_the_profiles_own() {
    let registry = registry();
    for name in BUILTIN_PROFILE_NAMES {
        let profile = registry.by_name(name).unwrap();
        for (kind, schema) in [(SchemaKind::Avro, avro_schema(profile)), (SchemaKind::JsonSchema, json_schema(profile))]
        {
            let file = file_name(name, kind);
            assert_eq!(
                shipped(&file),
                to_pretty_text(&schema),
                "schemas/{file} differs from profile `{name}`: rewrite it with \
                 `teleguard schema export {name} --out schemas/`"
            );
        }
    }
}

#[test]
fn drone_avro_schema_has_reference_001s_eleven_fields() {
    let schema = avro_schema(registry().by_name("drone").unwrap());
    let names: Vec<&str> = schema["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "timestamp",
            "drone_id",
            "latitude",
            "longitude",
            "altitude",
            "velocity",
            "acceleration_x",
            "acceleration_y",
            "acceleration_z",
            "battery_level",
            "signal_strength"
        ]
    );
    assert_eq!(schema["name"], "DroneTelemetry");
}

/// Messages of every built-in profile: simulated ones, then each broken in the ways devices
/// break them.
fn corpus(profile: &Profile) -> Vec<Value> {
    let mut simulator = Simulator::new(&SimSettings::new(&[&*profile.name], 7, 1_725_446_400_000)).unwrap();
    let mut messages: Vec<SimMessage> = Vec::new();
    simulator.emit_until(1_725_446_400_000 + 120_000, &mut messages);
    let valid: Vec<Value> = messages.iter().take(20).map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
    assert!(!valid.is_empty(), "the simulator emits {} messages", profile.name);
    let mut corpus = valid.clone();
    let sample = valid[0].as_object().unwrap().clone();
    for field in sample.keys() {
        for replacement in [
            None,
            Some(Value::Null),
            Some(json!("text")),
            Some(json!(true)),
            Some(json!([])),
            Some(json!({})),
            Some(json!(-1e9)),
            Some(json!(1e12)),
            Some(json!(0)),
            Some(json!("")),
            Some(json!("not-an-allowed-value")),
        ] {
            let mut broken = sample.clone();
            match replacement {
                None => broken.remove(field),
                Some(value) => broken.insert(field.clone(), value),
            };
            corpus.push(Value::Object(broken));
        }
    }
    corpus.extend([json!([]), json!("a string"), json!(3), json!(null)]);
    corpus
}

#[test]
fn the_json_schema_and_validation_give_the_same_verdicts() {
    let registry = registry();
    for name in BUILTIN_PROFILE_NAMES {
        let profile = registry.by_name(name).unwrap();
        let schema = json_schema(profile);
        let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
        let messages = corpus(profile);
        let mut accepted = 0;
        for message in &messages {
            let by_profile = validate(profile, &serde_json::to_vec(message).unwrap());
            let by_schema = validator.iter_errors(message).map(|e| e.to_string()).collect::<Vec<_>>();
            assert_eq!(
                by_profile.is_ok(),
                by_schema.is_empty(),
                "profile `{name}` and its JSON Schema disagree on {message}: validation says {by_profile:?}, \
                 the schema says {by_schema:?}"
            );
            accepted += usize::from(by_profile.is_ok());
        }
        assert!(accepted >= 20 && accepted < messages.len(), "{name}: {accepted} of {} accepted", messages.len());
    }
}

fn single_object(profile: &Profile, message: &str) -> Vec<u8> {
    let schema = AvroSchema::parse(&avro_schema(profile)).unwrap();
    let json: Value = serde_json::from_str(message).unwrap();
    let record = schema_record(&schema, &json);
    let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 256).unwrap();
    let mut bytes = Vec::new();
    writer.write_value(record, &mut bytes).unwrap();
    bytes
}

/// The Avro record of a JSON drone message (every drone field is a double but the timestamp).
fn schema_record(schema: &AvroSchema, json: &Value) -> apache_avro::types::Value {
    let mut record = apache_avro::types::Record::new(schema).unwrap();
    for (name, value) in json.as_object().unwrap() {
        match (name.as_str(), value) {
            ("timestamp", v) => record.put(name, apache_avro::types::Value::TimestampMillis(v.as_i64().unwrap())),
            (_, Value::String(s)) => record.put(name, s.as_str()),
            (_, v) => record.put(name, v.as_f64().unwrap()),
        }
    }
    record.into()
}

#[test]
fn an_avro_single_object_message_validates_like_its_json() {
    let registry = registry();
    let drone = registry.by_name("drone").unwrap();
    let decoder = AvroDecoder::for_profile(drone);
    let avro = single_object(drone, REFERENCE_001_SAMPLE);
    assert!(avro.starts_with(decoder.single_object_header()));
    assert!(decoder.claims(&avro) && !decoder.claims(REFERENCE_001_SAMPLE.as_bytes()));
    let json = decoder.to_json(&avro).unwrap();
    assert_eq!(validate(drone, &json).unwrap(), validate(drone, REFERENCE_001_SAMPLE.as_bytes()).unwrap());
}

#[test]
fn broken_avro_messages_are_rejections_that_say_why() {
    let registry = registry();
    let drone = registry.by_name("drone").unwrap();
    let decoder = AvroDecoder::for_profile(drone);
    let avro = single_object(drone, REFERENCE_001_SAMPLE);

    let mut other_schema = avro.clone();
    other_schema[5] ^= 0xff;
    let error = decoder.to_json(&other_schema).unwrap_err().to_string();
    assert!(error.contains("schema fingerprint") && error.contains("teleguard schema export"), "{error}");

    let error = decoder.to_json(&avro[..avro.len() - 3]).unwrap_err().to_string();
    assert!(error.starts_with("invalid Avro message"), "{error}");

    let mut trailing = avro.clone();
    trailing.push(0);
    let error = decoder.to_json(&trailing).unwrap_err().to_string();
    assert!(error.contains("1 bytes left"), "{error}");

    assert!(decoder.to_json(&avro[..4]).unwrap_err().to_string().contains("fingerprint"));
}

#[test]
fn a_configured_writer_schema_reads_bare_datums() {
    let registry = registry();
    let drone = registry.by_name("drone").unwrap();
    let decoder = AvroDecoder::new(&avro_schema(drone).to_string(), true).unwrap();
    let schema = AvroSchema::parse(&avro_schema(drone)).unwrap();
    let record = schema_record(&schema, &serde_json::from_str(REFERENCE_001_SAMPLE).unwrap());
    let datum = apache_avro::to_avro_datum(&schema, record).unwrap();
    assert!(decoder.claims(&datum));
    let reading = validate(drone, &decoder.to_json(&datum).unwrap()).unwrap();
    assert_eq!(&*reading.entity, "dev");
    assert!(AvroDecoder::new("{\"type\": \"nonsense\"}", true).unwrap_err().to_string().starts_with("invalid Avro"));
}

#[test]
fn a_profiles_own_json_schema_is_applied_after_its_checks() {
    let mut raw: crate::profile::RawProfile = toml::from_str(
        r#"
        entity_field = "pump_id"
        timestamp_field = "ts"
        metrics = [{ field = "flow_lpm", min = 0, max = 5000 }]
        json_schema_file = "pump.schema.json"
        "#,
    )
    .unwrap();
    raw.json_schema_text = Some(
        r#"{"type": "object", "required": ["site"],
            "properties": {"pump_id": {"type": "string", "pattern": "^p-[0-9]+$"}, "site": {"enum": ["north", "south"]}}}"#
            .into(),
    );
    let registry = ProfileRegistry::with_builtins([("pump".to_string(), raw.clone())].into()).unwrap();
    let pump = registry.by_name("pump").unwrap();
    let check = |json: &str| validate(pump, json.as_bytes());
    assert!(check(r#"{"pump_id": "p-1", "ts": 1725446400000, "flow_lpm": 12, "site": "north"}"#).is_ok());
    let bad_id = check(r#"{"pump_id": "x-1", "ts": 1725446400000, "flow_lpm": 12, "site": "north"}"#).unwrap_err();
    assert_eq!((bad_id.code, bad_id.field.as_deref()), ("schema", Some("pump_id")), "{bad_id}");
    assert!(bad_id.message.contains("^p-[0-9]+$") && bad_id.message.contains("pump.schema.json"), "{bad_id}");
    let no_site = check(r#"{"pump_id": "p-1", "ts": 1725446400000, "flow_lpm": 12}"#).unwrap_err();
    assert!(no_site.to_string().contains("\"site\" is a required property"), "{no_site}");
    // The profile's own checks come first, with their own codes.
    let range = check(r#"{"pump_id": "x-1", "ts": 1725446400000, "flow_lpm": -5, "site": "west"}"#).unwrap_err();
    assert_eq!(range.code, "out_of_range");

    raw.json_schema_text = Some(r#"{"type": "object", "minProperties": "three"}"#.into());
    let error = ProfileRegistry::with_builtins([("pump".to_string(), raw)].into()).unwrap_err().to_string();
    assert!(error.contains("json_schema_file pump.schema.json: not a valid JSON Schema"), "{error}");
}
