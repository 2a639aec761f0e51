//! Readings of every profile, in the reference designs' own JSON, through the real binary:
//! a steady series and a spike per profile, anomalies with reasons, metrics that add up.

mod common;

use common::{Server, client, get_json, historical_config, metric, post, wait_for};
use serde_json::{Value, json};

/// A steady series of 20 readings then one spike, for each profile, in its reference JSON.
/// Readings before the spike: a full z-score window (120), also of changes between readings,
/// so the spike is judged.
const HISTORY: i32 = 121;

fn series(profile: &str, entity: &str) -> Vec<Value> {
    (0..=HISTORY)
        .map(|i| {
            let jitter = f64::from(i % 3) * 0.1;
            let spike = i == HISTORY;
            let iso = format!("2024-09-04T10:{:02}:{:02}Z", i / 12, (i % 12) * 5);
            match profile {
                "vehicle" => json!({"vehicle_id": entity, "timestamp": iso, "latitude": 37.7749 + f64::from(i) * 1e-4,
                    "longitude": -122.4194, "speed": if spike { 180.0 } else { 50.0 + jitter }, "engine_status": "on"}),
                "drone" => json!({"timestamp": 1_725_446_400_000_i64 + i64::from(i) * 1000, "drone_id": entity,
                    "latitude": 37.7749, "longitude": -122.4194, "altitude": 120.5 + jitter, "velocity": 12.3,
                    "acceleration_x": 0.1, "acceleration_y": -0.2, "acceleration_z": 0.0,
                    "battery_level": if spike { 5.0 } else { 87.5 - jitter }, "signal_strength": -67.0}),
                "aircraft" => {
                    json!({"timestamp": iso, "flight_id": entity, "lat": 40.0, "lon": -100.0 + f64::from(i) * 0.01,
                    "altitude": if spike { 20000.0 } else { 35000.0 + jitter * 10.0 }, "speed": 450.0, "heading": 90.0,
                    "status": "cruise"})
                }
                "environment" => json!({"sensor_id": entity, "metric_type": "temperature",
                    "value": if spike { 60.0 } else { 22.0 + jitter }, "timestamp": iso}),
                "vibration" => json!({"sensor_id": entity, "machine_id": "press-1", "timestamp": iso,
                    "rms_velocity_x": if spike { 25.0 } else { 2.5 + jitter }, "rms_velocity_y": 2.4 + jitter,
                    "rms_velocity_z": 2.6 - jitter}),
                other => panic!("no series for {other}"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_profile_is_accepted_and_its_spike_is_reported_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--config", &historical_config(dir.path(), "")]);
    let client = client();
    // The signal each profile's z-score flags the spike on; vehicle speed is left to the rules,
    // and one fast reading breaks none of them.
    let cases = [
        ("vehicle", "V001", None),
        ("drone", "dev", Some("battery_level_diff")),
        ("aircraft", "FL1", Some("altitude_diff")),
        ("environment", "env-1", Some("temperature")),
        ("vibration", "vib-1", Some("rms_velocity_x")),
    ];
    for (profile, entity, _) in cases {
        // Three shapes of body: an array, NDJSON, and single objects.
        let readings = series(profile, entity);
        let (array, rest) = readings.split_at(10);
        let (status, answer) = post(&client, &server, profile, serde_json::to_vec(array).unwrap()).await;
        assert_eq!((status, answer["accepted"].as_u64()), (202, Some(10)), "{profile}: {answer}");
        let (rest, spike) = rest.split_at(rest.len() - 1);
        let ndjson: String = rest.iter().map(|r| format!("{r}\n")).collect();
        let (status, answer) = post(&client, &server, profile, ndjson).await;
        assert_eq!((status, answer["accepted"].as_u64()), (202, Some(rest.len() as u64)), "{profile}: {answer}");
        let (status, answer) = post(&client, &server, profile, serde_json::to_vec(&spike[0]).unwrap()).await;
        assert_eq!((status, &answer["rejected"]), (202, &json!(0)), "{profile}: {answer}");
    }

    for (profile, entity, metric_name) in cases {
        let Some(metric_name) = metric_name else { continue };
        let url = server.url(&format!("/api/anomalies?limit=10&entity={entity}&profile={profile}"));
        let anomalies = wait_for("the spike's anomaly", || async {
            let anomalies = get_json(&client, &url).await;
            anomalies.as_array().is_some_and(|a| !a.is_empty()).then_some(anomalies)
        })
        .await;
        let top = &anomalies[0];
        assert_eq!(top["detector"], "zscore", "{profile}: {top}");
        assert_eq!(top["metric"], metric_name, "{profile}: {top}");
        assert!(top["anomaly_score"].as_f64().unwrap() > 5.0, "{profile}: {top}");
        assert_eq!(top["threshold"], 5.0);
        assert_eq!(top["model_is_anomaly"], 1);
        let reason = top["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(metric_name) && reason.contains("σ") && reason.contains("last 120 readings"),
            "{reason}"
        );
        // Only the spike is anomalous; an aircraft's 15,000 ft drop in 5 s is also a climb no
        // airframe flies, which the spoofing rule raises at the same reading.
        let found: Vec<&str> = anomalies.as_array().unwrap().iter().map(|a| a["detector"].as_str().unwrap()).collect();
        let expected: &[&str] = if profile == "aircraft" { &["zscore", "spoofing"] } else { &["zscore"] };
        assert_eq!(found, expected, "only the spike is anomalous in {profile}: {anomalies}");
        assert!(anomalies.as_array().unwrap().iter().all(|a| a["timestamp"] == top["timestamp"]), "{anomalies}");
    }

    // The vehicle reading is enriched with its driver and zone from the bundled reference data.
    let readings = get_json(&client, &server.url("/api/readings?entity=V001&limit=1")).await;
    assert_eq!(readings[0]["driver_name"], "Maria Lopez");
    assert_eq!(readings[0]["anomalous"], false);
    assert_eq!(readings[0]["metrics"]["speed"], 180.0);

    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (profile, _, _) in cases {
        let received = format!("teleguard_messages_received_total{{profile=\"{profile}\",source=\"http\"}}");
        assert_eq!(metric(&metrics, &received), 122.0, "{received}");
    }
    assert_eq!(metric(&metrics, "anomaly_detector_messages_consumed_total"), 610.0);
    let detected: f64 = cases
        .iter()
        .map(|(p, _, _)| {
            metric(
                &metrics,
                &format!("anomaly_detector_anomalies_detected_total{{profile=\"{p}\",detector=\"zscore\"}}"),
            )
        })
        .sum();
    assert_eq!(detected, 4.0);
    assert_eq!(metric(&metrics, "pipeline_end_to_end_latency_seconds_count"), 610.0);

    let stats = get_json(&client, &server.url("/api/stats")).await;
    assert_eq!(stats["totals"]["valid"], 610);
    assert_eq!(stats["totals"]["anomalies"], 5, "the four spikes, and the aircraft's as a spoofed altitude");
    assert_eq!(stats["profiles"][0]["entities"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_health_and_profiles_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--config", &historical_config(dir.path(), "")]);
    let client = client();
    let page = client.get(server.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("teleguard") && page.contains("api/anomalies"));
    assert_eq!(get_json(&client, &server.url("/healthz")).await["status"], "ok");
    let profiles = get_json(&client, &server.url("/api/profiles")).await;
    let names: Vec<&str> = profiles.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vehicle", "drone", "aircraft", "environment", "vibration"]);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
}
