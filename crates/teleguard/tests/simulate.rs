//! `teleguard simulate` as a user runs it: same seed, same bytes; labels that fit what was
//! generated; readings posted to a running teleguard all arrive; bad flags say what to write.

mod common;

use common::{Server, client, get_json, wait_for};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_teleguard")).arg("simulate").args(args).output().expect("run teleguard simulate")
}

fn simulate_to_files(dir: &Path, name: &str, seed: &str) -> (Vec<u8>, Value) {
    let out = dir.join(format!("{name}.ndjson"));
    let labels = dir.join(format!("{name}-labels.json"));
    let output = simulate(&[
        "--seed",
        seed,
        "--start",
        "2024-09-04T20:00:00Z",
        "--duration",
        "3h",
        "--anomaly-rate",
        "3",
        "--to",
        &format!("file:{}", out.display()),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("readings in"), "a summary on stderr");
    (std::fs::read(out).unwrap(), serde_json::from_slice(&std::fs::read(labels).unwrap()).unwrap())
}

fn millis(text: &Value) -> i64 {
    let scalar = teleguard_core::json::Scalar::Str(text.as_str().unwrap().into());
    teleguard_core::time::parse_timestamp(&scalar, teleguard_core::time::TimeFormat::Iso8601).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_labels_fit_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (first, labels) = simulate_to_files(dir.path(), "a", "7");
    let (again, labels_again) = simulate_to_files(dir.path(), "b", "7");
    let (other, _) = simulate_to_files(dir.path(), "c", "8");
    assert!(first.len() > 10_000_000, "{} bytes", first.len());
    assert!(first == again, "same seed, same bytes");
    assert_eq!(labels, labels_again);
    assert!(first != other, "another seed, other data");

    let (start, end) = (millis(&labels["start"]), millis(&labels["end"]));
    assert_eq!(end - start, 3 * 3_600_000);
    let entities: Vec<(String, String)> = labels["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["profile"].as_str().unwrap().to_string(), e["entity"].as_str().unwrap().to_string()))
        .collect();
    assert!(entities.len() >= 40, "{entities:?}");
    let all = labels["labels"].as_array().unwrap();
    assert!(all.len() > 100, "{} labels", all.len());
    for label in all {
        let (from, to) = (millis(&label["start"]), millis(&label["end"]));
        assert!(start <= from && from <= to && to < end, "{label}");
        let entity = (label["profile"].as_str().unwrap().to_string(), label["entity"].as_str().unwrap().to_string());
        assert!(entities.contains(&entity), "{label} names an entity that was simulated");
        assert!(!label["detectors"].as_array().unwrap().is_empty(), "{label}");
    }
    // Night-time start: restricted-zone visits out of hours happen too.
    for kind in ["teleport", "restricted_zone", "long_stop", "spike", "battery_collapse", "vibration_burst"] {
        assert!(all.iter().any(|l| l["type"] == kind), "no {kind}");
    }
    // Every line is one reference-design message.
    let text = String::from_utf8(first).unwrap();
    let first_line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(first_line.is_object());
}

#[test]
fn a_file_per_profile_with_a_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("{profile}.ndjson");
    let output = simulate(&[
        "--profile",
        "drone",
        "--profile",
        "vibration",
        "--entities",
        "3",
        "--duration",
        "10m",
        "--to",
        &format!("file:{}", pattern.display()),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for profile in ["drone", "vibration"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{profile}.ndjson"))).unwrap();
        assert_eq!(text.lines().count(), 3 * 600, "{profile}: 3 entities, a reading a second");
    }
    assert!(!dir.path().join("vehicle.ndjson").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_posted_to_a_running_teleguard_all_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let target = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        simulate(&["--profile", "vehicle", "--profile", "environment", "--duration", "20m", "--to", &target])
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // 15 vehicles every 5 s, 10 stations × 3 metrics every 5 s, for 20 minutes.
    let expected = (15 + 30) * 240;
    let client = client();
    let stats = wait_for("every posted reading analysed", || {
        let client = client.clone();
        let url = server.url("/api/stats");
        async move {
            let stats = get_json(&client, &url).await;
            (stats["totals"]["analysed"] == expected).then_some(stats)
        }
    })
    .await;
    assert_eq!(stats["totals"]["valid"], expected);
    assert_eq!(stats["totals"]["rejected"], 0);
    assert!(server.terminate().success());
}

#[test]
fn bad_flags_say_what_to_write() {
    let cases: [(&[&str], &str); 7] = [
        (&["--duration", "soon"], "e.g. 90s, 30m, 24h or 7d"),
        (&["--speed", "fast"], "use `max` or a positive multiple"),
        (&["--profile", "boat"], "cannot simulate profile \"boat\"; known: vehicle, drone"),
        (&["--to", "ftp://example"], "use stdout, file:PATH, http://HOST:PORT, mqtt://HOST:PORT/TOPIC or kafka://"),
        (&["--to", "kafka://127.0.0.1:9/bad topic"], "\"bad topic\" is not a Kafka topic name"),
        (&["--start", "yesterday"], "--start"),
        (&["--anomaly-rate=-1"], "must lie in [0, 3600]"),
    ];
    for (args, expected) in cases {
        let output = simulate(args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// The end-to-end check: one simulated vehicle night and day, replayed through the
/// detectors and scored: every injected rule anomaly is found, and no rule fires on clean data.
#[test]
fn simulate_replay_eval_finds_every_rule_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let readings = dir.path().join("vehicles.ndjson");
    let labels = dir.path().join("labels.json");
    let anomalies = dir.path().join("anomalies.ndjson");
    let output = simulate(&[
        "--profile",
        "vehicle",
        "--seed",
        "3",
        "--start",
        "2024-09-04T18:00:00Z",
        "--duration",
        "16h",
        "--anomaly-rate",
        "1",
        "--to",
        &format!("file:{}", readings.display()),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let replay = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", readings.to_str().unwrap(), "--profile", "vehicle", "--out", anomalies.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let eval = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["eval", "--labels", labels.to_str().unwrap(), "--anomalies", anomalies.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let report: Value = serde_json::from_slice(&eval.stdout).unwrap();
    for kind in ["teleport", "gps_spoof", "restricted_zone", "long_stop"] {
        let row = report["by_type"].as_array().unwrap().iter().find(|r| r["type"] == kind);
        let row = row.unwrap_or_else(|| panic!("no {kind} injected: {report:#}"));
        assert!(row["labels"].as_u64().unwrap() >= 3, "{row}");
        assert_eq!(row["recall"], 1.0, "{row}");
        assert_eq!(row["precision"], 1.0, "a rule fired outside any injected anomaly: {row}");
    }
}
