//! Validation throughput per profile, one message at a time on one core, JSON and Avro:
//! `cargo bench -p teleguard-core --bench validate`. Under `cargo test` it runs small.
//!
//! Each figure is the best and the median of several passes (shared machines vary by tens of
//! percent between runs; the best pass is what the code can do).

use apache_avro::types::Value as Avro;
use std::hint::black_box;
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::schema::avro_schema;
use teleguard_core::validate::decode_and_validate;

mod common;

use common::{report, simulated_messages as simulated};

/// A JSON drone message as the Avro single-object message a device would send instead.
fn to_single_object(writer: &mut apache_avro::GenericSingleObjectWriter, order: &[&str], json: &[u8]) -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_slice(json).unwrap();
    let mut fields: Vec<(String, Avro)> = json
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| {
            let value = match (name.as_str(), value) {
                ("timestamp", v) => Avro::TimestampMillis(v.as_i64().unwrap()),
                (_, serde_json::Value::String(s)) => Avro::String(s.clone()),
                (_, v) => Avro::Double(v.as_f64().unwrap()),
            };
            (name.clone(), value)
        })
        .collect();
    let mut bytes = Vec::new();
    // Avro records are written in their schema's field order.
    fields.sort_by_key(|(name, _)| order.iter().position(|o| o == name));
    writer.write_value(Avro::Record(fields), &mut bytes).unwrap();
    bytes
}

fn main() {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    let n = if std::env::args().any(|a| a == "--bench") { 200_000 } else { 2_000 };
    for name in ["vehicle", "drone", "aircraft", "environment", "vibration"] {
        let profile = registry.by_name(name).unwrap();
        let payloads: Vec<Vec<u8>> = simulated(name, n).into_iter().map(|m| m.payload).collect();
        report(&format!("validate {name} (JSON)"), "messages", n, || {
            for payload in &payloads {
                black_box(decode_and_validate(profile, payload.clone()).1.is_ok());
            }
        });
    }
    let drone = registry.by_name("drone").unwrap();
    let schema_json = avro_schema(drone);
    let order: Vec<&str> =
        schema_json["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    let schema = apache_avro::Schema::parse(&schema_json).unwrap();
    let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 256).unwrap();
    let payloads: Vec<Vec<u8>> =
        simulated("drone", n).iter().map(|m| to_single_object(&mut writer, &order, &m.payload)).collect();
    assert!(decode_and_validate(drone, payloads[0].clone()).1.is_ok());
    report("validate drone (Avro single-object)", "messages", n, || {
        for payload in &payloads {
            black_box(decode_and_validate(drone, payload.clone()).1.is_ok());
        }
    });
}
