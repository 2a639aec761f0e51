//! Live detectors through the real binary: a teleport opens an alert, repeats update it, an
//! operator acknowledges and resolves it; an isolation-forest model trained live is stored
//! and scores the same after a restart.

mod common;

use common::{HISTORICAL, Server, client, get_json, historical_config, post, wait_for};
use serde_json::{Value, json};

fn vehicle(t: u32, lat: f64) -> Value {
    json!({"vehicle_id": "V009", "timestamp": format!("2024-09-04T12:{:02}:{:02}Z", t / 60, t % 60),
           "latitude": lat, "longitude": -122.45, "speed": 40.0, "engine_status": "on"})
}

#[tokio::test(flavor = "multi_thread")]
async fn teleports_open_one_alert_that_an_operator_acknowledges_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--config", &historical_config(dir.path(), "")]);
    let client = client();
    // Two spoofed fixes (out and back) within the cooldown: two anomalies, one alert.
    let track = [vehicle(0, 37.76), vehicle(5, 37.7601), vehicle(10, 38.5), vehicle(15, 37.7603)];
    let (status, _) = post(&client, &server, "vehicle", serde_json::to_vec(&track).unwrap()).await;
    assert_eq!(status, 202);
    let url = server.url("/api/alerts?state=open");
    let alerts = wait_for("the teleport alert", || async {
        let alerts = get_json(&client, &url).await;
        let teleport = alerts.as_array().unwrap().iter().find(|a| a["detector"] == "teleport" && a["anomalies"] == 2);
        teleport.cloned()
    })
    .await;
    let alert = &alerts;
    assert_eq!(
        (&alert["detector"], &alert["entity"], &alert["state"]),
        (&json!("teleport"), &json!("V009"), &json!("open"))
    );
    assert!(alert["reason"].as_str().unwrap().starts_with("implied speed"), "{alert}");
    let id = alert["id"].as_i64().unwrap();

    let acked: Value =
        client.post(server.url(&format!("/api/alerts/{id}/ack"))).send().await.unwrap().json().await.unwrap();
    assert_eq!((&acked["state"], &acked["status"]), (&json!("acknowledged"), &json!("active_ack")));
    assert!(acked["acknowledged_at"].is_string());
    let resolved: Value =
        client.post(server.url(&format!("/api/alerts/{id}/resolve"))).send().await.unwrap().json().await.unwrap();
    assert_eq!((&resolved["state"], &resolved["status"]), (&json!("resolved"), &json!("cleared_ack")));
    assert_eq!(resolved["acknowledged_at"], acked["acknowledged_at"], "clearing keeps the acknowledgement");
    let again: Value =
        client.post(server.url(&format!("/api/alerts/{id}/ack"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["acknowledged_at"], acked["acknowledged_at"], "acknowledging twice changes nothing");
    assert_eq!(again["status"], "cleared_ack");
    assert_eq!(client.post(server.url("/api/alerts/999999/resolve")).send().await.unwrap().status(), 404);
    assert_eq!(client.get(server.url("/api/alerts?state=closed")).send().await.unwrap().status(), 400);
    let listed = get_json(&client, &server.url("/api/alerts?state=resolved")).await;
    assert_eq!(listed[0]["id"], id);
    assert_eq!(get_json(&client, &server.url("/api/alerts?state=cleared_ack")).await[0]["id"], id);
    let active = get_json(&client, &server.url("/api/alerts?state=active")).await;
    assert!(!active.as_array().unwrap().iter().any(|a| a["id"] == id), "{active:#}");

    // A new teleport after resolution opens a new alert.
    let later = [vehicle(600, 37.7605), vehicle(605, 36.9)];
    post(&client, &server, "vehicle", serde_json::to_vec(&later).unwrap()).await;
    wait_for("a fresh teleport alert", || async {
        let open = get_json(&client, &url).await;
        (open.as_array().unwrap().iter().filter(|a| a["detector"] == "teleport").count() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_clears_itself_once_its_vehicle_reports_past_the_cooldown_and_stays_to_acknowledge() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start(dir.path(), &["--config", &historical_config(dir.path(), "[alerts]\ncooldown_secs = 60\n")]);
    let client = client();
    let track = [vehicle(0, 37.76), vehicle(5, 37.7601), vehicle(10, 38.5), vehicle(15, 37.7603)];
    assert_eq!(post(&client, &server, "vehicle", serde_json::to_vec(&track).unwrap()).await.0, 202);
    let active = server.url("/api/alerts?state=active_unack");
    let id = wait_for("the teleport alert", || async {
        let alerts = get_json(&client, &active).await;
        alerts.as_array().unwrap().iter().find(|a| a["detector"] == "teleport").map(|a| a["id"].clone())
    })
    .await;
    // Within the cooldown the vehicle's ordinary readings leave the alert active.
    assert_eq!(post(&client, &server, "vehicle", serde_json::to_vec(&[vehicle(60, 37.7604)]).unwrap()).await.0, 202);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let still = get_json(&client, &active).await;
    assert!(still.as_array().unwrap().iter().any(|a| a["id"] == id), "cleared within the cooldown: {still:#}");
    // Past it, the episode is over: cleared by the pipeline, still there to acknowledge.
    assert_eq!(post(&client, &server, "vehicle", serde_json::to_vec(&[vehicle(90, 37.7605)]).unwrap()).await.0, 202);
    let cleared = server.url("/api/alerts?state=cleared_unack");
    let alert = wait_for("the alert cleared", || async {
        let alerts = get_json(&client, &cleared).await;
        alerts.as_array().unwrap().iter().find(|a| a["id"] == id).cloned()
    })
    .await;
    assert!(alert["resolved_at"].is_string() && alert["acknowledged_at"].is_null(), "{alert:#}");
    let acked: Value =
        client.post(server.url(&format!("/api/alerts/{id}/ack"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(acked["status"], "cleared_ack");
}

/// The built-in drone profile with reference 001's training: the first 200 readings, the
/// threshold where 5 % of them score above it.
const REFERENCE_001_DRONES: &str = r#"
[profiles.drone]
entity_field = "drone_id"
timestamp_field = "timestamp"
timestamp_format = "epoch_millis"
latitude_field = "latitude"
longitude_field = "longitude"
metrics = [
  { field = "altitude" }, { field = "velocity" }, { field = "acceleration_x" }, { field = "acceleration_y" },
  { field = "acceleration_z" }, { field = "battery_level" }, { field = "signal_strength" },
]
detectors.zscore = { enabled = false }
detectors.isolation_forest = { features = ["altitude", "velocity", "acceleration_x", "acceleration_y", "acceleration_z", "battery_level", "signal_strength"], training_size = 200, holdout = 0, contamination = 0.05 }
"#;

fn drone(i: usize, battery: f64) -> Value {
    let wobble = (i % 7) as f64 * 0.3;
    json!({"timestamp": 1_725_446_400_000_u64 + i as u64 * 1000, "drone_id": format!("d-{}", i % 4),
           "latitude": 37.77, "longitude": -122.42, "altitude": 120.0 + wobble, "velocity": 12.0 + wobble / 3.0,
           "acceleration_x": 0.1 * wobble, "acceleration_y": -0.1 * wobble, "acceleration_z": 0.05,
           "battery_level": battery, "signal_strength": -67.0 - wobble})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolation_forest_trained_live_is_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Reference 001's forest: trained on the first 200 readings, 5 % of them above the threshold.
    let config = dir.path().join("reference-001.toml");
    std::fs::write(&config, format!("{HISTORICAL}{REFERENCE_001_DRONES}")).unwrap();
    let config = config.to_str().unwrap().to_string();
    let server = Server::start(dir.path(), &["--config", &config]);
    let client = client();
    let training: Vec<Value> = (0..200).map(|i| drone(i, 90.0 - (i % 5) as f64)).collect();
    assert_eq!(post(&client, &server, "drone", serde_json::to_vec(&training).unwrap()).await.0, 202);
    let outlier = [drone(1000, 4.0)];
    assert_eq!(post(&client, &server, "drone", serde_json::to_vec(&outlier).unwrap()).await.0, 202);
    let url = server.url("/api/anomalies?detector=isolation_forest");
    let first = wait_for("the forest's anomaly", || async {
        let found = get_json(&client, &url).await;
        (!found.as_array().unwrap().is_empty()).then_some(found)
    })
    .await;
    assert!(first[0]["reason"].as_str().unwrap().contains("battery_level 4"), "{}", first[0]["reason"]);
    assert!(first[0]["reason"].as_str().unwrap().contains("trained on 200 readings"));
    let score = first[0]["anomaly_score"].as_f64().unwrap();
    assert!(server.terminate().success());

    // After a restart no new training is needed: the same outlier, seconds later, scores the same.
    let server = Server::start(dir.path(), &["--config", &config]);
    assert_eq!(post(&client, &server, "drone", serde_json::to_vec(&[drone(1007, 4.0)]).unwrap()).await.0, 202);
    let url = server.url("/api/anomalies?detector=isolation_forest&order=recent");
    let second = wait_for("the reloaded forest's anomaly", || async {
        let found = get_json(&client, &url).await;
        (found.as_array().unwrap().len() == 2).then_some(found)
    })
    .await;
    assert_eq!(second[0]["anomaly_score"].as_f64().unwrap(), score);
}

/// Drone readings spread evenly over a small box (a low-discrepancy sequence per metric).
fn spread_drone(i: usize) -> Value {
    let u = |k: f64| ((i + 1) as f64 * k).fract();
    json!({"timestamp": 1_725_446_400_000_u64 + i as u64 * 1000, "drone_id": format!("d-{}", i % 4),
           "latitude": 37.77, "longitude": -122.42, "altitude": 120.0 + 3.0 * u(0.618_034), "velocity": 12.0 + u(0.414_214),
           "acceleration_x": 0.3 * u(0.732_051), "acceleration_y": -0.3 * u(0.236_068), "acceleration_z": 0.05,
           "battery_level": 86.0 + 4.0 * u(0.645_751), "signal_strength": -67.0 - 2.0 * u(0.162_278)})
}

/// A drone reading out of that box in every metric but one.
fn far_drone(i: usize) -> Value {
    json!({"timestamp": 1_725_446_400_000_u64 + i as u64 * 1000, "drone_id": "d-0", "latitude": 37.77,
           "longitude": -122.42, "altitude": 400.0, "velocity": 40.0, "acceleration_x": 3.0, "acceleration_y": -3.0,
           "acceleration_z": 0.05, "battery_level": 4.0, "signal_strength": -110.0})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forest_trained_ahead_judges_the_first_live_reading_and_stays_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("reference-001.toml");
    std::fs::write(&config, format!("{HISTORICAL}{REFERENCE_001_DRONES}")).unwrap();
    let config = config.to_str().unwrap().to_string();
    let normal = dir.path().join("normal.ndjson");
    let lines: Vec<String> = (0..300).map(|i| spread_drone(i).to_string()).collect();
    std::fs::write(&normal, lines.join("\n")).unwrap();
    let models = dir.path().join("models");
    let trained = std::process::Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["train", normal.to_str().unwrap(), "--profile", "drone", "--config", &config])
        .args(["--models", models.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));

    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", &config, "--models", models.to_str().unwrap()]);
    let client = client();
    // The very first reading the pipeline sees is judged: no 200 readings to wait for.
    assert_eq!(post(&client, &server, "drone", serde_json::to_vec(&[far_drone(1000)]).unwrap()).await.0, 202);
    let url = server.url("/api/anomalies?detector=isolation_forest");
    let found = wait_for("the trained forest's anomaly", || async {
        let found = get_json(&client, &url).await;
        (!found.as_array().unwrap().is_empty()).then_some(found)
    })
    .await;
    assert!(found[0]["reason"].as_str().unwrap().contains("trained on 200 readings"), "{}", found[0]["reason"]);
    assert!(server.terminate().success());

    // The store kept it: a replay can take its models from the data folder.
    let outlier = dir.path().join("outlier.ndjson");
    std::fs::write(&outlier, far_drone(2000).to_string()).unwrap();
    let replayed = std::process::Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", outlier.to_str().unwrap(), "--profile", "drone", "--config", &config])
        .args(["--models", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    let stdout = String::from_utf8(replayed.stdout).unwrap();
    let line: Value = serde_json::from_str(stdout.lines().next().expect("an anomaly line")).unwrap();
    assert_eq!((&line["detector"], &line["record"]), (&json!("isolation_forest"), &json!(1)));

    // Under other settings the start is refused, naming the setting.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!("{HISTORICAL}{}", REFERENCE_001_DRONES.replace("contamination = 0.05", "contamination = 0.1")),
    )
    .unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["run", "--simulate", "none", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("other-data"))
        .args(["--config", other.to_str().unwrap(), "--models", models.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("contamination: trained with 0.05, configured 0.1"), "{stderr}");
}
