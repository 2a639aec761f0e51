//! Schemas as a user meets them: `teleguard schema export` prints what `schemas/` ships, and
//! Avro messages written with that schema (or a configured writer schema) are ingested like
//! their JSON, while broken ones get a clear error and a dead letter.

mod common;

use common::{HISTORICAL, Server, client, drone_avro_schema, get_json, post, reference_sample_avro, wait_for};
use std::path::PathBuf;
use std::process::Command;

fn teleguard(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard")).args(args).output().expect("teleguard runs");
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

fn shipped(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn schema_export_prints_the_shipped_schemas() {
    let (ok, avro, _) = teleguard(&["schema", "export", "drone", "--format", "avro"]);
    assert!(ok);
    assert_eq!(avro, shipped("drone_telemetry.avsc"));
    let (ok, json_schema, _) = teleguard(&["schema", "export", "environment", "--format", "json-schema"]);
    assert!(ok);
    assert_eq!(json_schema, shipped("environment_telemetry.schema.json"));
    let (ok, both, _) = teleguard(&["schema", "export", "vehicle"]);
    assert!(ok);
    assert_eq!(both, shipped("vehicle_telemetry.avsc") + &shipped("vehicle_telemetry.schema.json"));

    let (ok, _, error) = teleguard(&["schema", "export", "submarine"]);
    assert!(!ok && error.contains("unknown profile \"submarine\"; known profiles: vehicle, drone"), "{error}");
}

async fn post_avro(
    client: &reqwest::Client,
    server: &Server,
    profile: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let response = client
        .post(server.url(&format!("/api/ingest/{profile}")))
        .header("content-type", "avro/binary")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_messages_are_read_like_json_and_broken_ones_are_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let schema = drone_avro_schema();
    // A second profile reads bare datums of a writer schema named in the config.
    let schema_path = dir.path().join("drone_telemetry.avsc");
    std::fs::write(&schema_path, shipped("drone_telemetry.avsc")).unwrap();
    let config = dir.path().join("teleguard.toml");
    let drone_profile = r#"
        entity_field = "drone_id"
        timestamp_format = "epoch_millis"
        latitude_field = "latitude"
        longitude_field = "longitude"
        metrics = [
          { field = "altitude" }, { field = "velocity" }, { field = "acceleration_x" }, { field = "acceleration_y" },
          { field = "acceleration_z" }, { field = "battery_level" }, { field = "signal_strength" },
        ]"#;
    std::fs::write(
        &config,
        format!(
            "{HISTORICAL}[profiles.legacy_drone]{drone_profile}\navro_schema_file = {:?}\navro_bare_datums = true\n",
            schema_path.display().to_string()
        ),
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let client = client();

    // Single-object encoding, by content type and (without it) by its marker.
    let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 256).unwrap();
    let mut single = Vec::new();
    writer.write_value(reference_sample_avro(&schema, "avro-1", 1_725_446_400_000), &mut single).unwrap();
    let (status, answer) = post_avro(&client, &server, "drone", single.clone()).await;
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)), "{answer}");
    let mut unlabelled = Vec::new();
    writer.write_value(reference_sample_avro(&schema, "avro-2", 1_725_446_401_000), &mut unlabelled).unwrap();
    let (status, answer) = post(&client, &server, "drone", unlabelled).await;
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)), "{answer}");

    // A bare datum, for the profile whose config names its writer schema.
    let datum =
        apache_avro::to_avro_datum(&schema, reference_sample_avro(&schema, "avro-3", 1_725_446_402_000)).unwrap();
    let (status, answer) = post_avro(&client, &server, "legacy_drone", datum.clone()).await;
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)), "{answer}");

    // Broken: a bare datum where a header is expected, a truncated message, another schema.
    let cases: [(Vec<u8>, &str); 3] = [
        (datum, "invalid JSON"),
        (single[..single.len() - 4].to_vec(), "invalid Avro message"),
        (
            {
                let mut other = single.clone();
                other[3] ^= 0x55;
                other
            },
            "Avro single-object message written with schema fingerprint",
        ),
    ];
    for (body, expected) in &cases {
        let (status, answer) = post_avro(&client, &server, "drone", body.clone()).await;
        assert_eq!(status, 422, "{answer}");
        let error = answer["errors"][0]["error"].as_str().unwrap();
        assert!(error.starts_with(expected), "expected {expected:?}, got {error:?}");
        if *expected == "invalid JSON" {
            assert!(error.contains("binary messages are read as Avro in the single-object encoding"), "{error}");
        }
    }

    let readings = wait_for("the three Avro readings", || async {
        let readings = get_json(&client, &server.url("/api/readings?limit=10")).await;
        (readings.as_array().unwrap().len() == 3).then_some(readings)
    })
    .await;
    let mut ids: Vec<&str> = readings.as_array().unwrap().iter().map(|r| r["entity"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["avro-1", "avro-2", "avro-3"], "{readings:#}");
    let reading = readings.as_array().unwrap().iter().find(|r| r["entity"] == "avro-1").unwrap();
    assert_eq!(reading["metrics"]["battery_level"], 87.5, "{reading:#}");

    let letters = get_json(&client, &server.url("/api/dead-letters?profile=drone&limit=10")).await;
    assert_eq!(letters.as_array().unwrap().len(), cases.len(), "{letters:#}");
}
