//! Validation throughput per profile, one message at a time on one core, JSON and Avro:
//! `cargo bench -p teleguard-core --bench validate`. Under `cargo test` it runs small.
//!
//! Each figure is the best and the median of several passes (shared machines vary by tens of
//! percent between runs; the best pass is what the code can do).

use apache_avro::types::Value as Avro;
use std::hint::black_box;
use std::time::Instant;
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::schema::avro_schema;
use teleguard_core::simulate::{SimMessage, SimSettings, Simulator};
use teleguard_core::validate::decode_and_validate;

const PASSES: usize = 7;

fn simulated(profile: &str, count: usize) -> Vec<SimMessage> {
    let settings = SimSettings {
        profiles: vec![profile.to_string()],
        seed: 3,
        start_ms: 1_725_408_000_000,
        anomaly_rate: 1.0,
        fleet_scale: 40.0,
        entities: None,
    };
    let mut simulator = Simulator::new(&settings).unwrap();
    let mut messages = Vec::new();
    let mut until = settings.start_ms;
    while messages.len() < count {
        until += 1000;
        simulator.emit_until(until, &mut messages);
    }
    messages.truncate(count);
    messages
}

/// Runs `pass` several times; prints the best and median rate of `items` per pass.
fn report(what: &str, items: usize, mut pass: impl FnMut()) {
    let mut rates: Vec<f64> = (0..PASSES)
        .map(|_| {
            let started = Instant::now();
            pass();
            items as f64 / started.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!("{what}: {:.2} M messages/s best of {PASSES} (median {:.2})", rates[PASSES - 1], rates[PASSES / 2]);
}

/// A JSON drone message as the Avro single-object message a device would send instead.
fn to_single_object(writer: &mut apache_avro::GenericSingleObjectWriter, json: &[u8]) -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_slice(json).unwrap();
    let fields = json
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
    writer.write_value(Avro::Record(order_fields(fields)), &mut bytes).unwrap();
    bytes
}

/// Avro records are written in their schema's field order.
fn order_fields(mut fields: Vec<(String, Avro)>) -> Vec<(String, Avro)> {
    const ORDER: [&str; 11] = [
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
        "signal_strength",
    ];
    fields.sort_by_key(|(name, _)| ORDER.iter().position(|o| o == name));
    fields
}

fn main() {
    let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
    let n = if std::env::args().any(|a| a == "--bench") { 200_000 } else { 2_000 };
    for name in ["vehicle", "drone", "aircraft", "environment", "vibration"] {
        let profile = registry.by_name(name).unwrap();
        let payloads: Vec<Vec<u8>> = simulated(name, n).into_iter().map(|m| m.payload).collect();
        report(&format!("validate {name} (JSON)"), n, || {
            for payload in &payloads {
                black_box(decode_and_validate(profile, payload.clone()).1.is_ok());
            }
        });
    }
    let drone = registry.by_name("drone").unwrap();
    let schema = apache_avro::Schema::parse(&avro_schema(drone)).unwrap();
    let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 256).unwrap();
    let payloads: Vec<Vec<u8>> =
        simulated("drone", n).iter().map(|m| to_single_object(&mut writer, &m.payload)).collect();
    assert!(decode_and_validate(drone, payloads[0].clone()).1.is_ok());
    report("validate drone (Avro single-object)", n, || {
        for payload in &payloads {
            black_box(decode_and_validate(drone, payload.clone()).1.is_ok());
        }
    });
}
